"""clipsearch: search your own images and videos with CLIP-style dual encoders.

from clipsearch import Library
with Library("~/lib") as lib:
    lib.index(["~/Pictures"])
    hits = lib.search("a dog on a beach", k=10)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipsearch.errors import ClipsearchError
from clipsearch.lazy import lazy_names

if TYPE_CHECKING:
    from clipsearch.ingest import IndexOptions, IndexReport
    from clipsearch.library import Library, LibraryStatus
    from clipsearch.search.hits import Hit

__version__ = "0.1.0"
__all__ = [
    "ClipsearchError",
    "Hit",
    "IndexOptions",
    "IndexReport",
    "Library",
    "LibraryStatus",
    "__version__",
]

_LAZY = {
    "Library": "clipsearch.library",
    "LibraryStatus": "clipsearch.library",
    "Hit": "clipsearch.search.hits",
    "IndexOptions": "clipsearch.ingest",
    "IndexReport": "clipsearch.ingest",
}


__getattr__ = lazy_names(__name__, _LAZY)
