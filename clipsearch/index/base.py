"""The `VectorIndex` protocol: nearest-neighbour search over catalog vectors.

Ids are catalog vector-row ids (``vectors.id``), int64. Scores are inner products of
L2-normalised vectors (cosine). An index is a derived cache of the catalog, never the
source of truth (docs/architecture.md#caches).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class Matches:
    """Top-k results for a batch of queries, best first.

    ids: (Q, k) int64, -1 where fewer than k vectors qualified.
    scores: (Q, k) float32, -inf where ids is -1.
    """

    ids: np.ndarray
    scores: np.ndarray


class VectorIndex(Protocol):
    """Search vectors by inner product. Exact and approximate backends share it."""

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed: np.ndarray | None = None,
        exact: bool = False,
    ) -> Matches:
        """Top-``k`` rows for each query.

        queries: (Q, dim) or (dim,) float32, L2-normalised.
        k: any k >= 1; k larger than the index returns fewer (padded with -1).
        allowed: optional int64 array of ids; only those may be returned (a filter).
            An empty array returns no results, not an error.
        exact: force exact scoring even on an approximate backend.
        """
        ...


class ExpressionFilteredIndex(VectorIndex, Protocol):
    """An index that holds item metadata itself and filters inside its engine (Milvus).

    ``filter_dialect`` names the expression language ("milvus":
    `clipsearch.store.filter_milvus`); `search` then also takes ``expression=`` (and
    returns fewer than k rows, padded with -1, when fewer match) and `count` says how many
    rows an expression selects. The searcher sends such an index the filter as an
    expression instead of a list of allowed ids.
    """

    filter_dialect: str

    def count(self, expression: str = "") -> int: ...


ProgressFn = Callable[[str, float], None]
"""Progress callback: (stage, fraction done in [0, 1]); stages: load, fetch, train, add, tune, save."""


@dataclass(frozen=True)
class IndexInfo:
    """What an index is and how good it measured (``clipsearch index-info``)."""

    backend: str  # "exact", "faiss" or "milvus"
    factory: str  # "exact-bf16", "exact-fp32", a FAISS factory string ("HNSW32", "IVF1024,Flat"), or a Milvus index type ("HNSW")
    params: dict[
        str, Any
    ]  # search parameters: nprobe, efSearch, k_factor, precision; Milvus: M, efConstruction, ef, uri, collection
    vectors: int  # live vectors searchable
    memory_bytes: int  # RAM held by the index (pages of memory-mapped files not counted)
    recall_at_10: float | None  # measured against exact search (exact backend: 1.0, certified)
    recall_queries: int = 0  # how many sample queries the recall was measured on
    recall_target: float | None = None  # the target the parameters were tuned for
    built_at: str | None = None  # ISO-8601 UTC time of the last full build
    generation: int | None = None  # catalog generation the cache is stamped with
    tombstones: int = 0  # deleted ids still inside the FAISS index (filtered out)
    rejected: dict[str, float] = field(default_factory=dict)  # auto: factory -> recall that missed
