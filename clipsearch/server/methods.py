"""HTTP methods every resource answers the same way (RFC 9110 §9): HEAD, OPTIONS, and
the ``Allow`` header of a 405.

- ``HEAD`` on anything that answers ``GET`` (media, thumbnails, the API) is routed as
  ``GET`` and answered with the same status and headers, without the body: download
  managers and players probe a file's size and ``Accept-Ranges`` this way.
- ``OPTIONS`` on a known path answers 204 with ``Allow`` listing every method the path
  takes (not only the first route's); an unknown path stays 404. No CORS headers: this is
  not a preflight answer, and other origins still cannot read responses.
- A 405 carries that same ``Allow`` list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_PROBED = ("GET", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(routes: Sequence[BaseRoute], scope: Scope) -> list[str]:
    """Every method some route takes at ``scope``'s path, HEAD with GET and OPTIONS
    added; empty when no route has the path.

    Each method is probed through the routes' own matching (which also sees into
    included routers), rather than by reading their ``methods``."""
    methods: set[str] = set()
    for method in _PROBED:
        probe = {**scope, "method": method}
        for route in routes:
            match, _ = route.matches(probe)
            if isinstance(route, Mount):  # static files: a mount takes any method
                if match != Match.NONE:
                    methods.update(("GET", "HEAD"))
            elif match == Match.FULL:
                methods.add(method)
    if not methods:
        return []
    if "GET" in methods:
        methods.add("HEAD")
    methods.add("OPTIONS")
    return [m for m in _ORDER if m in methods]


class HttpMethods:
    """ASGI middleware applying the module docstring; ``routes`` gives the app's routes."""

    def __init__(self, app: ASGIApp, *, routes: Callable[[], Sequence[BaseRoute]]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"].upper()
        if method == "OPTIONS":
            allow = allowed_methods(self.routes(), scope)
            if allow:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 204,
                        "headers": [(b"allow", ", ".join(allow).encode())],
                    }
                )
                await send({"type": "http.response.body", "body": b""})
                return
        head = method == "HEAD"
        if head:
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, self._wrap(send, scope, head=head))

    def _wrap(self, send: Send, scope: Scope, *, head: bool) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                allow = ", ".join(allowed_methods(self.routes(), scope)).encode()
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message = {**message, "headers": [*headers, (b"allow", allow)]}
            elif head and message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # drop the body; Content-Length stays what GET would send
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        return wrapped
