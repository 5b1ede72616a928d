"""What ``clipsearch index`` does once its options are read: open the library, index with
a progress display and Ctrl-C handling, print the summary. Shared by the Typer command
(`clipsearch.cli.app.index`) and the console script's fast path for a plain ``index``
command line (`clipsearch.cli.entry`), which runs it without building Typer's parser:
over unchanged files that parser cost a third of the run. Imports neither Typer nor the
library until a run starts.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipsearch.cli import render

if TYPE_CHECKING:
    from clipsearch.ingest import IndexOptions
    from clipsearch.ingest.ray_engine import RaySettings
    from clipsearch.library import Library

INTERRUPTED = 130  # the exit code of a run stopped by Ctrl-C (run it again to resume)


class StopFlag:
    """First Ctrl-C asks the run to stop after the batch in flight; the second aborts."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __enter__(self) -> StopFlag:
        self._old = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            if self.event.is_set():
                signal.signal(signal.SIGINT, self._old)
                raise KeyboardInterrupt
            self.event.set()
            render.err.print(
                "[yellow]Stopping after the batch in flight (Ctrl-C again to abort)…[/]"
            )

        signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._old)


def run_index(
    folders: Sequence[Path],
    *,
    library: Path | None,
    model: str | None,
    precision: str,
    options: IndexOptions,
    quiet: bool = False,
    json_out: bool = False,
    ray: RaySettings | None = None,
    captions: bool = False,
    library_options: dict[str, Any] | None = None,
    open_library: Callable[..., Library] | None = None,
) -> int:
    """Index ``folders`` into ``library`` (None: the default one) and print what happened;
    returns the exit code (0, or `INTERRUPTED`). Raises ClipsearchError for the CLI's error
    boundary to report. ``library_options``: more `Library` arguments (caption model,
    runtime, quantize). ``open_library``: how the library is opened, called like `Library`
    (the Typer command passes `clipsearch.cli.options.open_library`, every command's way)."""
    if open_library is None:
        from clipsearch.library import Library

        open_library = Library

    with (
        open_library(library, model=model, precision=precision, **(library_options or {})) as lib,
        StopFlag() as stop,
        render.IndexProgress(quiet=quiet or json_out) as progress,
    ):
        report = lib.index(
            folders,
            options=options,
            on_event=progress,
            should_stop=stop.event.is_set,
            ray=ray,
            captions=_caption_options() if captions else None,
        )
    if json_out:
        render.print_json(report.to_dict())
    else:
        render.index_summary(report)
    return INTERRUPTED if report.interrupted else 0


def _caption_options():
    """`index --captions`: caption with the defaults (imported only then: numpy)."""
    from clipsearch.ingest.captioning import CaptionOptions

    return CaptionOptions()
