"""The console script's plain-text-search path (cli/entry.py) answers without Typer, so it
keeps its own small option table. These checks keep it the same command as Typer's
``search``: every option it reads exists there with the same flags, it assumes the same
defaults, and every option it does not read, left at Typer's default, means what the
library's own default means (the fast path leaves those to ``Library.search``)."""

from __future__ import annotations

import inspect

import click
import pytest
import typer.main

from clipsearch.cli import entry
from clipsearch.cli.app import app
from clipsearch.library import Library


def search_command() -> click.Command:
    group = typer.main.get_command(app)
    return group.commands["search"]


def params_by_flag() -> dict[str, click.Parameter]:
    out = {}
    for p in search_command().params:
        for flag in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]:
            out[flag] = p
    return out


# Typer's parameter name for each name the fast path uses.
TYPER_NAME = {"no_server": "no_server", "json": "json_out"}


def test_every_option_the_fast_path_reads_is_a_search_option_with_that_meaning():
    flags = params_by_flag()
    for flag, name in entry._SEARCH_VALUES.items():
        assert flag in flags, flag
        assert flags[flag].name == TYPER_NAME.get(name, name), flag
        assert not getattr(flags[flag], "is_flag", False), flag
    for flag, (name, value) in entry._SEARCH_FLAGS.items():
        assert flag in flags, flag
        param = flags[flag]
        assert param.name == TYPER_NAME.get(name, name), flag
        on = flag in param.opts
        assert value is on, flag  # --collapse sets it, --no-collapse clears it


def test_the_fast_path_assumes_typers_defaults():
    defaults = {p.name: p.default for p in search_command().params}
    # What _parse/text_search fall back to when an option is absent.
    assert defaults["k"] == 20 and defaults["offset"] == 0
    assert defaults["sort"] == "relevance" and defaults["min_score"] == "auto"
    assert defaults["kind"] is None and defaults["collapse"] is False
    assert defaults["exact"] is False and defaults["no_server"] is False
    source = inspect.getsource(entry.text_search)
    for text in (
        '"k", "20"',
        '"offset", "0"',
        '"sort", "relevance"',
        '"min_score", "auto"',
        '"collapse", False',
        '"exact", False',
        '"precision", "auto"',
    ):
        assert text in source, text


def test_options_the_fast_path_leaves_out_default_to_what_the_library_does():
    typer_defaults = {p.name: p.default for p in search_command().params}
    library = inspect.signature(Library.search).parameters
    # Typer's search passes these to Library.search as given (gap_correction: a flag that
    # becomes "shift" or None); the fast path does not pass them, so the library's default
    # must be Typer's.
    for name in ("pooling", "tau", "moments", "rerank", "text_match", "phrases"):
        assert library[name].default == typer_defaults[name], name
    assert typer_defaults["gap_correction"] is False and library["gap_correction"].default is None
    for name in ("taken_after", "taken_before"):
        assert typer_defaults[name] is None and library[name].default is None, name
    assert typer_defaults["where"] in ([], ()) and typer_defaults["tag"] in ([], ())


# -- index -------------------------------------------------------------------------------------


def _index_calls(monkeypatch, argv: list[str]) -> tuple[dict, dict]:
    """What Typer's ``index`` and the console script's fast path hand to
    `index_run.run_index` for the same command line."""
    import clipsearch.cli.app as app_module
    from clipsearch.cli import index_run

    calls = []

    def record(folders, **kwargs):
        calls.append({"folders": [str(f) for f in folders], **kwargs})
        return 0

    monkeypatch.setattr(app_module, "run_index", record)
    monkeypatch.setattr(index_run, "run_index", record)
    assert app_module.main(argv) == 0
    assert entry.plain_index(argv) == 0
    typer_call, fast_call = calls
    return typer_call, fast_call


@pytest.mark.parametrize(
    "argv",
    [
        ["index", "photos"],
        ["index", "a", "b c", "--quiet"],
        ["--library", "lib", "index", "photos", "-q", "--json"],
        ["--model", "ViT-B-32", "--precision", "fp32", "--library", "L", "index", "x"],
        ["--library", "index", "index", "index"],  # names that look like the command
    ],
)
def test_the_index_fast_path_runs_what_typers_index_runs(monkeypatch, argv):
    """Every option the fast path does not read (include, sampler, workers, runtime...) is
    left at Typer's default: the two calls, IndexOptions included, are equal."""
    from clipsearch.cli import options

    monkeypatch.setattr(options, "root", options.RootOptions(None, None, "auto"))
    typer_call, fast_call = _index_calls(monkeypatch, argv)
    # Typer's index opens the library the way every command does; the fast path with
    # `Library` itself, from the same arguments (compared here)
    assert typer_call.pop("open_library") is options.open_library
    assert fast_call.pop("open_library", None) is None
    assert fast_call == typer_call


@pytest.mark.parametrize(
    "argv",
    [
        ["index"],  # no folder: the app says so
        ["index", "photos", "--workers", "4"],
        ["index", "photos", "--help"],
        ["index", "--", "photos"],
        ["--precision", "fp64", "index", "photos"],  # a bad value: the app reports it
        ["--verbose", "index", "photos"],
        ["status"],
        ["search", "red"],
    ],
)
def test_other_command_lines_are_left_to_the_app(argv):
    assert entry.plain_index(argv) is None
