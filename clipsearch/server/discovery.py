"""The discovery file: how a `clipsearch search` finds a `clipsearch serve` of its library.

While a server runs, ``<library>/server.json`` (mode 0600: only the library's owner can
read the token) records where it listens and the token that the CLI's search route takes:

    {"version": 1, "pid": 4242, "host": "127.0.0.1", "port": 8000, "token": "...",
     "model": "ViT-B-32:laion2b_s34b_b79k" | null, "precision": "auto"}

The server writes it once its socket is bound (before its model is loaded: a query sent
meanwhile waits for the model) and removes it when it stops. A file left by a server that
died (kill -9, power cut) names a process that no longer exists: `read` then removes it
and answers None, and the search runs in its own process.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import NamedTuple

FILE = "server.json"
VERSION = 1


class ServerAnnouncement(NamedTuple):
    """What the discovery file records (see the module docstring). A named tuple: the
    warm path reads it before importing anything it does not need (`dataclasses` costs a
    search from the command line more than reading the file)."""

    pid: int
    host: str  # the address to connect to (loopback for a server on every interface)
    port: int
    token: str  # sent as ``Authorization: Bearer``; the server's --token when it has one
    model: str | None  # the --model the server was started with (None: the library's)
    precision: str


def path_for(library: Path | str) -> Path:
    return Path(library) / FILE


def announce(library: Path | str, announcement: ServerAnnouncement) -> Path:
    """Write the discovery file (mode 0600, atomically). Raises OSError when the library
    folder cannot be written."""
    from clipsearch.atomic import atomic_write

    path = path_for(library)
    payload = json.dumps({"version": VERSION, **announcement._asdict()}).encode()

    def write(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(payload)

    atomic_write(path, write)
    return path


def withdraw(library: Path | str, pid: int | None = None) -> None:
    """Remove the discovery file if it is this process's (``pid``, default ours)."""
    found = _load(path_for(library))
    if found is not None and found.pid == (os.getpid() if pid is None else pid):
        with contextlib.suppress(OSError):
            path_for(library).unlink()


def read(library: Path | str) -> ServerAnnouncement | None:
    """The running server's announcement, or None (no file, unreadable, damaged, or left by a
    process that is gone; such a stale file is removed)."""
    path = path_for(library)
    found = _load(path)
    if found is None:
        return None
    if not _alive(found.pid):
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    return found


def _load(path: Path) -> ServerAnnouncement | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != VERSION:
            return None
        return ServerAnnouncement(
            pid=int(data["pid"]),
            host=str(data["host"]),
            port=int(data["port"]),
            token=str(data["token"]),
            model=None if data.get("model") is None else str(data["model"]),
            precision=str(data.get("precision", "auto")),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, another user's
    return pid > 0
