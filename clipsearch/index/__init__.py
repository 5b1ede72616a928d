"""clipsearch.index: nearest-neighbour search over catalog vectors (docs/architecture.md).

- `ExactIndex`: exact top-k by blocked matrix products (bf16 scan + certified fp32
  rescoring where the CPU has native bf16);
- `FaissIndex`: FAISS (Flat, HNSW, IVF, OPQ+IVF+PQ) tuned to a measured recall target;
- `IndexCache`: the index as a derived cache of the catalog under ``<library>/ann``;
- `choose_backend`: autofaiss-style choice by size and memory budget.

Importing this package imports neither torch nor faiss; they load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipsearch.lazy import lazy_names

if TYPE_CHECKING:
    from clipsearch.index.autotune import choose_backend
    from clipsearch.index.base import IndexInfo, Matches, VectorIndex
    from clipsearch.index.cache import IndexCache, VectorSource
    from clipsearch.index.exact import ExactIndex
    from clipsearch.index.faiss_backend import FaissIndex

__all__ = [
    "ExactIndex",
    "FaissIndex",
    "IndexCache",
    "IndexInfo",
    "Matches",
    "VectorIndex",
    "VectorSource",
    "choose_backend",
]

_LAZY = {
    **dict.fromkeys(("choose_backend",), "clipsearch.index.autotune"),
    **dict.fromkeys(("IndexInfo", "Matches", "VectorIndex"), "clipsearch.index.base"),
    **dict.fromkeys(("IndexCache", "VectorSource"), "clipsearch.index.cache"),
    **dict.fromkeys(("ExactIndex",), "clipsearch.index.exact"),
    **dict.fromkeys(("FaissIndex",), "clipsearch.index.faiss_backend"),
}


__getattr__ = lazy_names(__name__, _LAZY)
