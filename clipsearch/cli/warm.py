"""The warm path of ``clipsearch search``: hand the query to a running ``clipsearch serve``
of the same library, whose model and index are already in memory.

The server announces itself in the library's discovery file (`clipsearch.server.discovery`).
A search goes there only when the server would answer exactly as this process would: the
same model option (or none) and precision, and a query that names no files (a server never
reads paths). Anything else, or a server that does not answer (gone, not yet listening,
an error), and the search runs in this process as usual: the warm path is only ever faster,
never different. Plain ``urllib``: no HTTP client library to import.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from clipsearch.search.hits import Hit, SearchResults
from clipsearch.server import discovery

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
    server = discovery.read(library)
    if server is None or model not in (None, server.model) or precision != server.precision:
        return None
    if _names_files(query):
        return None
    host = f"[{server.host}]" if ":" in server.host else server.host
    request = urllib.request.Request(
        f"http://{host}:{server.port}/api/local/search",
        data=json.dumps({"q": query, **options}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {server.token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            body = json.loads(response.read())
        min_score = body.get("min_score")
        return SearchResults(
            [Hit.from_dict(h) for h in body["hits"]],
            min_score=None if min_score is None else float(min_score),
        )
    except (OSError, ValueError, KeyError, TypeError):
        # refused, reset, timed out, an HTTP error (urllib's are OSErrors), a bad body:
        # searching here gives the answer, or the error, the user should see
        return None


def _names_files(query: str) -> bool:
    from clipsearch.errors import ClipsearchError
    from clipsearch.search.query import parse_query

    try:
        parse_query(query, files=False)
    except ClipsearchError:
        return True  # a file part (or a malformed query: this process reports it)
    return False
