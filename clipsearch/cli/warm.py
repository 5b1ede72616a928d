"""The warm path of ``clipsearch search``: hand the query to a running ``clipsearch serve``
of the same library, whose model and index are already in memory.

The server announces itself in the library's discovery file (`clipsearch.server.discovery`).
A search goes there only when the server would answer exactly as this process would: the
same model option (or none) and precision, and a query that names no files (a server never
reads paths). Anything else, or a server that does not answer (gone, not yet listening,
an error), and the search runs in this process as usual: the warm path is only ever faster,
never different.

Two ways in:

- `answer`, called by the console script before anything else is imported: a plain text
  search with common options (``-k``, ``--offset``, ``--kind``, ``--min-score``,
  ``--sort``, ``--collapse``, ``--exact``, ``--json``, ``--library``, ``--model``,
  ``--precision``) is parsed here and sent at once, so neither Typer, numpy nor the
  library is loaded to answer it. Any other command line, or any doubt, goes to the Typer
  app, which takes the warm path too when it can (`search`);
- `search`: the Typer command's own hand-over, for every option the server takes.

Plain ``http.client`` and ``json``: no HTTP client library to import.
"""

from __future__ import annotations

from collections.abc import Sequence
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


# -- the console script's fast path ------------------------------------------------------------
_ROOT_VALUES = {"--library": "library", "-L": "library", "--model": "model", "-m": "model"}
_SEARCH_VALUES = {
    **_ROOT_VALUES,
    "-k": "k",
    "--top": "k",
    "--offset": "offset",
    "--kind": "kind",
    "--min-score": "min_score",
    "--sort": "sort",
    "--precision": "precision",
}
_SEARCH_FLAGS = {
    "--json": ("json", True),
    "--collapse": ("collapse", True),
    "--no-collapse": ("collapse", False),
    "--exact": ("exact", True),
}


def answer(argv: Sequence[str]) -> int | None:
    """Answer ``clipsearch [ROOT OPTIONS] search QUERY [OPTIONS]`` through a running server
    and return the exit code; None when the command line is anything else (or the server
    cannot answer it), for the Typer app to handle."""
    parsed = _parse(list(argv))
    if parsed is None:
        return None  # decided before importing anything: other commands pay nothing here
    from clipsearch.models.precision import PRECISIONS
    from clipsearch.search.choices import MAX_K, SORT_ORDERS

    precision = parsed.get("precision", "auto")
    k = _int(parsed.get("k", "20"))
    offset = _int(parsed.get("offset", "0"))
    sort = parsed.get("sort", "relevance")
    kind = parsed.get("kind")
    if (
        precision not in PRECISIONS
        or k is None
        or not 1 <= k <= MAX_K
        or offset is None
        or offset < 0
        or sort not in SORT_ORDERS
        or kind not in (None, "image", "video")
    ):
        return None  # the app reports the bad value
    from clipsearch.store.location import default_library_path

    library = parsed.get("library")
    options = {
        "k": k,
        "offset": offset,
        "kind": kind,
        "exact": parsed.get("exact", False),
        "min_score": parsed.get("min_score", "auto"),
        "sort": sort,
        "collapse": parsed.get("collapse", False),
    }
    hits = search(
        Path(library) if library is not None else default_library_path(),
        parsed["query"],
        options,
        model=parsed.get("model"),
        precision=precision,
    )
    if hits is None:
        return None
    from clipsearch.cli import render

    if parsed.get("json"):
        render.print_json([h.to_dict() for h in hits])
    else:
        render.search_results(hits, dates=sort != "relevance", duplicates=options["collapse"])
    return 0


def _parse(argv: list[str]) -> dict[str, Any] | None:
    """The options of a plain text search, or None for any other command line."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(argv) and argv[i] != "search":  # root options: --library, --model, --precision
        name = {**_ROOT_VALUES, "--precision": "precision"}.get(argv[i])
        if name is None or i + 1 >= len(argv):
            return None
        out[name] = argv[i + 1]
        i += 2
    if i >= len(argv):
        return None
    rest = argv[i + 1 :]
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg in _SEARCH_VALUES and i + 1 < len(rest):
            out[_SEARCH_VALUES[arg]] = rest[i + 1]
            i += 2
        elif arg in _SEARCH_FLAGS:
            name, value = _SEARCH_FLAGS[arg]
            out[name] = value
            i += 1
        elif not arg.startswith("-") and "query" not in out:
            out["query"] = arg
            i += 1
        else:
            return None  # another option, a second argument, --help, "--", "-x=y"...
    return out if out.get("query") else None


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
