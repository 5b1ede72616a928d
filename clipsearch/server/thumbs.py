"""Thumbnails, generated once and cached on disk under ``<library>/thumbs/``.

A thumbnail is a JPEG whose shorter side is ``size`` pixels (never upscaled; the longer
side is capped at 4·size, for panoramas), upright: images through `load_image` (EXIF
orientation applied, JPEG draft-mode decoding so a 12 MP photo costs a 1/8-scale
decode), video frames through PyAV with the stream's display rotation applied.

Sizes snap up to one of `SIZES` and video timestamps to 0.1 s, so a client cannot fill
the disk with arbitrary variants. The cache key holds the item id, the size, the time,
and a stamp of the file's current path, size and mtime: a file edited in place gets a
new thumbnail, and the stale ones of that item are removed when it is written. Files are
written to a temporary name and renamed, so a concurrent reader never sees half a JPEG.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from clipsearch.atomic import atomic_write_bytes
from clipsearch.errors import (
    MediaError,
)
from clipsearch.media import decode_cost, load_image
from clipsearch.media.frame_at import grab_video_frame
from clipsearch.server.files import ItemFile

SIZES = (128, 256, 512, 1024)
DEFAULT_SIZE = 256
MAX_ASPECT = 4  # longer side ≤ MAX_ASPECT · shorter side
JPEG_QUALITY = 85
TIME_STEP_S = 0.1


def snap_size(size: int) -> int:
    """The smallest cached size ≥ ``size`` (the largest size for anything bigger)."""
    for s in SIZES:
        if size <= s:
            return s
    return SIZES[-1]


@dataclass(frozen=True)
class Thumbnail:
    path: Path
    cached: bool  # True when served from disk without decoding anything


class ThumbnailCache:
    """Makes and keeps thumbnails for items in ``folder`` (created on first write).

    Thread-safe: generation may run in several threads at once; the worst case is the
    same thumbnail rendered twice, and the rename keeps the file whole.
    """

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)

    def get(self, item: ItemFile, *, size: int = DEFAULT_SIZE, t: float | None = None) -> Thumbnail:
        """The thumbnail of ``item`` at ``size`` (and time ``t`` for videos).

        Raises MediaError subclasses when the file cannot be decoded,
        MissingDependencyError when a video needs PyAV and it is missing.
        """
        cached = self.find(item, size=size, t=t)
        if cached is not None:
            return cached
        size = snap_size(size)
        when = self._video_time(item, t) if item.record.kind == "video" else None
        path = self._path(item, size, when)
        if item.record.kind == "video":
            image = grab_video_frame(item.real_path, when or 0.0, size=size)
        else:
            image = load_image(item.real_path, min_side=size).image
        image = fit(image, size)
        self._write(path, image)
        return Thumbnail(path, cached=False)

    def find(
        self, item: ItemFile, *, size: int = DEFAULT_SIZE, t: float | None = None
    ) -> Thumbnail | None:
        """The cached thumbnail `get` would return, or None when it must be made."""
        size = snap_size(size)
        when = self._video_time(item, t) if item.record.kind == "video" else None
        path = self._path(item, size, when)
        return Thumbnail(path, cached=True) if path.is_file() else None

    @staticmethod
    def decode_cost(item: ItemFile, *, size: int = DEFAULT_SIZE) -> int:
        """Bytes of memory making the thumbnail of an image takes at its peak (from the
        file's header; see `clipsearch.media.decode_cost`); 0 for videos, whose frames
        are decoded at the stream's size, bounded by the video caps."""
        if item.record.kind == "video":
            return 0
        try:
            return decode_cost(item.real_path, min_side=snap_size(size))
        except MediaError:
            return 0  # `get` reports the same problem when it tries to decode

    # -- internals -----------------------------------------------------------------------------
    @staticmethod
    def _video_time(item: ItemFile, t: float | None) -> float:
        duration = item.record.duration
        if t is None:
            t = (duration or 0.0) / 2  # a poster from the middle, away from black intros
        t = max(0.0, float(t))
        if duration:
            t = min(t, max(duration - TIME_STEP_S, 0.0))
        return round(round(t / TIME_STEP_S) * TIME_STEP_S, 1)

    def _path(self, item: ItemFile, size: int, when: float | None) -> Path:
        st = item.stat
        stamp = hashlib.sha1(
            f"{item.real_path}\0{st.st_size}\0{st.st_mtime_ns}".encode(), usedforsecurity=False
        ).hexdigest()[:12]
        t_part = "" if when is None else f"_t{round(when * 1000)}"
        item_id = item.record.id
        return self.folder / f"{item_id % 256:02x}" / f"{item_id}_{size}{t_part}_{stamp}.jpg"

    def _write(self, path: Path, image: Image.Image) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
        stamp = path.stem.rsplit("_", 1)[-1]
        item_prefix = path.name.split("_", 1)[0] + "_"
        for old in path.parent.glob(f"{item_prefix}*.jpg"):
            if not old.stem.endswith(stamp):  # an older version of the file: stale
                old.unlink(missing_ok=True)
        atomic_write_bytes(path, buf.getvalue())


def fit(image: Image.Image, size: int) -> Image.Image:
    """Scale so the shorter side is ``size`` (never up), the longer ≤ MAX_ASPECT·size."""
    w, h = image.size
    scale = min(1.0, size / min(w, h), MAX_ASPECT * size / max(w, h))
    if scale < 1.0:
        target = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = image.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0)
    return image.convert("RGB") if image.mode != "RGB" else image
