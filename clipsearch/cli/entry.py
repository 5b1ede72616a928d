"""The ``clipsearch`` console script.

A text search that a running ``clipsearch serve`` of the library can answer is sent to it
before anything else is imported (`clipsearch.cli.warm.answer`): the command then costs an
interpreter, a small HTTP request and the printing. Every other command line goes to the
Typer app (`clipsearch.cli.app.main`), the CLI's one error boundary.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    from clipsearch.cli import warm

    code = warm.answer(args)
    if code is not None:
        return code
    from clipsearch.cli.app import main as app_main

    return app_main(args)
