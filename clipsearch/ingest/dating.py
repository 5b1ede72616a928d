"""Reading the capture times of files that were indexed before they were recorded.

A library indexed before capture times existed (catalog migration m004_capture_time) has items with
no capture time. The next ``index`` run finds them among the unchanged files and reads
only their metadata (EXIF header, container tags: clipsearch.media.capture_time) in a
thread pool, a few hundred per transaction — nothing is decoded or encoded again. Until
then, and for files it cannot read, search uses the file's mtime.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from clipsearch.ingest.events import DatesRead, IndexEvent
from clipsearch.media import MediaFile
from clipsearch.media.capture_time import CaptureTime, capture_time
from clipsearch.store import Catalog

BATCH = 256  # capture times per transaction


def read_capture(media: MediaFile) -> CaptureTime:
    """The capture time of a scanned file (its mtime when the file does not say)."""
    return capture_time(media.path, media.kind, mtime_ns=media.mtime_ns)


def date_items(
    catalog: Catalog,
    undated: Sequence[tuple[int, MediaFile]],
    *,
    workers: int,
    emit: Callable[[IndexEvent], None],
    should_stop: Callable[[], bool],
) -> tuple[int, bool]:
    """Read and store the capture times of ``undated`` (item id, file) pairs.

    Returns (how many were stored, whether it stopped early because ``should_stop``
    said so; the rest are read on the next run)."""
    total = len(undated)
    done = 0
    emit(DatesRead(0, total))
    with ThreadPoolExecutor(
        max_workers=max(1, workers), thread_name_prefix="clipsearch-date"
    ) as pool:
        for start in range(0, total, BATCH):
            if should_stop():
                return done, True
            chunk = undated[start : start + BATCH]
            times = pool.map(read_capture, [m for _, m in chunk])
            done += catalog.set_capture_times(
                {item_id: t for (item_id, _), t in zip(chunk, times, strict=True)}
            )
            emit(DatesRead(min(start + BATCH, total), total))
    return done, False
