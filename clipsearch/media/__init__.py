"""clipsearch.media: find media files and decode them; knows nothing of models or storage.

- ``scan`` walks roots into ``MediaFile`` records (path, kind, size, mtime);
- ``partial_hash`` gives a file's content identity, to recognise moves and copies;
- ``load_image`` decodes an image robustly and fast (draft mode, EXIF orientation, every
  colour mode, a decompression-bomb guard, typed errors); ``decode_cost`` tells from the
  header alone how much memory that decode will take.

Video (imported on demand: it needs PyAV): ``clipsearch.media.video`` decodes the frames
a sampler asks for (``FrameReader``, ``decode_frames``); ``video_probe`` opens a container
and reads its metadata (``probe_video``); ``video_decoder`` is the damage-surviving packet
decoder under both; ``sampling`` plans frame times and detects shots.

Importing this package imports only the scanner (standard library); the decoding names
load their module (numpy, Pillow) on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipsearch.lazy import lazy_names

# The scanner imports only the standard library. Imported here, its function ``scan`` is
# this package's attribute, not the submodule of the same name.
from clipsearch.media.scan import (
    IMAGE_EXTENSIONS,
    MEDIA_KINDS,
    VIDEO_EXTENSIONS,
    MediaFile,
    MediaKind,
    kind_of,
    scan,
    scan_paths,
)

if TYPE_CHECKING:
    from clipsearch.media.identity import partial_hash
    from clipsearch.media.image import DEFAULT_MAX_PIXELS, DecodedImage, decode_cost, load_image

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "MEDIA_KINDS",
    "VIDEO_EXTENSIONS",
    "DecodedImage",
    "MediaFile",
    "MediaKind",
    "decode_cost",
    "kind_of",
    "load_image",
    "partial_hash",
    "scan",
    "scan_paths",
]

_LAZY = {
    **dict.fromkeys(("partial_hash",), "clipsearch.media.identity"),
    **dict.fromkeys(
        ("DEFAULT_MAX_PIXELS", "DecodedImage", "decode_cost", "load_image"),
        "clipsearch.media.image",
    ),
}


__getattr__ = lazy_names(__name__, _LAZY)
