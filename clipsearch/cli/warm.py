"""The warm path of ``clipsearch search``: hand the query to a running ``clipsearch serve``
of the same library, whose model and index are already in memory.

The server announces itself in the library's discovery file (`clipsearch.server.discovery`).
A search goes there only when the server would answer exactly as this process would: the
same model option (or none) and precision; a query naming files is refused by the server
(it never reads paths) and searched here. Anything else, or a server that does not answer
(gone, not yet listening, an error), and the search runs in this process as usual: the
warm path is only ever faster, never different.

Used by the console script's fast path (`clipsearch.cli.entry`, before Typer, numpy or
the library are imported; it also asks the server to render the output, see
`clipsearch.cli.terminal`) and by the Typer command (`clipsearch.cli.app.search`).

The request is one HTTP/1.1 POST over a plain socket to a loopback server the library
names: ``http.client`` imports the e-mail parser and ``ssl`` (~40 ms, as much as the
rest of the command's start-up), for a request whose answer is one JSON body.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clipsearch.search.hits import SearchResults

TIMEOUT_S = 300.0  # a server still loading its model answers the first query when loaded
ROUTE = "/api/local/search"


def search(
    library: Path,
    query: str,
    options: dict[str, Any],
    *,
    model: str | None,
    precision: str,
) -> SearchResults | None:
    """The hits of the server of ``library`` for ``query`` with the `LocalSearchRequest`
    ``options``, or None when this process should search itself."""
    body = ask(library, {"q": query, **options}, model=model, precision=precision)
    if body is None:
        return None
    return results(body)


def results(body: dict[str, Any]) -> SearchResults | None:
    """The `SearchResults` of a server's hits answer, or None when it is not one."""
    from clipsearch.search.hits import Hit, SearchResults

    try:
        min_score = body.get("min_score")
        return SearchResults(
            [Hit.from_dict(h) for h in body["hits"]],
            min_score=None if min_score is None else float(min_score),
        )
    except (ValueError, KeyError, TypeError):
        return None


def ask(
    library: Path, request: dict[str, Any], *, model: str | None, precision: str
) -> dict[str, Any] | None:
    """The JSON answer of the server of ``library`` to the `LocalSearchRequest`
    ``request``, or None (no server for this model and precision, an error, no answer)."""
    import json

    from clipsearch.server import discovery

    server = discovery.read(library)
    if server is None or model not in (None, server.model) or precision != server.precision:
        return None
    try:
        status, raw = post(
            server.host, server.port, ROUTE, json.dumps(request).encode(), token=server.token
        )
        if status != 200:
            return None  # an error: searching here reports it as this process would
        body = json.loads(raw)
    except (OSError, ValueError):
        # refused, reset, timed out, a bad answer: searching here gives the answer, or the
        # error, the user should see
        return None
    return body if isinstance(body, dict) else None


def post(
    host: str, port: int, path: str, body: bytes, *, token: str, timeout: float = TIMEOUT_S
) -> tuple[int, bytes]:
    """POST a JSON ``body`` with a bearer ``token``; (status, response body). Raises
    OSError (connection, timeout) or ValueError (a response that is not HTTP/1.x)."""
    import socket

    if not token.isascii() or not token.isprintable() or " " in token:
        raise ValueError("the token cannot be sent in a header")
    name = f"[{host}]" if ":" in host else host
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {name}:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii")
    # an ASCII address as bytes: a str is encoded with the IDNA codec (another import)
    address = host.encode("ascii") if host.isascii() else host
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.sendall(head + body)
        chunks = []
        while data := sock.recv(1 << 16):
            chunks.append(data)
    return parse_response(b"".join(chunks))


def parse_response(raw: bytes) -> tuple[int, bytes]:
    """(status, body) of a complete HTTP/1.x response read until the server closed the
    connection. Raises ValueError for anything else (cut short, malformed)."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("no end of headers")
    lines = head.split(b"\r\n")
    version, _, status_text = lines[0].partition(b" ")
    if not version.startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP/1.x response: {lines[0][:40]!r}")
    status = int(status_text[:3])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise ValueError(f"bad header line {line[:40]!r}")
        headers[name.strip().lower()] = value.strip()
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        return status, _unchunk(rest)
    if b"content-length" in headers:
        length = int(headers[b"content-length"])
        if len(rest) < length:
            raise ValueError(f"body cut short: {len(rest)} of {length} bytes")
        return status, rest[:length]
    return status, rest  # delimited by the end of the connection


def _unchunk(data: bytes) -> bytes:
    """The body of a chunked transfer coding (RFC 9112 §7.1), trailers ignored."""
    out = []
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            raise ValueError("chunk size line cut short")
        size = int(data[pos:end].split(b";", 1)[0], 16)
        if size == 0:
            return b"".join(out)
        start = end + 2
        if len(data) < start + size + 2 or data[start + size : start + size + 2] != b"\r\n":
            raise ValueError("chunk cut short")
        out.append(data[start : start + size])
        pos = start + size + 2
