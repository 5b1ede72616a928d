"""`VectorRows`: catalog vector rows held in memory (or memory-mapped), sorted by id.

The exact and FAISS backends both keep one: the exact backend scans it, the FAISS
backend uses it for exact work (selective filters, ``exact=True``, rescoring lossy codes,
recall measurement). Rows are kept ascending by id so an id set maps to row positions
with one ``searchsorted``; new ids are normally larger than every stored id (the catalog
never reuses ids), so ``add`` is an amortised O(new rows) append.
"""

from __future__ import annotations

import numpy as np

from clipsearch.errors import UsageError

VECTOR_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


def as_id_array(ids: np.ndarray | list[int], *, name: str = "ids") -> np.ndarray:
    """``ids`` as a 1-D int64 array; raises UsageError for other shapes or non-integers."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise UsageError(f"{name} must be a 1-D array of integer ids, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise UsageError(f"{name} must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def check_vectors(ids: np.ndarray, vectors: np.ndarray, *, dim: int | None = None) -> np.ndarray:
    """Validate an (n, D) float16/float32 batch aligned with ``ids``; returns it (maybe cast).

    Raises UsageError for wrong shapes, dtypes, a dim mismatch, duplicated ids or
    non-finite values: a bad batch is refused whole, nothing is half-added.
    """
    vectors = np.asarray(vectors)
    if vectors.ndim != 2:
        raise UsageError(f"vectors must be a 2-D (n, D) array, got shape {vectors.shape}")
    if vectors.dtype not in VECTOR_DTYPES:
        if vectors.dtype == np.float64:
            vectors = vectors.astype(np.float32)
        else:
            raise UsageError(f"vectors must be float16 or float32, got {vectors.dtype}")
    if len(vectors) != len(ids):
        raise UsageError(f"{len(ids)} ids but {len(vectors)} vectors")
    if dim is not None and len(vectors) and vectors.shape[1] != dim:
        raise UsageError(f"vectors have dim {vectors.shape[1]}, the index has dim {dim}")
    if len(np.unique(ids)) != len(ids):
        raise UsageError("ids contain duplicates; every vector row needs its own id")
    if len(vectors) and not np.isfinite(vectors).all():
        raise UsageError("vectors contain NaN or infinity")
    return vectors


class VectorRows:
    """Ids (n,) int64 ascending and their vectors (n, D) float16/float32, growable.

    ids, vectors: the initial rows in any order (sorted here). ``vectors`` may be a
        read-only ``np.memmap``; it is copied into memory on the first change.
    Raises UsageError for malformed input (see `check_vectors`).
    """

    def __init__(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = as_id_array(ids)
        vectors = check_vectors(ids, vectors)
        self.dim = int(vectors.shape[1])
        self.dtype = vectors.dtype
        if len(ids) > 1 and not bool(np.all(ids[1:] > ids[:-1])):
            order = np.argsort(ids, kind="stable")
            ids, vectors = ids[order], vectors[order]
        self._ids = ids
        self._vectors = vectors
        self._n = len(ids)

    @classmethod
    def trusted(cls, ids: np.ndarray, vectors: np.ndarray) -> VectorRows:
        """Rows known to be valid and sorted (read back from our own cache): no checks, no
        copy, so a memory-mapped ``vectors`` stays unread until it is used."""
        self = cls.__new__(cls)
        self._ids = np.asarray(ids, dtype=np.int64)
        self._vectors = vectors
        self._n = len(self._ids)
        self.dim = int(vectors.shape[1])
        self.dtype = vectors.dtype
        return self

    # -- views -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._n

    @property
    def ids(self) -> np.ndarray:
        """(n,) int64 ascending (a view: do not modify)."""
        return self._ids[: self._n]

    @property
    def vectors(self) -> np.ndarray:
        """(n, D) stored vectors aligned with `ids` (a view: do not modify)."""
        return self._vectors[: self._n]

    @property
    def nbytes(self) -> int:
        """Bytes held in RAM (0 for the vectors of a memory-mapped file)."""
        vec = 0 if isinstance(self._vectors, np.memmap) else self._vectors.nbytes
        return int(self._ids.nbytes + vec)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Ascending unique row positions of those ``ids`` that are stored (others ignored)."""
        ids = as_id_array(ids, name="allowed")
        if self._n == 0 or ids.size == 0:
            return np.empty(0, dtype=np.int64)
        stored = self.ids
        pos = np.searchsorted(stored, ids)
        inside = pos < self._n
        pos = pos[inside]
        return np.unique(pos[stored[pos] == ids[inside]])

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``ids`` are stored."""
        ids = as_id_array(ids)
        if self._n == 0 or ids.size == 0:
            return np.zeros(len(ids), dtype=bool)
        pos = np.minimum(np.searchsorted(self.ids, ids), self._n - 1)
        return self.ids[pos] == ids

    def fetch(self, ids: np.ndarray) -> np.ndarray:
        """(n, D) vectors of stored ``ids`` in their order; raises UsageError for unknown ids."""
        ids = as_id_array(ids)
        found = self.contains(ids)
        if not found.all():
            raise UsageError(
                f"{int((~found).sum())} ids are not in the index (e.g. {ids[~found][0]})"
            )
        return self.vectors[np.searchsorted(self.ids, ids)]

    def rows_fp32(self, positions: np.ndarray) -> np.ndarray:
        """(m, D) float32 copy of the rows at ``positions``."""
        return self._vectors[positions].astype(np.float32, copy=False)

    # -- changes -----------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Append rows. Raises UsageError if an id is already stored or the batch is bad."""
        ids = as_id_array(ids)
        vectors = check_vectors(ids, vectors, dim=self.dim)
        if ids.size == 0:
            return
        if self.contains(ids).any():
            raise UsageError("some ids are already in the index; remove them first")
        vectors = vectors.astype(self.dtype, copy=False)
        order = np.argsort(ids, kind="stable")
        ids, vectors = ids[order], vectors[order]
        if self._n and ids[0] < self.ids[-1]:  # interleaved ids: rebuild sorted arrays
            all_ids = np.concatenate([self.ids, ids])
            all_vec = np.concatenate([self.vectors, vectors])
            order = np.argsort(all_ids, kind="stable")
            self._ids, self._vectors, self._n = all_ids[order], all_vec[order], len(all_ids)
            return
        self._reserve(self._n + len(ids))
        self._ids[self._n : self._n + len(ids)] = ids
        self._vectors[self._n : self._n + len(ids)] = vectors
        self._n += len(ids)

    def remove(self, ids: np.ndarray) -> np.ndarray:
        """Drop the rows of ``ids`` (unknown ids are ignored). Returns the removed row
        positions (ascending, in the numbering before removal)."""
        pos = self.positions(ids)
        if pos.size == 0:
            return pos
        keep = np.ones(self._n, dtype=bool)
        keep[pos] = False
        self._ids = self.ids[keep]
        self._vectors = self.vectors[keep]
        self._n = len(self._ids)
        return pos

    def _reserve(self, n: int) -> None:
        cap = len(self._ids)
        if n <= cap and not isinstance(self._vectors, np.memmap):
            return
        new_cap = max(n, int(cap * 1.5) + 1024) if n > cap else cap
        ids = np.empty(new_cap, dtype=np.int64)
        ids[: self._n] = self.ids
        vectors = np.empty((new_cap, self.dim), dtype=self.dtype)
        vectors[: self._n] = self.vectors
        self._ids, self._vectors = ids, vectors
