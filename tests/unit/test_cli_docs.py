"""docs/cli.md is generated from the Typer app (scripts/gen_cli_docs.py) and must not drift.

If a test here fails after you changed a command or an option, regenerate the file:

    python scripts/gen_cli_docs.py
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Annotated

import pytest
import typer

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_cli_docs.py"
REGENERATE = "run `python scripts/gen_cli_docs.py`"

# What a user needs documented (commands added later are checked by
# test_every_live_command_and_option_is_documented).
REQUIRED_COMMANDS = (
    "index",
    "search",
    "status",
    "models",
    "serve",
    "train",
    "classify",
    "tag",
    "moderate",
    "dedup",
    "eval retrieval",
    "eval classify",
)


@pytest.fixture(scope="module")
def gen():
    """scripts/gen_cli_docs.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_cli_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_cli_docs", module)
    spec.loader.exec_module(module)
    return module


def _sections(markdown: str) -> dict[str, str]:
    """'clipsearch eval retrieval' -> the text of its section in docs/cli.md."""
    parts = re.split(r"^## `([^`]+)`\n", markdown, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


# -- the real docs/cli.md ---------------------------------------------------------------------


def test_cli_reference_is_current(gen):
    problem = gen.check_cli_docs(gen.DOCS_PATH)
    assert problem is None, f"docs/cli.md does not match the CLI; {REGENERATE}.\n{problem}"


@pytest.mark.parametrize("command", REQUIRED_COMMANDS)
def test_command_a_user_needs_is_documented(command):
    docs = ROOT / "docs" / "cli.md"
    assert docs.exists(), f"docs/cli.md is missing; {REGENERATE}"
    section = _sections(docs.read_text(encoding="utf-8")).get(f"clipsearch {command}")
    assert section is not None, (
        f"`clipsearch {command}` is not in docs/cli.md. If the command exists, {REGENERATE}; "
        "if it does not, it was not mounted on the app (clipsearch/cli/app.py skips a "
        "sub-command module that fails to import)."
    )
    assert f"clipsearch {command} [OPTIONS]" in section  # its usage line
    assert "| name | type | default | description |" in section or "COMMAND" in section


def test_every_live_command_and_option_is_documented(gen):
    """The generator leaves nothing out: each command of the live app has a section that
    names every one of its options and arguments."""
    sections = _sections(gen.render_cli_docs())
    docs = list(gen.iter_commands())
    assert len(docs) > len(REQUIRED_COMMANDS)
    for doc in docs:
        section = sections.get(doc.full_name)
        assert section is not None, f"no section for {doc.full_name}"
        for param in doc.command.params:
            if getattr(param, "hidden", False):
                continue
            if param.param_type_name == "argument":
                assert f"`{param.name.upper()}" in section, (doc.full_name, param.name)
                continue
            for opt in (*param.opts, *param.secondary_opts):
                assert f"`{opt}`" in section, f"{doc.full_name}: {opt} not documented"


def test_output_does_not_depend_on_the_terminal(gen, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("FORCE_COLOR", "1")
    narrow = gen.render_cli_docs()
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("FORCE_COLOR")
    monkeypatch.setenv("NO_COLOR", "1")
    wide = gen.render_cli_docs()
    assert narrow == wide
    assert "\x1b[" not in narrow  # no ANSI escapes
    assert "╭" not in narrow  # not Rich's boxed --help


# -- the generator on a small app -------------------------------------------------------------


def _toy_app() -> typer.Typer:
    app = typer.Typer(help="Toy tool.", add_completion=False)
    sub = typer.Typer(help="Sub-commands.\n\nSecond paragraph.")
    toy_home = Path.home() / "toy"

    @app.command()
    def find(
        query: Annotated[str, typer.Argument(help="What to find.")],
        mode: Annotated[str, typer.Option("--mode", help="fast | exact.")] = "fast",
        k: Annotated[int, typer.Option("-k", "--top", help="How many.", min=1, max=99)] = 5,
        tags: Annotated[list[str], typer.Option("--tag", help="Repeatable tag.")] = [],  # noqa: B006
        loud: Annotated[bool, typer.Option("--loud", help="Shout.")] = False,
        token: Annotated[
            str | None, typer.Option("--token", envvar="TOY_TOKEN", help="Secret.")
        ] = None,
        home: Annotated[Path, typer.Option("--home", help="A folder.")] = toy_home,
    ) -> None:
        """Find things.

        Longer explanation
        over two lines.
        """

    @sub.command()
    def leaf(
        out: Annotated[Path, typer.Option("--out", help="Where to write.")],
        open_: Annotated[bool, typer.Option("--open/--no-open", help="Open it.")] = True,
    ) -> None:
        """A leaf command."""

    @app.command(hidden=True)
    def secret() -> None:
        """Not for users."""

    app.add_typer(sub, name="group")
    return app


def _row(section: str, name: str) -> list[str]:
    for line in section.splitlines():
        if line.startswith(f"| `{name}`"):
            return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
    raise AssertionError(f"no row for {name} in:\n{section}")


def test_renders_usage_help_and_option_table(gen):
    text = gen.render_cli_docs(typer.main.get_command(_toy_app()))
    sections = _sections(text)
    assert set(sections) == {
        "clipsearch",
        "clipsearch find",
        "clipsearch group",
        "clipsearch group leaf",
    }
    find = sections["clipsearch find"]
    assert "```\nclipsearch find [OPTIONS] QUERY\n```" in find
    assert "Find things.\n\nLonger explanation over two lines.\n" in find
    assert _row(find, "QUERY") == ["`QUERY`", "str", "*required*", "What to find."]
    assert _row(find, "--mode") == ["`--mode`", "str", "`fast`", r"fast \| exact."]
    assert _row(find, "--top") == ["`--top`, `-k`", "int (1 to 99)", "`5`", "How many."]
    assert _row(find, "--tag")[1] == "str, repeatable"
    assert _row(find, "--loud")[1:3] == ["flag", "off"]
    assert _row(find, "--token")[3] == "Secret. Env: `TOY_TOKEN`."
    assert _row(find, "--home")[2] == "`~/toy`"  # no machine-specific home directory
    leaf = sections["clipsearch group leaf"]
    assert _row(leaf, "--out")[2] == "*required*"
    assert _row(leaf, "--open")[0:3] == ["`--open`, `--no-open`", "flag", "`--open`"]
    group = sections["clipsearch group"]
    assert "clipsearch group [OPTIONS] COMMAND [ARGS]..." in group
    assert "Sub-commands.\n\nSecond paragraph.\n" in group
    assert "| [`leaf`](#clipsearch-group-leaf) | A leaf command. |" in group
    assert "secret" not in text  # hidden commands stay out


def test_check_reports_stale_and_missing_files(gen, tmp_path):
    root = typer.main.get_command(_toy_app())
    path = tmp_path / "cli.md"
    assert "does not exist" in gen.check_cli_docs(path, root=root)
    path.write_text(gen.render_cli_docs(root), encoding="utf-8")
    assert gen.check_cli_docs(path, root=root) is None
    path.write_text(path.read_text().replace("How many.", "How many, roughly."), encoding="utf-8")
    problem = gen.check_cli_docs(path, root=root)
    assert problem is not None
    assert "python scripts/gen_cli_docs.py" in problem
    assert "-| `--top`, `-k` | int (1 to 99) | `5` | How many, roughly. |" in problem
    assert "+| `--top`, `-k` | int (1 to 99) | `5` | How many. |" in problem


def test_main_writes_then_check_passes_and_fails_on_edit(gen, tmp_path, capsys):
    out = tmp_path / "docs" / "cli.md"
    assert gen.main(["--out", str(out)]) == 0
    assert gen.main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text() + "hand edit\n", encoding="utf-8")
    assert gen.main(["--check", "--out", str(out)]) == 1
    assert "python scripts/gen_cli_docs.py" in capsys.readouterr().err
