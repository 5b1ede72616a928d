"""The library layer: `Library`, the Python face of clipsearch (`clipsearch.library.facade`),
and the collaborators it wires together, one concern each:

- `settings`: where a library lives by default (`default_library_path`) and its ANN choice
  (`AnnSettings`);
- `status`: what `clipsearch status` shows (`LibraryStatus`);
- `models`: the CLIP encoder, the query encoder and the BLIP models, loaded on first use;
- `runtime`: the image-encoder runtime indexing uses;
- `ann`: the nearest-neighbour index, its cache and its copy in memory;
- `indexing`: index and caption runs;
- `searching`: search, query composition, rescorers and their caches;
- `exchange`: export and import of embeddings.

The names below are imported on first use, so importing a light part (``settings``) does
not import the search stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipsearch.lazy import lazy_names

if TYPE_CHECKING:
    from clipsearch.library.facade import Library
    from clipsearch.library.settings import AnnSettings, default_library_path
    from clipsearch.library.status import LibraryStatus

__all__ = ["AnnSettings", "Library", "LibraryStatus", "default_library_path"]

_LAZY = {
    "Library": "clipsearch.library.facade",
    "AnnSettings": "clipsearch.library.settings",
    "default_library_path": "clipsearch.library.settings",
    "LibraryStatus": "clipsearch.library.status",
}


__getattr__ = lazy_names(__name__, _LAZY)
