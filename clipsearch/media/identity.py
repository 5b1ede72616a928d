"""Content identity of a file, cheap enough for big videos.

A moved or copied file keeps its content, so its vectors can be reused instead of
encoding it again (rclip does the same). Hashing whole videos would cost a full read, so
``partial_hash`` reads at most three 64 KiB windows (start, middle, end) plus the size:

    h = BLAKE2b-128( size as 8-byte little-endian ‖ bytes[0 : 64Ki]
                     ‖ bytes[m : m + 64Ki] ‖ bytes[size - 64Ki : size] ),  m = size//2 - 32Ki

Files of at most 192 KiB are hashed whole (the windows would cover them anyway). Two
files that agree in size and in all three windows but differ elsewhere collide; for
photos and videos an edit almost always changes the header or the whole stream.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

WINDOW = 64 * 1024  # bytes per window


def partial_hash(path: Path | str, size: int | None = None) -> str:
    """The content hash of ``path`` described in the module docstring, as 32 hex characters.

    Args:
        path: the file to read (3 reads of 64 KiB at most).
        size: its size in bytes when the caller already has it from ``stat``; otherwise
            it is taken from the open file. A file that changed size since is read by the
            given size, so its hash differs from the unchanged file's (as it should).

    Raises:
        OSError: the file cannot be opened or read (missing, permission denied, a folder).
            Callers record it against the file; the decoder will say the same.
    """
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb", buffering=0) as f:
        if size is None:
            size = os.fstat(f.fileno()).st_size
        h.update(size.to_bytes(8, "little"))
        if size <= 3 * WINDOW:
            h.update(_read_exactly(f, size))
        else:
            for offset in (0, size // 2 - WINDOW // 2, size - WINDOW):
                f.seek(offset)
                h.update(_read_exactly(f, WINDOW))
    return h.hexdigest()


def _read_exactly(f: io.FileIO, n: int) -> bytes:
    """Read ``n`` bytes, or fewer only at end of file (raw reads may return short)."""
    parts: list[bytes] = []
    while n > 0:
        chunk = f.read(n)
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)
