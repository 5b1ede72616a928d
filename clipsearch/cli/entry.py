"""The ``clipsearch`` console script.

A plain text search — ``clipsearch [--library L] [--model M] [--precision P] search QUERY``
with any of ``-k/--top``, ``--offset``, ``--kind``, ``--min-score``, ``--sort``,
``--collapse/--no-collapse``, ``--exact``, ``--json``, ``--no-server`` — is answered here
without Typer: by a running ``clipsearch serve`` of the library when one can answer
(`clipsearch.cli.warm`; it also renders the output for this terminal,
`clipsearch.cli.terminal`: then neither numpy, Rich nor the library is imported), else by
the library in this process, exactly as the ``search`` command would. A plain
``clipsearch [root options] index FOLDER... [--quiet] [--json]`` runs the ``index``
command's own code (`clipsearch.cli.index_run`) the same way. Typer's option handling
costs more start-up than a search on a small library, or an index run over unchanged files.

Every other command line, and any doubt (another option, a bad value, an error to
report), goes to the Typer app (`clipsearch.cli.app.main`), the CLI's one error boundary,
which then parses, checks and reports as usual.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clipsearch.search.hits import SearchResults


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = text_search(args)
        if code is None:
            code = plain_index(args)
    except KeyboardInterrupt:
        from clipsearch.cli import render

        render.err.print("[yellow]Interrupted.[/]")
        return 130
    if code is not None:
        return code
    from clipsearch.cli.app import main as app_main

    return app_main(args)


# options with a value, before the command (root options) and after ``search``
_ROOT_VALUES = {
    "--library": "library",
    "-L": "library",
    "--model": "model",
    "-m": "model",
    "--precision": "precision",
}
_SEARCH_VALUES = {
    **_ROOT_VALUES,
    "-k": "k",
    "--top": "k",
    "--offset": "offset",
    "--kind": "kind",
    "--min-score": "min_score",
    "--sort": "sort",
}
_INDEX_FLAGS = {"--quiet": "quiet", "-q": "quiet", "--json": "json"}
_SEARCH_FLAGS = {
    "--json": ("json", True),
    "--collapse": ("collapse", True),
    "--no-collapse": ("collapse", False),
    "--exact": ("exact", True),
    "--no-server": ("no_server", True),
}


def text_search(argv: Sequence[str]) -> int | None:
    """Answer a plain text search command line and return its exit code; None when the
    command line is anything else, or when the Typer app should handle it (a value it
    would reject, an error to report)."""
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

    library = Path(parsed["library"]) if "library" in parsed else default_library_path()
    options: dict[str, Any] = {
        "k": k,
        "offset": offset,
        "kind": kind,
        "exact": parsed.get("exact", False),
        "min_score": parsed.get("min_score", "auto"),
        "sort": sort,
        "collapse": parsed.get("collapse", False),
    }
    query, model = parsed["query"], parsed.get("model")
    as_json, dates, duplicates = bool(parsed.get("json")), sort != "relevance", options["collapse"]
    if not parsed.get("no_server") and _printed_by_server(
        library, query, options, model, precision, json=as_json, dates=dates, duplicates=duplicates
    ):
        return 0
    hits = _search_here(library, query, options, model=model, precision=precision)
    if hits is None:
        return None
    _print(hits, json=as_json, dates=dates, duplicates=duplicates)
    return 0


def _printed_by_server(
    library: Path,
    query: str,
    options: dict[str, Any],
    model: str | None,
    precision: str,
    *,
    json: bool,
    dates: bool,
    duplicates: bool,
) -> bool:
    """Ask a running server of the library for the output (`clipsearch.cli.terminal`: it
    renders for this terminal, so Rich is not imported here) and print it; False when
    this process should search itself."""
    from clipsearch.cli import terminal, warm

    described = terminal.describe(json=json, dates=dates, duplicates=duplicates)
    request = {"q": query, **options, **({"render": described} if described else {})}
    answer = warm.ask(library, request, model=model, precision=precision)
    if answer is None:
        return False
    stdout, stderr = answer.get("stdout"), answer.get("stderr")
    if isinstance(stdout, str) and isinstance(stderr, str):
        sys.stdout.write(stdout)
        sys.stdout.flush()
        sys.stderr.write(stderr)
        sys.stderr.flush()
        return True
    hits = warm.results(answer)  # a server made without the CLI's renderer sends hits
    if hits is None:
        return False
    _print(hits, json=json, dates=dates, duplicates=duplicates)
    return True


def _print(hits: SearchResults, *, json: bool, dates: bool, duplicates: bool) -> None:
    from clipsearch.cli import render

    if json:
        render.print_json([h.to_dict() for h in hits])
    else:
        render.search_results(hits, dates=dates, duplicates=duplicates)


def plain_index(argv: Sequence[str]) -> int | None:
    """Run a plain ``index FOLDER... [--quiet] [--json]`` command line (with root options)
    as the ``index`` command does, and return its exit code; None for any other command
    line (the Typer app's). Errors are reported as the app reports them."""
    parsed = _parse_index(list(argv))
    if parsed is None:
        return None
    from clipsearch.models.precision import PRECISIONS

    precision = parsed.get("precision", "auto")
    if precision not in PRECISIONS:
        return None  # the app reports the bad value
    from clipsearch.cli import index_run, render
    from clipsearch.errors import ClipsearchError
    from clipsearch.ingest import IndexOptions

    render.quiet_large_image_warning()
    try:
        return index_run.run_index(
            [Path(f) for f in parsed["folders"]],
            library=Path(parsed["library"]) if "library" in parsed else None,
            model=parsed.get("model"),
            precision=precision,
            options=IndexOptions(),
            quiet=parsed.get("quiet", False),
            json_out=parsed.get("json", False),
            ray=None,
            captions=False,
            library_options={"caption_model": None, "runtime": None, "quantize": None},
        )
    except ClipsearchError as e:  # what the app's error boundary prints
        render.error_line(str(e))
        return e.exit_code


def _parse_index(argv: list[str]) -> dict[str, Any] | None:
    """The root options, folders and flags of a plain ``index`` command line, or None."""
    out: dict[str, Any] = {}
    i = _root_options(argv, "index", out)
    if i is None:
        return None
    folders = []
    for arg in argv[i + 1 :]:
        if arg in _INDEX_FLAGS:
            out[_INDEX_FLAGS[arg]] = True
        elif arg.startswith("-") or not arg:
            return None  # another option, --help, "--", "-": the app's
        else:
            folders.append(arg)
    if not folders:
        return None  # the app says a folder is missing
    out["folders"] = folders
    return out


def _root_options(argv: list[str], command: str, out: dict[str, Any]) -> int | None:
    """Read the root options (--library, --model, --precision) before ``command`` into
    ``out``; the index of ``command`` in ``argv``, or None when anything else comes first
    or the command is missing."""
    i = 0
    while i < len(argv) and argv[i] != command:
        name = _ROOT_VALUES.get(argv[i])
        if name is None or i + 1 >= len(argv):
            return None
        out[name] = argv[i + 1]
        i += 2
    return i if i < len(argv) else None


def _search_here(library: Path, query: str, options: dict[str, Any], *, model, precision):
    """The ``search`` command's own in-process search, or None when it raises (the app
    runs it again and reports the error as it reports every error)."""
    from clipsearch.errors import ClipsearchError
    from clipsearch.library import Library

    try:
        with Library(library, model=model, precision=precision, create=False) as lib:
            # what `search` passes when only these options are given
            return lib.search(query, image=[], video=[], where=[], **options)
    except ClipsearchError:
        return None


def _parse(argv: list[str]) -> dict[str, Any] | None:
    """The options of a plain text search, or None for any other command line."""
    out: dict[str, Any] = {}
    i = _root_options(argv, "search", out)
    if i is None:
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
