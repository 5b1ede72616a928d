"""One writer per library: an advisory lock taken by indexing runs.

Two `clipsearch index` runs on one library would both see the same files as new and
both encode everything (the catalog stays consistent, the work is done twice). The
first run takes an exclusive ``flock`` on ``<library>/writer.lock`` and writes who it is
(pid, start time, command) into it; a second run is refused at once with a message
naming the first. The operating system releases the lock when the holder exits, however
it exits (kill -9 included), so a stale lock file never blocks anyone.

Readers (search, status, the server's pages) never take it: SQLite's WAL lets them read
while the writer commits. Where locking is impossible (no ``fcntl``, a library folder
that cannot be written) the lock is skipped: a read-only library fails on its first
write with its own clear error.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from types import TracebackType

from clipsearch.errors import LibraryError

LOCK_NAME = "writer.lock"


class WriterLock:
    """``with WriterLock(library_dir, action="indexing"): ...`` — exclusive, non-blocking.

    Raises LibraryError naming the holder when another process holds the lock.
    Not re-entrant across threads of one process: a process takes it once per run.
    """

    def __init__(self, library_dir: Path | str, *, action: str = "indexing") -> None:
        self.path = Path(library_dir) / LOCK_NAME
        self.action = action
        self._fd: int | None = None

    def __enter__(self) -> WriterLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not a POSIX system: no advisory lock
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            return self  # read-only library: writes fail on their own, clearly
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(fd)
            os.close(fd)
            raise LibraryError(
                f"another process ({holder}) is already indexing the library "
                f"{self.path.parent}; running both would encode the same files twice. Wait "
                "for it to finish (or stop it), then run this again."
            ) from None
        except OSError:
            os.close(fd)
            return self  # a file system without flock: go on unlocked
        self._fd = fd
        info = {
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "action": self.action,
            "command": " ".join(sys.argv)[:500],
        }
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(info).encode())
        except OSError:
            pass  # who holds it is only for the message
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None


def _describe(fd: int) -> str:
    """'pid 1234, indexing since 2026-11-23 14:02:11: clipsearch index ~/Pictures'."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return "another clipsearch run"
    parts = [f"pid {info['pid']}"] if "pid" in info else []
    if info.get("started"):
        parts.append(f"{info.get('action', 'writing')} since {info['started']}")
    text = ", ".join(parts) or "another clipsearch run"
    return f"{text}: {info['command']}" if info.get("command") else text
