"""clipsearch: search your own images and videos with CLIP-style dual encoders.

from clipsearch import Library
with Library("~/lib") as lib:
    lib.index(["~/Pictures"])
    hits = lib.search("a dog on a beach", k=10)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clipsearch.errors import ClipsearchError

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


def __getattr__(name: str) -> Any:
    # Lazy, so `import clipsearch` (e.g. for the CLI's --help) does not import numpy/torch.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'clipsearch' has no attribute {name!r}")
