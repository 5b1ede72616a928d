"""The command line's shared options and its one error boundary (``clipsearch.cli.app.main``):
usage errors are one line and exit code 2, ``--precision`` reaches the model after every
command that loads one, ``-k/--top`` is the result count, fixed value sets are choices."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import clipsearch
from clipsearch.errors import LibraryError

ROOT = Path(__file__).resolve().parents[2]
ALL_COMMANDS = (
    "index, search, status, models, index-info, reindex, export, import, train, serve, classify"
)


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["frobnicate"], ["No such command 'frobnicate'.", f"Commands: {ALL_COMMANDS}"]),
        (["search", "dog", "-k", "abc"], ["'-k' / '--top'", "valid integer"]),
        (["search", "dog", "--frobnicate"], ["No such option: --frobnicate"]),
        (["serve", "--port", "70000"], ["'--port'", "65535"]),
        (["index"], ["Missing argument 'folders'"]),
        ([], ["Missing command.", f"Commands: {ALL_COMMANDS}"]),
        (["eval"], ["Missing command.", "Commands: retrieval, classify, moments, synth."]),
        (["search", "dog", "--kind", "audio"], ["'--kind'", "'image', 'video'"]),
        (["search", "dog", "--rerank", "bm25"], ["'--rerank'", "'dbnorm-dynamic'"]),
        (
            ["search", "dog", "--pooling", "median"],
            ["'--pooling'", "'peak', 'mean', 'max', 'softmax'"],
        ),
        (["search", "dog", "--moments", "0"], ["'--moments'", "greater than or equal to 1"]),
        (["search", "dog", "--compose", "avg"], ["'--compose'", "'slerp', 'sum'"]),
        (["classify", "--precision", "fp64"], ["'--precision'", "'auto', 'fp32', 'bf16'"]),
        (["train", "--out", "x", "--loss", "mse"], ["'--loss'", "'clip', 'siglip'"]),
        (["dedup", "-k", "3"], ["No such option: -k"]),
    ],
)
def test_usage_errors_are_one_line_and_exit_code_2(run_cli, argv, says):
    r = run_cli(*argv)
    assert r.exit_code == 2
    assert r.stdout == ""
    line = _one_error_line(r.stderr)
    for text in says:
        assert text in line
    assert line.endswith("--help')")  # where to read more


def test_usage_error_from_the_installed_entry_point(tmp_path):
    """The real `python -m clipsearch` process: no traceback, exit code 2."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-m", "clipsearch", "search", "dog", "-k", "abc"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Invalid value for '-k' / '--top'" in _one_error_line(proc.stderr)


def test_version(run_cli):
    r = run_cli("--version")
    assert r.exit_code == 0
    assert r.stdout == f"clipsearch {clipsearch.__version__}\n"


def test_error_messages_are_printed_as_they_are(run_cli, tmp_path):
    """Square brackets in a message (a TOML table, a path) are text, not Rich markup."""
    policy = tmp_path / "p.toml"
    policy.write_text('templates = "default"\n')
    r = run_cli("moderate", "--policy", str(policy))
    assert r.exit_code == 2
    assert "[labels]" in _one_error_line(r.stderr)


# -- --precision after every command that loads a model ----------------------------------------
class _Stop(LibraryError):
    """Raised by the patched loaders once they have seen the options."""


@pytest.fixture
def seen(monkeypatch):
    """Replace the two ways a command gets a model (a library, or an encoder for files)
    with recorders that stop the command there."""
    from clipsearch.cli import options

    calls: list[dict] = []

    def open_library(library=None, model=None, precision=None, **kw):
        calls.append(
            {"model": options.model_spec(model), "precision": options.precision_of(precision)}
        )
        raise _Stop("stopped at open_library")

    def load_encoder(model, precision, *, library=None):
        calls.append(
            {"model": options.model_spec(model), "precision": options.precision_of(precision)}
        )
        raise _Stop("stopped at load_encoder")

    monkeypatch.setattr(options, "open_library", open_library)
    monkeypatch.setattr(options, "load_encoder", load_encoder)
    return calls


def _model_commands(tmp_path: Path) -> dict[str, list[str]]:
    """Every command that loads a model, with the arguments it needs to get that far."""
    from tests.fakes import make_image

    image = make_image(tmp_path / "red.png", "red")
    (tmp_path / "classes" / "red").mkdir(parents=True)
    make_image(tmp_path / "classes" / "red" / "a.png", "red")
    policy = tmp_path / "policy.toml"
    policy.write_text('[labels]\n"red" = 0.5\n')
    captions = tmp_path / "pairs.csv"
    captions.write_text(f"image,caption\n{image.name},a red square\n")
    return {
        "index": ["index", str(tmp_path)],
        "search": ["search", "red"],
        "serve": ["serve"],
        "classify items": ["classify", "--labels", "red,blue"],
        "classify files": ["classify", str(image), "--labels", "red,blue"],
        "tag": ["tag", "--labels", "red"],
        "moderate": ["moderate", "--policy", str(policy)],
        "eval retrieval": ["eval", "retrieval", "--captions", str(captions), "--no-cache"],
        "eval classify": ["eval", "classify", "--folder", str(tmp_path / "classes"), "--no-cache"],
    }


COMMANDS = (
    "index",
    "search",
    "serve",
    "classify items",
    "classify files",
    "tag",
    "moderate",
    "eval retrieval",
    "eval classify",
)


@pytest.mark.parametrize("command", COMMANDS)
def test_precision_and_model_work_after_every_command_that_loads_a_model(
    run_cli, seen, tmp_path, command
):
    argv = _model_commands(tmp_path)[command]
    r = run_cli(*argv, "--precision", "bf16", "--model", "ViT-B-16:openai")
    assert r.exit_code == _Stop.exit_code and "stopped at" in _one_error_line(r.stderr)
    assert seen == [{"model": "ViT-B-16:openai", "precision": "bf16"}]


@pytest.mark.parametrize("command", COMMANDS)
def test_root_options_apply_and_the_commands_own_win(run_cli, seen, tmp_path, command):
    argv = _model_commands(tmp_path)[command]
    run_cli("--precision", "fp16", "--model", "RN50:openai", *argv)
    run_cli("--precision", "fp16", *argv, "--precision", "fp32")
    run_cli(*argv)  # the root options of an earlier run do not leak into this one
    # eval's own default is fp32 (reference numbers); every other command's is auto.
    default = "fp32" if command.startswith("eval") else "auto"
    assert seen == [
        {"model": "RN50:openai", "precision": "fp16"},
        {"model": None, "precision": "fp32"},
        {"model": None, "precision": default},
    ]


# -- -k/--top and the choices ------------------------------------------------------------------
def _params(*path: str) -> dict[str, list[str]]:
    """The option names of a live command, by parameter name."""
    import typer

    from clipsearch.cli.app import app

    command = typer.main.get_command(app)
    ctx = command.context_class(command, info_name="clipsearch")
    for name in path:
        command = command.get_command(ctx, name)
        ctx = command.context_class(command, info_name=name, parent=ctx)
    return {p.name: [*p.opts, *p.secondary_opts] for p in command.params}


def test_k_and_top_are_the_result_count_everywhere():
    assert _params("search")["k"] == ["-k", "--top"]
    assert _params("classify")["top_k"] == ["-k", "--top", "--top-k"]  # --top-k kept
    assert _params("dedup")["k"] == ["--neighbours"]
    for path, params in (
        (p, _params(*p.split())) for p in ("index", "status", "tag", "moderate", "dedup", "train")
    ):
        assert not any("-k" in names for names in params.values()), path


def test_shared_options_have_one_spelling():
    """--library, --model, --precision and --json are the same flags wherever they exist."""
    spellings = {
        "library": ["--library", "-L"],
        "model": ["--model", "-m"],
        "precision": ["--precision"],
        "json_out": ["--json"],
        "where": ["--where"],
    }
    commands = [
        "index", "search", "status", "index-info", "reindex", "serve", "classify", "tag",
        "moderate", "dedup", "eval retrieval", "eval classify", "train",
    ]  # fmt: skip
    found = 0
    for command in commands:
        params = _params(*command.split())
        for name, names in spellings.items():
            if name in params:
                assert params[name] == names, (command, name)
                found += 1
    assert found >= 35


@pytest.mark.parametrize(
    ("argv", "choices"),
    [
        (
            ["search"],
            [
                "auto|fp32|bf16|fp16",
                "peak|mean|max|softmax",
                "none|is|qbnorm|dbnorm|dbnorm-dynamic|itm",
                "fusion|itm",
                "slerp|sum",
                "image|video",
            ],
        ),
        (["classify"], ["auto|fp32|bf16|fp16"]),
        (["train"], ["full|lit|proj|lora", "clip|siglip", "fp32|bf16"]),
        (
            ["eval", "retrieval"],
            [
                "auto|karpathy|pairs|msrvtt|wds",
                "[peak|mean|max|softmax],...",
                "[none|is|qbnorm|dbnorm|dbnorm-dynamic|itm|itm-prob],...",
            ],
        ),
        (
            ["eval", "moments"],
            ["auto|charades|qvhighlights|pictures", "[peak|mean|max|softmax],..."],
        ),
        (["eval", "synth"], ["full|background", "scene|all"]),
    ],
)
def test_help_lists_the_choices(run_cli, monkeypatch, argv, choices):
    monkeypatch.setenv("COLUMNS", "250")
    r = run_cli(*argv, "--help")
    assert r.exit_code == 0
    for choice in choices:
        assert choice in r.stdout, choice
