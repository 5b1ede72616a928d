"""The request guard (docs/server.md#safety): one pure-ASGI middleware in front of every route.

In order, for each HTTP request:

1. Host check: a server bound to loopback answers only ``Host: localhost / 127.0.0.1 /
   [::1]``, which defeats DNS rebinding (a web page whose domain re-resolves to
   127.0.0.1 would otherwise read your library through your own browser).
2. Token: when a token is set, every request must carry it, as ``Authorization: Bearer
   T``, as ``?token=T`` (GET/HEAD only, for links), or as the ``clipsearch_token`` cookie
   that a successful ``?token=`` request sets (HttpOnly, SameSite=Strict), so ``<img>``
   and ``<video>`` tags of the page work without the token in every URL. Compared in
   constant time (``hmac.compare_digest``). The Cookie header is parsed leniently, as
   browsers do, so another app's malformed cookie on the same host cannot hide ours.
3. Cross-site writes: a POST/PUT/PATCH/DELETE whose ``Origin`` is not this server is
   refused (403), so another web site cannot start indexing through your browser; so is
   a cross-site OPTIONS (a CORS preflight).
4. Body cap: request bodies larger than ``max_body_bytes`` are refused with 413, from
   ``Content-Length`` before anything is read, or while reading a chunked body; a body
   within the cap is buffered and replayed to the route.
5. Security headers on every response: a strict Content-Security-Policy (``default-src
   'self'``: the page loads nothing from elsewhere), nosniff, no framing, no referrer.
   No CORS headers are ever sent, so other origins cannot read responses.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable
from urllib.parse import parse_qs, urlsplit

from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipsearch.server.errors import error_response

TOKEN_COOKIE = "clipsearch_token"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
    "script-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``host`` spells, IPv4-mapped IPv6 (``::ffff:127.0.0.1``) unwrapped to
    IPv4; None for a name."""
    try:
        ip = ipaddress.ip_address(host.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def canonical_host(host: str) -> str:
    """One spelling per host: lower case, no brackets, addresses in their compressed form
    (``0:0:0:0:0:0:0:1`` and ``[::1]`` -> ``::1``; ``::ffff:127.0.0.1`` -> ``127.0.0.1``)."""
    ip = _ip(host)
    return str(ip) if ip is not None else host.strip().strip("[]").lower()


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach: ``localhost`` and
    every spelling of a loopback address (127.0.0.0/8, ``::1``, IPv4-mapped loopback).
    ``0.0.0.0`` and ``::`` (every interface) are not loopback."""
    ip = _ip(host)
    if ip is not None:
        return ip.is_loopback
    return host.strip().strip("[]").lower() == "localhost"


def _hostname(host_header: str) -> str:
    """``example.org:8000`` -> ``example.org``; ``[::1]:8000`` -> ``::1``."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class HttpGuard:
    """ASGI middleware applying the checks in the module docstring.

    token: required secret, or None for no authentication.
    allowed_hosts: accepted ``Host`` names (no port); None accepts any (use with a token
        when the server is exposed on a network).
    max_body_bytes: largest request body accepted.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        allowed_hosts: Iterable[str] | None,
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.allowed_hosts = (
            None if allowed_hosts is None else frozenset(canonical_host(h) for h in allowed_hosts)
        )
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._with_headers(send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"].upper()

        host = headers.get("host", "")
        if (
            self.allowed_hosts is not None
            and canonical_host(_hostname(host)) not in self.allowed_hosts
        ):
            await error_response(
                403,
                "forbidden_host",
                f"this server only answers requests addressed to {', '.join(sorted(self.allowed_hosts))}",
            )(scope, receive, send)
            return

        set_cookie = False
        if self.token is not None:
            presented, from_query = self._presented_token(scope, headers, method)
            if presented is None or not hmac.compare_digest(presented.encode(), self.token):
                await error_response(
                    401,
                    "unauthorized",
                    "this server needs a token: open the URL that `clipsearch serve` printed "
                    "(it ends in ?token=...), or send 'Authorization: Bearer <token>'",
                    headers={"WWW-Authenticate": "Bearer"},
                )(scope, receive, send)
                return
            set_cookie = from_query

        if method in UNSAFE_METHODS or method == "OPTIONS":  # OPTIONS: CORS preflights
            origin = headers.get("origin")
            if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
                await error_response(403, "cross_origin", "cross-site requests are not accepted")(
                    scope, receive, send
                )
                return
        if method in UNSAFE_METHODS:
            receive = await self._buffered_body(scope, receive, send, headers)
            if receive is None:
                return

        if set_cookie:
            send = self._with_cookie(send)
        await self.app(scope, receive, send)

    # -- token --------------------------------------------------------------------------------
    def _presented_token(
        self, scope: Scope, headers: dict[str, str], method: str
    ) -> tuple[str | None, bool]:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip(), False
        if method in ("GET", "HEAD"):
            values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
            if values:
                return values[-1], True
        cookie = headers.get("cookie")
        if cookie:
            # Browsers' lenient parsing: a malformed cookie of another localhost app (JSON,
            # spaces, a stray quote) is skipped, where http.cookies would stop at it.
            value = cookie_parser(cookie).get(TOKEN_COOKIE)
            if value is not None:
                return value, False
        return None, False

    def _with_cookie(self, send: Send) -> Send:
        assert self.token is not None
        value = (f"{TOKEN_COOKIE}={self.token.decode()}; Path=/; HttpOnly; SameSite=Strict").encode(
            "latin-1"
        )

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"set-cookie", value)],
                }
            await send(message)

        return wrapped

    # -- body cap -----------------------------------------------------------------------------
    async def _buffered_body(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]
    ) -> Receive | None:
        """Read the whole body (≤ cap) and return a receive() that replays it; None when a
        413 was sent or the client went away."""
        too_large = error_response(
            413,
            "payload_too_large",
            f"the request body is larger than the limit of {self.max_body_bytes / 2**20:.1f} MiB",
        )
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await too_large(scope, receive, send)
            return None
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_body_bytes:
                await too_large(scope, receive, send)
                return None
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replay: list[Message] = [
            {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        ]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        return replayed

    # -- headers ------------------------------------------------------------------------------
    @staticmethod
    def _with_headers(send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return wrapped
