"""What ``clipsearch search`` prints, rendered by a running server for the terminal of the
command that asked.

On the warm path (`clipsearch.cli.warm`) a running ``clipsearch serve`` answers the query.
Importing Rich to draw the results table would cost the command more than the whole
answer, and the server has Rich loaded already. So the command describes its terminal
(`describe`: no Rich, no clipsearch imports) and the server renders the output
(`search_output`) on consoles that read that description where Rich reads the process's
own streams and environment: whether stdout and stderr are terminals, their encodings,
the terminal size of the first standard stream that has one, and the environment
variables Rich consults (COLUMNS, TERM, NO_COLOR, FORCE_COLOR...). Rich then chooses
colours, widths and box characters as it would have in the command, and the command
writes the text it gets back: the bytes the ``search`` command prints itself (tested
against it, on pipes and on a pseudo-terminal).

The server side is handed to `clipsearch.server.create_app` by the ``serve`` command
(the server never imports the CLI); a server made without it answers with the hits and
the command renders them itself.
"""

from __future__ import annotations

import functools
import io
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clipsearch.search.hits import SearchResults

# The environment variables Rich's Console reads (rich/console.py).
RICH_ENVIRON = (
    "COLUMNS",
    "LINES",
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    "FORCE_COLOR",
    "TTY_COMPATIBLE",
    "TTY_INTERACTIVE",
    "JUPYTER_COLUMNS",
    "JUPYTER_LINES",
)


def describe(*, json: bool, dates: bool, duplicates: bool) -> dict[str, Any] | None:
    """This process's terminal as `search_output` needs it, with how ``search`` prints
    (``json``; a table with the ``dates`` and ``duplicates`` columns); None where the
    description would be incomplete (Windows consoles: Rich asks the console API)."""
    if sys.platform == "win32" or sys.stdout is None or sys.stderr is None:
        return None
    size = None
    for fd in (0, 1, 2):  # the streams Rich asks, in its order
        try:
            size = list(os.get_terminal_size(fd))
        except (AttributeError, ValueError, OSError):
            continue
        break
    return {
        "json": json,
        "dates": dates,
        "duplicates": duplicates,
        "stdout_tty": _isatty(sys.stdout),
        "stderr_tty": _isatty(sys.stderr),
        "stdout_encoding": getattr(sys.stdout, "encoding", None) or "utf-8",
        "stderr_encoding": getattr(sys.stderr, "encoding", None) or "utf-8",
        "size": size,
        "environ": {k: os.environ[k] for k in RICH_ENVIRON if k in os.environ},
    }


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def search_output(hits: SearchResults, described: dict[str, Any]) -> dict[str, str]:
    """What ``search`` prints for ``hits`` on the terminal ``described`` (see `describe`):
    ``{"stdout": ..., "stderr": ...}``."""
    from clipsearch.cli import render

    if described["json"]:
        return {"stdout": render.json_text([h.to_dict() for h in hits]), "stderr": ""}
    out = _Captured(described["stdout_tty"], described["stdout_encoding"])
    err = _Captured(described["stderr_tty"], described["stderr_encoding"])
    render.search_results(
        hits,
        dates=described["dates"],
        duplicates=described["duplicates"],
        out=_client_console(out, stderr=False, described=described),
        err=_client_console(err, stderr=True, described=described),
    )
    return {"stdout": out.getvalue(), "stderr": err.getvalue()}


class _Captured(io.StringIO):
    """A text stream that says what the client's stream is (a terminal or not, encoding)."""

    def __init__(self, tty: bool, encoding: str) -> None:
        super().__init__()
        self._tty = tty
        self._encoding = encoding

    def isatty(self) -> bool:
        return self._tty

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding


def _client_console(stream: _Captured, *, stderr: bool, described: dict[str, Any]) -> Any:
    from clipsearch.cli import render

    options = render.console_options(stderr=stderr, tty=stream.isatty())
    size = described["size"]
    return _console_class()(
        terminal_size=tuple(size) if size else None,
        **options,
        file=stream,
        force_jupyter=False,
        legacy_windows=False,
        _environ=dict(described["environ"]),
    )


@functools.cache
def _console_class() -> type:
    """Rich's Console, sized from the client's terminal instead of this process's."""
    from rich.console import Console, ConsoleDimensions

    class ClientConsole(Console):
        def __init__(self, *, terminal_size: tuple[int, int] | None, **kwargs: Any) -> None:
            self._client_size = terminal_size
            super().__init__(**kwargs)

        @property
        def size(self) -> ConsoleDimensions:
            # Rich's Console.size, with the client's terminal size where Rich asks
            # os.get_terminal_size of this process's standard streams.
            if self._width is not None and self._height is not None:
                return ConsoleDimensions(self._width, self._height)
            if self.is_dumb_terminal:
                return ConsoleDimensions(80, 25)
            width, height = self._client_size or (None, None)
            columns = self._environ.get("COLUMNS")
            if columns is not None and columns.isdigit():
                width = int(columns)
            lines = self._environ.get("LINES")
            if lines is not None and lines.isdigit():
                height = int(lines)
            width = width or 80
            height = height or 25
            return ConsoleDimensions(
                width if self._width is None else self._width,
                height if self._height is None else self._height,
            )

        @size.setter
        def size(self, new_size: tuple[int, int]) -> None:
            self._width, self._height = new_size

    return ClientConsole
