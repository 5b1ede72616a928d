"""The warm path of ``clipsearch search``: hand the query to a running ``clipsearch serve``
of the same library, whose model and index are already in memory.

The server announces itself in the library's discovery file (`clipsearch.server.discovery`).
A search goes there only when the server would answer exactly as this process would: the
same model option (or none) and precision, and a query that names no files (a server never
reads paths). Anything else, or a server that does not answer (gone, not yet listening,
an error), and the search runs in this process as usual: the warm path is only ever faster,
never different.

Used by the console script's fast path (`clipsearch.cli.entry`, before Typer, numpy or
the library are imported) and by the Typer command (`clipsearch.cli.app.search`). Plain
``http.client`` and ``json``: no HTTP client library to import.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clipsearch.search.hits import SearchResults

TIMEOUT_S = 300.0  # a server still loading its model answers the first query when loaded


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
    import http.client
    import json

    from clipsearch.server import discovery

    server = discovery.read(library)
    if server is None or model not in (None, server.model) or precision != server.precision:
        return None
    if _names_files(query):
        return None
    connection = http.client.HTTPConnection(server.host, server.port, timeout=TIMEOUT_S)
    try:
        connection.request(
            "POST",
            "/api/local/search",
            body=json.dumps({"q": query, **options}).encode(),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {server.token}",
            },
        )
        response = connection.getresponse()
        raw = response.read()
        if response.status != 200:
            return None  # an error: searching here reports it as this process would
        body = json.loads(raw)
        from clipsearch.search.hits import Hit, SearchResults

        min_score = body.get("min_score")
        return SearchResults(
            [Hit.from_dict(h) for h in body["hits"]],
            min_score=None if min_score is None else float(min_score),
        )
    except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException):
        # refused, reset, timed out, a bad body: searching here gives the answer, or the
        # error, the user should see
        return None
    finally:
        connection.close()


def _names_files(query: str) -> bool:
    from clipsearch.errors import ClipsearchError
    from clipsearch.search.query import parse_query

    try:
        parse_query(query, files=False)
    except ClipsearchError:
        return True  # a file part (or a malformed query: this process reports it)
    return False
