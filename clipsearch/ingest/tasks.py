"""`FileTask`: a file the scan handed on for encoding, as it travels from the pipeline to
an encode engine (and, on Ray, to a worker and back).

Kept apart from the decoder so that a run over unchanged files, which builds no task,
imports neither numpy nor Pillow.
"""

from __future__ import annotations

from dataclasses import dataclass

from clipsearch.media.capture_time import CaptureTime
from clipsearch.media.scan import MediaFile


@dataclass
class FileTask:
    """A file to (re)encode: what the scan found, the root it belongs to, and its partial
    content hash (None when it could not be read)."""

    media: MediaFile
    root_id: int | None
    content_hash: str | None = None
    item_id: int | None = None  # set for an indexed item that only needs its text read
    taken: CaptureTime | None = None  # when it was taken (read with the content hash)
