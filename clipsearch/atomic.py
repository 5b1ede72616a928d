"""Crash-safe file replacement: the one way clipsearch writes a file that readers may open.

`atomic_write` writes into a temporary file beside the target, fsyncs it, renames it over
the target and fsyncs the folder, so a reader (or a process restarted after kill -9 or a
power cut) sees either the old file or the new one, never a part of one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

TMP_PREFIX = ".tmp-"  # temporary files start with this (cache sweepers recognise them)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Create or replace ``path`` with what ``write(tmp)`` writes to a temporary path.

    The temporary file lives in ``path``'s folder (same filesystem, so the rename is
    atomic) and is removed if ``write`` or the rename fails. OSError propagates; callers
    map it to their own error (a read-only library, a full disk).
    """
    path = Path(path)
    tmp = path.with_name(f"{TMP_PREFIX}{secrets.token_hex(4)}-{path.name}")
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a folder
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """`atomic_write` of a bytes payload."""
    atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))
