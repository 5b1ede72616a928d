"""Background indexing for the web page: one job at a time, in its own thread.

The job calls `Library.index` with an ``on_event`` callback that folds the pipeline's
events (`clipsearch.ingest.events`) into a small progress record the page polls, and a
``should_stop`` that a DELETE request sets (the run stops after the batch in flight and
can be resumed). Searches keep working while it runs: the catalog is in WAL mode and
serialises its own access, and the index cache is refreshed when the catalog's
generation changes.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from clipsearch.errors import ClipsearchError
from clipsearch.ingest import (
    BatchWritten,
    DatesRead,
    FileDone,
    IndexEvent,
    IndexOptions,
    ScanDone,
    ScanProgress,
)

MAX_ERRORS_KEPT = 50


class JobConflict(Exception):
    """An indexing job is already running."""


@dataclass
class JobProgress:
    """What the page shows; mutated only by the job thread under the lock."""

    state: str = "idle"  # idle | running | stopping | done | failed | stopped
    phase: str | None = None  # scanning | encoding | finished
    roots: list[str] = field(default_factory=list)
    found: int = 0
    found_by_root: dict[str, int] = field(default_factory=dict)
    to_encode: int | None = None
    done: int = 0
    failed: int = 0
    frames: int = 0
    started: float | None = None
    encode_started: float | None = None
    finished: float | None = None
    errors: deque = field(default_factory=lambda: deque(maxlen=MAX_ERRORS_KEPT))
    report: dict[str, Any] | None = None
    message: str | None = None

    def to_dict(self, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        end = self.finished or now
        elapsed = (end - self.started) if self.started else 0.0
        rate = None
        if self.encode_started is not None and self.done:
            dt = end - self.encode_started
            rate = round(self.done / dt, 2) if dt > 0 else None
        return {
            "state": self.state,
            "phase": self.phase,
            "roots": list(self.roots),
            "found": self.found,
            "to_encode": self.to_encode,
            "done": self.done,
            "failed": self.failed,
            "frames": self.frames,
            "files_per_s": rate,
            "elapsed_s": round(elapsed, 2),
            "errors": list(self.errors),
            "report": self.report,
            "message": self.message,
        }


class IndexJobs:
    """Runs at most one `Library.index` at a time in a daemon thread."""

    def __init__(self, library) -> None:
        self.library = library
        self._lock = threading.Lock()
        self._progress = JobProgress()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self._progress.to_dict()

    def start(self, roots: Sequence[str], options: IndexOptions) -> dict[str, Any]:
        """Start a job; raises JobConflict when one is running."""
        with self._lock:
            if self.running:
                raise JobConflict()
            self._stop.clear()
            self._progress = JobProgress(
                state="running", phase="scanning", roots=list(roots), started=time.monotonic()
            )
            self._thread = threading.Thread(
                target=self._run, args=(list(roots), options), name="clipsearch-index", daemon=True
            )
            self._thread.start()
            return self._progress.to_dict()

    def stop(self) -> dict[str, Any]:
        """Ask a running job to stop after the batch in flight."""
        with self._lock:
            if self.running:
                self._stop.set()
                self._progress.state = "stopping"
            return self._progress.to_dict()

    def join(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # -- job thread ---------------------------------------------------------------------------
    def _run(self, roots: list[str], options: IndexOptions) -> None:
        try:
            report = self.library.index(
                roots, options=options, on_event=self._on_event, should_stop=self._stop.is_set
            )
        except ClipsearchError as e:
            self._finish("failed", message=str(e))
        except Exception as e:  # keep the server up; the page shows the reason
            self._finish("failed", message=f"indexing stopped by an unexpected error: {e!r}")
        else:
            state = "stopped" if report.interrupted else "done"
            self._finish(state, report=report.to_dict())

    def _finish(
        self, state: str, *, message: str | None = None, report: dict | None = None
    ) -> None:
        with self._lock:
            p = self._progress
            p.state, p.phase, p.message, p.report = state, "finished", message, report
            p.finished = time.monotonic()

    def _on_event(self, event: IndexEvent) -> None:
        with self._lock:
            p = self._progress
            if isinstance(event, ScanProgress):
                p.found_by_root[event.root] = event.found
                p.found = sum(p.found_by_root.values())
            elif isinstance(event, ScanDone):
                p.found = event.total
                p.to_encode = event.to_encode + event.to_read
                p.phase = "encoding"
                p.encode_started = time.monotonic()
            elif isinstance(event, FileDone):
                if not event.ok:
                    p.errors.append({"path": event.path, "error": event.error or "failed"})
                if p.phase == "encoding":  # before ScanDone: moved/copied files reused
                    p.done += 1
                    p.failed += 0 if event.ok else 1
                    p.frames += event.frames
            elif isinstance(event, DatesRead):  # files indexed before capture times existed
                p.phase = "dating"
            elif isinstance(event, BatchWritten):  # authoritative running totals
                p.done, p.failed, p.frames = event.done, event.failed, event.frames
                p.to_encode = event.total
