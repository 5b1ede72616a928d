"""Building FAISS indexes for `FaissIndex`: factory, training, adding rows with their ids,
selectors, and the OpenMP thread setting for tiny batches.

Training sizes follow autofaiss's ``get_optimal_train_size`` (100 points per IVF list);
PQ codebooks get 256 × 100 points; polysemous training is off (it only serves Hamming
pre-filtering we do not use) and OPQ runs 20 iterations instead of FAISS's 50. HNSW graphs
are built with efConstruction 80 (FAISS: 40): measured on 1M clustered 512-d vectors
(benchmarks/ann.py), 40 plateaus at recall@10 ≈ 0.91 even at efSearch 2048, 80 reaches
0.96 at efSearch 1024 for ~20% more build time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from clipsearch.errors import MissingDependencyError, UsageError
from clipsearch.index.base import ProgressFn
from clipsearch.index.rows import VectorRows

ADD_CHUNK = 65536
OPQ_ITERATIONS = 20  # FAISS default 50: the rotation converges early and rescoring follows
SMALL_BATCH = 4  # up to this many queries FAISS searches on one thread
HNSW_EF_CONSTRUCTION = 80  # FAISS: 40 (see the module doc)


def import_faiss() -> Any:
    """The faiss module; MissingDependencyError when faiss-cpu is not installed."""
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss is a core dependency
        raise MissingDependencyError("faiss-cpu", "all") from exc
    return faiss


def build_index(
    faiss: Any,
    rows: VectorRows,
    factory: str,
    *,
    seed: int,
    progress: ProgressFn | None,
    skip: np.ndarray,
) -> Any:
    """Create, train and fill a FAISS index for ``rows`` (ids = catalog ids), leaving out
    the rows at positions ``skip`` (held out for tuning)."""
    d = rows.dim
    try:
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise UsageError(f"FAISS cannot build {factory!r}: {faiss_message(exc)}") from exc
    ivf = faiss.try_extract_index_ivf(index)
    hnsw = faiss.downcast_index(index)
    if ivf is None and isinstance(hnsw, faiss.IndexHNSW):
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    if ivf is None:
        index = faiss.IndexIDMap2(index)
    else:
        ivf = faiss.downcast_index(ivf)
        # FAISS prints a warning to stderr for small training sets; we size them ourselves.
        ivf.cp.min_points_per_centroid = 1
        ivf.cp.seed = seed
        if hasattr(ivf, "pq"):
            ivf.pq.cp.min_points_per_centroid = 1
        if hasattr(ivf, "do_polysemous_training"):
            ivf.do_polysemous_training = False  # slow, and only serves Hamming pre-filtering
    if isinstance(index, faiss.IndexPreTransform):
        for i in range(index.chain.size()):
            vt = faiss.downcast_VectorTransform(index.chain.at(i))
            if isinstance(vt, faiss.OPQMatrix):
                vt.niter = OPQ_ITERATIONS
    keep = np.ones(len(rows), dtype=bool)
    keep[skip] = False
    positions = np.flatnonzero(keep)
    if not index.is_trained:
        if progress:
            progress("train", 0.0)
        n_train = _training_size(len(positions), factory, ivf)
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(positions, size=n_train, replace=False))
        x = rows.rows_fp32(pick)
        try:
            index.train(x)
        except RuntimeError as exc:
            raise UsageError(
                f"FAISS cannot train {factory!r} on {len(rows)} vectors: {faiss_message(exc)}"
            ) from exc
        if progress:
            progress("train", 1.0)
    add_rows(index, rows, positions, progress)
    return index


def add_rows(
    index: Any, rows: VectorRows, positions: np.ndarray, progress: ProgressFn | None = None
) -> None:
    """Add the rows at ``positions`` with their ids, in chunks."""
    n = len(positions)
    for s in range(0, n, ADD_CHUNK):
        pos = positions[s : s + ADD_CHUNK]
        index.add_with_ids(rows.rows_fp32(pos), np.ascontiguousarray(rows.ids[pos]))
        if progress:
            progress("add", min(n, s + ADD_CHUNK) / max(1, n))


def _training_size(n: int, factory: str, ivf: Any) -> int:
    """autofaiss ``get_optimal_train_size``: 100 points per IVF list; PQ codebooks want 256
    centroids × 39 points; never more than n."""
    want = 100 * int(ivf.nlist) if ivf is not None else 0
    if "PQ" in factory or "OPQ" in factory:
        want = max(want, 256 * 100)
    return max(1, min(n, max(want, 1000)))


def selector(faiss: Any, ids: np.ndarray, keep: list[Any]) -> Any:
    """A FAISS selector admitting exactly ``ids`` (ascending, non-negative). A bitmap over
    [0, max id] when that is at most 64 bits per id (catalog ids are dense): built with one
    numpy pass instead of a hash set; otherwise ``IDSelectorBatch``."""
    top = int(ids[-1]) + 1 if len(ids) else 0
    if len(ids) and ids[0] >= 0 and top <= 64 * len(ids) + 65536:
        bits = np.zeros(top, dtype=bool)
        bits[ids] = True
        packed = np.packbits(bits, bitorder="little")
        sel = faiss.IDSelectorBitmap(len(packed), faiss.swig_ptr(packed))
        keep += [packed, sel]
        return sel
    sel = faiss.IDSelectorBatch(np.ascontiguousarray(ids))
    keep.append(sel)
    return sel


@contextlib.contextmanager
def one_thread_for_small_batches(faiss: Any, n_queries: int) -> Iterator[None]:
    """One OpenMP thread for tiny batches: waking a second thread for a single query costs
    more than the query on a busy machine (measured: HNSW32 with SearchParameters, 20k×512,
    8 ms on two threads of a loaded 2-core box vs 0.4 ms on one). Per calling thread."""
    if n_queries > SMALL_BATCH:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def probe_remove(faiss: Any, index: Any) -> bool:
    """Whether ``remove_ids`` works on this index (FAISS raises for HNSW)."""
    try:
        index.remove_ids(faiss.IDSelectorBatch(np.empty(0, dtype=np.int64)))
    except RuntimeError:
        return False
    return True


def faiss_message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
