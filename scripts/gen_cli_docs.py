"""Generate docs/cli.md, the CLI reference, from the Typer app itself.

The reference is rendered from the click objects Typer builds
(``typer.main.get_command(clipsearch.cli.app.app)``): each command's usage line, help
text and a table of its arguments and options (names, type, default, help). It never
goes through Rich's formatted ``--help``, so the output does not depend on the terminal
width, colour support or the user's home directory: the same code gives the same bytes.

    python scripts/gen_cli_docs.py            # (re)write docs/cli.md
    python scripts/gen_cli_docs.py --check    # exit 1, with a diff, if docs/cli.md is stale
    python scripts/gen_cli_docs.py --out -    # print to stdout

Tests call `render_cli_docs()` and `check_cli_docs()` directly.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS_PATH = ROOT / "docs" / "cli.md"
PROG = "clipsearch"
REGENERATE = "python scripts/gen_cli_docs.py"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class CommandDoc:
    """One command of the tree: its full name (``("eval", "retrieval")``) and click objects."""

    path: tuple[str, ...]
    command: Any  # a click/Typer Command or Group
    ctx: Any  # the click Context it was resolved in

    @property
    def full_name(self) -> str:
        return " ".join((PROG, *self.path))

    @property
    def is_group(self) -> bool:
        return hasattr(self.command, "list_commands")


def _root_command() -> Any:
    """The click Group Typer builds from `clipsearch.cli.app.app` (sub-apps mounted)."""
    import typer

    from clipsearch.cli.app import app

    return typer.main.get_command(app)


def iter_commands(root: Any | None = None) -> Iterator[CommandDoc]:
    """Every visible command, depth first, in the order ``--help`` lists them (root first)."""
    root = root if root is not None else _root_command()
    ctx = root.context_class(root, info_name=PROG)
    yield from _walk(root, ctx, ())


def _walk(command: Any, ctx: Any, path: tuple[str, ...]) -> Iterator[CommandDoc]:
    yield CommandDoc(path, command, ctx)
    if not hasattr(command, "list_commands"):
        return
    for name in command.list_commands(ctx):
        sub = command.get_command(ctx, name)
        if sub is None or getattr(sub, "hidden", False):
            continue
        sub_ctx = sub.context_class(sub, info_name=name, parent=ctx)
        yield from _walk(sub, sub_ctx, (*path, name))


# -- text helpers ----------------------------------------------------------------------------


def _help_paragraphs(text: str | None) -> list[str]:
    """A docstring/help string as paragraphs: dedented, cut at click's ``\\f``, lines joined.

    A paragraph starting with click's ``\\b`` marker keeps its line breaks (returned with
    the marker so the caller can fence it).
    """
    if not text:
        return []
    text = inspect.cleandoc(text).split("\f", 1)[0]
    paragraphs = []
    for block in re.split(r"\n\s*\n", text.strip()):
        if block.startswith("\b"):
            paragraphs.append(block)
        else:
            paragraphs.append(" ".join(line.strip() for line in block.splitlines()))
    return paragraphs


def _summary(command: Any) -> str:
    """The first paragraph of a command's help (what the command list shows)."""
    paragraphs = _help_paragraphs(command.help or getattr(command, "short_help", None))
    return paragraphs[0] if paragraphs and not paragraphs[0].startswith("\b") else ""


def _escape(text: str) -> str:
    """Markdown-escape help text for a table cell or paragraph; `code spans` are kept."""
    out = []
    for n, part in enumerate(re.split(r"(`[^`]*`)", text)):
        if n % 2:  # a code span: only the pipe needs escaping inside a table
            out.append(part.replace("|", "\\|"))
        else:
            part = re.sub(r"([\\*|<>])", r"\\\1", part)
            # An underscore inside a word (open_clip, $CLIPSEARCH_HOME) never emphasises.
            out.append(re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", part))
    return "".join(out)


def _code(text: str) -> str:
    """A table-safe code span."""
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def _home_relative(text: str) -> str:
    """Defaults that embed the home directory would make the output machine-dependent."""
    home = str(Path.home())
    return text.replace(home, "~") if home not in ("", "/") else text


# -- parameters ------------------------------------------------------------------------------


def _is_argument(param: Any) -> bool:
    return getattr(param, "param_type_name", "") == "argument"


def _is_flag(param: Any) -> bool:
    return bool(getattr(param, "is_flag", False)) and not getattr(param, "count", False)


def _variadic(param: Any) -> bool:
    return bool(getattr(param, "multiple", False)) or getattr(param, "nargs", 1) == -1


def _metavar(param: Any) -> str:
    """An argument's name as the usage line shows it: ``FOLDERS...``, ``[QUERY]``."""
    name = param.metavar or (param.name or "").upper()
    if param.nargs != 1:
        name += "..."
    return name if param.required else f"[{name}]"


def _type_label(param: Any, ctx: Any) -> str:
    """The value type: ``path``, ``int (0 to 65535)``, ``str, repeatable``, ``flag``."""
    if _is_flag(param):
        return "flag"
    if getattr(param, "count", False):
        return "count"
    if getattr(param, "metavar", None):
        label = param.metavar
    elif hasattr(param, "display_type"):  # Typer >= 0.20: "<list[Path]>", "<int range>"
        label = str(param.display_type(ctx)).strip("<>")
    else:  # plain click
        label = param.type.name
    inner = re.fullmatch(r"list\[(.*)\]", label)
    if inner and _variadic(param):
        label = inner.group(1)
    label = label.replace(" range", "")
    if not getattr(param, "metavar", None):
        label = label.lower()  # Typer says "path" but "list[Path]"
    lo, hi = getattr(param, "min", None), getattr(param, "max", None)
    if lo is not None and hi is not None:
        label += f" ({lo} to {hi})"
    elif lo is not None:
        label += f" (≥ {lo})"
    elif hi is not None:
        label += f" (≤ {hi})"
    if _variadic(param):
        if not _is_argument(param):
            label += ", repeatable"
        else:
            label += ", one or more" if param.required else ", zero or more"
    return label


def _default_value(param: Any, ctx: Any) -> Any:
    resilient = ctx.resilient_parsing
    ctx.resilient_parsing = True
    try:
        return param.get_default(ctx, call=False)
    finally:
        ctx.resilient_parsing = resilient


def _format_default(value: Any) -> str:
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, list | tuple):
        parts = [_format_default(v) for v in value]
        return ", ".join(p for p in parts if p)
    if callable(value):
        return "(dynamic)"
    if value is None:
        return ""
    if isinstance(value, str):
        return _code(_home_relative(value) if value else '""')
    if isinstance(value, Path):
        return _code(_home_relative(str(value)))
    return _code(str(value))


def _default_cell(param: Any, ctx: Any) -> str:
    """Required, a shown default, the flag's resting state, or empty."""
    if param.required:
        return "*required*"
    show = getattr(param, "show_default", True)
    if isinstance(show, str):
        return _escape(show)
    if show is False:
        return ""
    value = _default_value(param, ctx)
    if _is_flag(param):
        if param.secondary_opts:  # --open/--no-open: name the side that is on by default
            side = param.opts if value else param.secondary_opts
            return _code(side[0])
        return "on" if value else "off"
    return _format_default(value)


def _names_cell(param: Any) -> str:
    if _is_argument(param):
        return _code(_metavar(param).strip("[]"))
    names = [*param.opts, *param.secondary_opts]
    # Long names first (--top before -k), keeping declaration order otherwise.
    names.sort(key=lambda o: not o.startswith("--"))
    return ", ".join(_code(n) for n in names)


def _help_cell(param: Any) -> str:
    text = " ".join(_help_paragraphs(getattr(param, "help", None) or "")).replace("\b", "")
    cell = _escape(text)
    envvar = getattr(param, "envvar", None)
    if envvar:
        names = envvar if isinstance(envvar, list | tuple) else [envvar]
        cell += (" " if cell else "") + "Env: " + ", ".join(_code(e) for e in names) + "."
    return cell


def _visible_params(command: Any) -> list[Any]:
    """Arguments first, then options, each in declaration order; ``--help`` left out."""
    params = [p for p in command.params if not getattr(p, "hidden", False)]
    return [p for p in params if _is_argument(p)] + [p for p in params if not _is_argument(p)]


def _panels(params: list[Any]) -> dict[str, list[Any]]:
    """Parameters grouped as ``--help`` groups them (Typer's ``rich_help_panel``), in order
    of first appearance; ungrouped ones under "Arguments" / "Options". One untitled group
    when the command uses no panels."""
    if not any(getattr(p, "rich_help_panel", None) for p in params):
        return {"": params} if params else {}
    panels: dict[str, list[Any]] = {}
    for p in params:
        default = "Arguments" if _is_argument(p) else "Options"
        panels.setdefault(getattr(p, "rich_help_panel", None) or default, []).append(p)
    return panels


# -- rendering -------------------------------------------------------------------------------


def _anchor(full_name: str) -> str:
    """The GitHub heading anchor of ``## `clipsearch eval retrieval```."""
    return "#" + re.sub(r"[^a-z0-9 -]", "", full_name.lower()).replace(" ", "-")


def _usage(doc: CommandDoc) -> str:
    pieces = [doc.full_name, "[OPTIONS]"]  # every command takes at least --help
    pieces += [_metavar(p) for p in _visible_params(doc.command) if _is_argument(p)]
    if doc.is_group:
        pieces.append("COMMAND [ARGS]...")
    return " ".join(pieces)


def _render_command(doc: CommandDoc) -> list[str]:
    lines = [f"## `{doc.full_name}`", "", "```", _usage(doc), "```", ""]
    for para in _help_paragraphs(doc.command.help):
        if para.startswith("\b"):
            lines += ["```", para.lstrip("\b").strip("\n"), "```", ""]
        else:
            lines += [_escape(para), ""]
    if getattr(doc.command, "deprecated", False):
        lines += ["*Deprecated.*", ""]
    panels = _panels(_visible_params(doc.command))
    for title, params in panels.items():
        if title:
            lines += [f"**{_escape(title)}**", ""]
        lines += ["| name | type | default | description |", "|---|---|---|---|"]
        for p in params:
            cells = (
                _names_cell(p),
                _escape(_type_label(p, doc.ctx)),
                _default_cell(p, doc.ctx),
                _help_cell(p),
            )
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if doc.is_group:
        lines += ["| command | description |", "|---|---|"]
        for name in doc.command.list_commands(doc.ctx):
            sub = doc.command.get_command(doc.ctx, name)
            if sub is None or getattr(sub, "hidden", False):
                continue
            full = " ".join((doc.full_name, name))
            lines.append(f"| [`{name}`]({_anchor(full)}) | {_escape(_summary(sub))} |")
        lines.append("")
    return lines


def _exit_codes() -> list[str]:
    """The "Exit codes: ..." paragraph of the CLI module's docstring, if it has one."""
    from clipsearch.cli import app as cli_module

    for para in _help_paragraphs(cli_module.__doc__):
        if para.lower().startswith("exit codes"):
            return [_escape(para), ""]
    return []


def render_cli_docs(root: Any | None = None) -> str:
    """The whole of docs/cli.md as a string (deterministic for a given app)."""
    docs = list(iter_commands(root))
    lines = [
        "<!-- Generated by scripts/gen_cli_docs.py from the Typer app. Do not edit by hand: -->",
        f"<!-- change the commands' help texts, then run `{REGENERATE}`. -->",
        "",
        "# Command-line reference",
        "",
        "Every command also takes `--help`. Options of the top-level `clipsearch` command",
        "(`--library`, `--model`, `--precision`) go *before* the command name and apply to it;",
        "a command's own option of the same name, when it has one, wins. `-k`/`--top` is the",
        "number of results wherever it appears. A value from a fixed set is checked against",
        "the choices listed in its type column (`a|b|c`; `[a|b],...`: several, comma-separated",
        "or repeated).",
        "",
        *_exit_codes(),
        "Commands:",
        "",
    ]
    for doc in docs[1:]:
        indent = "  " * (len(doc.path) - 1)
        lines.append(f"{indent}- [`{doc.full_name}`]({_anchor(doc.full_name)})")
    lines.append("")
    for doc in docs:
        lines += _render_command(doc)
    return "\n".join(lines).rstrip("\n") + "\n"


def check_cli_docs(path: Path = DOCS_PATH, *, root: Any | None = None) -> str | None:
    """None when ``path`` holds exactly what the generator writes; otherwise a message with
    a (truncated) unified diff and the command that regenerates the file."""
    expected = render_cli_docs(root)
    try:
        current = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"{path} does not exist. Run `{REGENERATE}` to write it."
    if current == expected:
        return None
    diff = list(
        difflib.unified_diff(
            current.splitlines(),
            expected.splitlines(),
            fromfile=f"{path.name} (on disk)",
            tofile=f"{path.name} (from the CLI)",
            lineterm="",
        )
    )
    shown = diff[:60] + ([f"... ({len(diff) - 60} more diff lines)"] if len(diff) > 60 else [])
    return (
        f"{path} is out of date with the CLI. Run `{REGENERATE}` and commit the result.\n"
        + "\n".join(shown)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="Exit 1 if the file is out of date.")
    parser.add_argument("--out", default=str(DOCS_PATH), help="Where to write ('-': stdout).")
    args = parser.parse_args(argv)
    if args.check:
        problem = check_cli_docs(Path(args.out))
        if problem:
            print(problem, file=sys.stderr)
            return 1
        print(f"{args.out} is up to date.")
        return 0
    text = render_cli_docs()
    if args.out == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
