"""`FaissIndex`: approximate inner-product search with FAISS, tuned to a measured recall.

Any FAISS factory string works ("Flat", "HNSW32", "IVF1024,Flat",
"OPQ64_448,IVF16384_HNSW32,PQ64x8"…) or "auto" (`autotune.choose_backend`). Vectors are
added with their catalog ids (``add_with_ids``; HNSW and Flat sit in an ``IndexIDMap2``).
Next to the FAISS index it keeps the rows themselves (`VectorRows`, fp16, possibly
memory-mapped) for the work that must be exact:

- a selective filter (at most ~2% of the rows, or 8192) is answered by exact search over
  the allowed rows: cheaper than ANN at that size and always right; wider filters use a
  FAISS ``IDSelectorBatch`` (``SearchParameters(sel=…)``: supported by Flat, HNSW and IVF
  in FAISS 1.15) with efSearch/nprobe raised by 1/selectivity, and any query left with
  fewer than k answers is redone exactly;
- ``exact=True``; rescoring candidates of lossy (PQ/SQ) codes: ``k·k_factor`` candidates
  are rescored in fp32 (FAISS's own ``IndexRefine`` loses the selector inside an
  ``IndexIDMap2`` in 1.15, so refinement is done here);
- measuring recall@10 against exact search, at build time, on sample queries.

Deletions use ``remove_ids`` where the index supports it (Flat, IVF); HNSW cannot delete,
so removed ids become tombstones, excluded by an ``IDSelectorNot``; `needs_rebuild` turns
true when tombstones exceed 10% of the index or it has doubled since it was trained.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clipsearch.errors import UsageError
from clipsearch.index import autotune
from clipsearch.index.base import IndexInfo, Matches, ProgressFn
from clipsearch.index.exact import (
    Scan,
    as_queries,
    check_k,
    empty_matches,
    max_norm,
    rescore,
    top_k_by_score_then_id,
)
from clipsearch.index.faiss_build import (
    ADD_CHUNK,
    add_rows,
    build_index,
    import_faiss,
    one_thread_for_small_batches,
    probe_remove,
    selector,
)
from clipsearch.index.rows import VectorRows, as_id_array, check_vectors

TOMBSTONE_REBUILD_FRACTION = 0.10
EXACT_FILTER_FRACTION = 0.02
EXACT_FILTER_MIN_ROWS = 8192
EF_SEARCH_CAP = 8192


@dataclass
class FaissState:
    """Everything about a `FaissIndex` besides the FAISS object and the rows."""

    factory: str
    params: dict[str, int] = field(default_factory=dict)  # efSearch / nprobe / k_factor
    recall_at_10: float | None = None
    recall_queries: int = 0
    recall_target: float | None = None
    trained_on: int = 0  # vectors in the index when it was trained/built
    built_at: str | None = None
    max_norm: float | None = None  # max ‖x‖ over rows (error bound of the exact path)
    rejected: dict[str, float] = field(default_factory=dict)  # factory -> recall that missed

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaissState:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class FaissIndex:
    """A FAISS index over catalog vectors (a `VectorIndex`).

    ids: (N,) int64 unique ids; vectors: (N, D) float16/float32, L2-normalised.
    factory: a FAISS factory string or "auto": the `autotune.candidate_backends` in order
        (autofaiss heuristics by size and budget) until one reaches ``recall_target``;
        the ones that missed are listed in ``info().rejected`` with the recall they reached.
    memory_budget_bytes: for "auto" (default: a quarter of RAM).
    recall_target: raise nprobe/efSearch (and k_factor for lossy codes) until recall@10
        against exact search reaches it on the tuning queries, or a cap; the recall stored
        is measured on as many other queries that chose nothing (`autotune.tune_and_check`).
    tune: False skips tuning (FAISS defaults; recall is still measured).
    tuning_queries: how many sample queries tune (and as many measure) recall. seed:
        sampling seed.
    threads: set FAISS's OpenMP thread count (process-wide); None leaves it.
    progress: optional callback (stage, fraction).

    Raises UsageError for malformed input or a factory string FAISS rejects.
    Thread-safe: one internal lock serialises searches and changes.
    """

    def __init__(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        *,
        factory: str = "auto",
        memory_budget_bytes: int | None = None,
        recall_target: float = 0.95,
        tune: bool = True,
        tuning_queries: int = 500,
        seed: int = 0,
        threads: int | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        faiss = import_faiss()
        if threads is not None:
            faiss.omp_set_num_threads(int(threads))
        if not 0.0 < recall_target <= 1.0:
            raise UsageError(f"recall_target must be in (0, 1], got {recall_target}")
        rows = VectorRows(ids, vectors)
        if factory == "auto":
            candidates = autotune.candidate_backends(
                len(rows), rows.dim, memory_budget_bytes, flat_threshold=0
            )
        else:
            candidates = [factory]
        tried: dict[str, float] = {}
        best: FaissIndex | None = None
        best_recall = 0.0
        for candidate in candidates:
            trial = FaissIndex.__new__(FaissIndex)
            # Chosen by the recall of its tuning queries; its stored recall is the check's.
            recall = trial._build_and_tune(
                rows, candidate, recall_target if tune else None, tuning_queries, seed, progress
            )
            tried[candidate] = recall
            if best is None or recall > best_recall:
                best, best_recall = trial, recall  # keep the best so far if none reaches the target
            del trial
            if not tune or recall >= recall_target:
                break
        assert best is not None
        self.__dict__.update(best.__dict__)
        self._state.rejected = {k: v for k, v in tried.items() if k != self._state.factory}

    def _build_and_tune(
        self,
        rows: VectorRows,
        factory: str,
        target: float | None,
        tuning_queries: int,
        seed: int,
        progress: ProgressFn | None,
    ) -> float:
        """Build ``factory`` without a held-out sample of rows, tune on half of that sample
        and measure on the other half (`autotune.tune_and_check`), then add it. Returns the
        tuning half's recall."""
        faiss = import_faiss()
        held = autotune.held_out_positions(len(rows), 2 * tuning_queries, seed=seed)
        index = build_index(faiss, rows, factory, seed=seed, progress=progress, skip=held)
        state = FaissState(factory=factory, trained_on=len(rows), built_at=_now())
        self._init(index, rows, state, np.empty(0, dtype=np.int64))
        if held.size:  # tune on rows the index has not seen, then add them
            mask = np.ones(len(rows), dtype=bool)
            mask[held] = False
            sample = autotune.held_out_queries(rows, held, seed=seed)
            truth = autotune.exact_truth(rows, sample, 10, mask=mask)
            tuned, _ = self._tune_with(sample, truth, target, progress)
            add_rows(index, rows, held)
            return tuned
        return self._tune_and_check(target, tuning_queries, seed, progress)[0]

    @classmethod
    def from_parts(
        cls,
        index: Any,
        rows: VectorRows,
        state: FaissState,
        tombstones: np.ndarray | None = None,
        *,
        read_only: bool = False,
    ) -> FaissIndex:
        """Reassemble a saved index (see `IndexCache`); no training, no tuning.

        read_only: the FAISS index is memory-mapped (``IO_FLAG_MMAP|IO_FLAG_READ_ONLY``):
        `add`/`remove` then raise UsageError instead of touching it.
        """
        self = cls.__new__(cls)
        tomb = np.empty(0, np.int64) if tombstones is None else np.sort(as_id_array(tombstones))
        self._init(index, rows, state, tomb, read_only=read_only)
        return self

    def _init(
        self,
        index: Any,
        rows: VectorRows,
        state: FaissState,
        tombstones: np.ndarray,
        *,
        read_only: bool = False,
    ) -> None:
        faiss = import_faiss()
        self._faiss = faiss
        self._index = index
        self._rows = rows
        self._state = state
        self._shape = autotune.factory_shape(state.factory)
        self._tombstones = tombstones
        self._lock = threading.RLock()
        if state.max_norm is None:
            state.max_norm = max_norm(rows.vectors)
        self._exact = Scan(rows, mirror=None, r_max=0.0, n_max=state.max_norm)
        self._ivf = faiss.try_extract_index_ivf(index)
        self.read_only = read_only
        self._can_remove = not read_only and probe_remove(faiss, index)

    def replace_rows(self, rows: VectorRows) -> None:
        """Swap in an equal copy of the rows (e.g. memory-mapped from the saved file)."""
        with self._lock:
            if len(rows) != len(self._rows) or not np.array_equal(rows.ids, self._rows.ids):
                raise UsageError("replacement rows hold different ids")
            self._rows = rows
            self._exact.rows = rows

    def _check_writable(self) -> None:
        if self.read_only:
            raise UsageError(
                "this FAISS index is memory-mapped read-only; load it writable to change it"
            )

    # -- VectorIndex -------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self._rows.dim

    def __len__(self) -> int:
        return len(self._rows)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed: np.ndarray | None = None,
        exact: bool = False,
    ) -> Matches:
        """Top-``k`` by inner product (see `VectorIndex.search` and the module doc).

        Returns (Q, k) ids/scores, best first, ties by ascending id, padded with -1/-inf.
        Raises UsageError for malformed queries or k.
        """
        k = check_k(k)
        q = as_queries(queries, self.dim)
        with self._lock:
            n = len(self._rows)
            if n == 0 or len(q) == 0:
                return empty_matches(len(q), k)
            if allowed is None:
                if exact:
                    return self._exact.search(q, k)
                return self._ann(q, k, None, 1.0)
            pos = self._rows.positions(allowed)
            if pos.size == 0:
                return empty_matches(len(q), k)
            small = pos.size <= max(EXACT_FILTER_MIN_ROWS, EXACT_FILTER_FRACTION * n)
            if exact or small or pos.size == n:
                if pos.size == n:
                    return self._exact.search(q, k) if exact else self._ann(q, k, None, 1.0)
                return self._exact.search(q, k, positions=pos)
            return self._ann(q, k, pos, pos.size / n)

    # -- changes -----------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add rows (no retraining). Raises UsageError for ids already present, or removed
        earlier from an index that keeps tombstones (rebuild instead)."""
        ids = as_id_array(ids)
        vectors = check_vectors(ids, vectors, dim=self.dim)
        with self._lock:
            self._check_writable()
            if self._tombstones.size and np.isin(ids, self._tombstones).any():
                raise UsageError("some ids were removed from this FAISS index earlier; rebuild it")
            self._rows.add(ids, vectors)
            for s in range(0, len(ids), ADD_CHUNK):
                x = np.ascontiguousarray(vectors[s : s + ADD_CHUNK], dtype=np.float32)
                self._index.add_with_ids(x, np.ascontiguousarray(ids[s : s + ADD_CHUNK]))
            self._exact.n_max = max(self._exact.n_max, max_norm(vectors))
            self._state.max_norm = self._exact.n_max

    def remove(self, ids: np.ndarray) -> int:
        """Remove rows by id (unknown ids ignored); returns how many were removed."""
        ids = as_id_array(ids)
        with self._lock:
            present = ids[self._rows.contains(ids)]
            if present.size == 0:
                return 0
            self._check_writable()
            self._rows.remove(present)
            if self._can_remove:
                self._index.remove_ids(self._faiss.IDSelectorBatch(present))
            else:
                self._tombstones = np.union1d(self._tombstones, present)
            return int(present.size)

    # -- tuning ------------------------------------------------------------------------------
    def tune(
        self,
        recall_target: float | None,
        *,
        n_queries: int = 500,
        seed: int = 0,
        progress: ProgressFn | None = None,
    ) -> float:
        """Raise search parameters until recall@10 >= ``recall_target`` on ``n_queries``
        sample queries (None: keep the current parameters), then measure recall@10 on as
        many others. Stores and returns that measured recall."""
        return self._tune_and_check(recall_target, n_queries, seed, progress)[1]

    def _tune_and_check(
        self, recall_target: float | None, n_queries: int, seed: int, progress: ProgressFn | None
    ) -> tuple[float, float]:
        with self._lock:
            if len(self._rows) == 0:
                self._state.recall_at_10, self._state.recall_queries = None, 0
                return 1.0, 1.0
            sample = autotune.tuning_queries(self._rows, n_queries=2 * n_queries, seed=seed)
            truth = autotune.exact_truth(self._rows, sample, 10)
            return self._tune_with(sample, truth, recall_target, progress)

    def _tune_with(
        self,
        sample: autotune.TuningQueries,
        truth: np.ndarray,
        recall_target: float | None,
        progress: ProgressFn | None,
    ) -> tuple[float, float]:
        """Tune on one half of ``sample``, measure on the other (`autotune.tune_and_check`);
        store the measured recall. Returns (tuning half's recall, measured recall)."""
        with self._lock:
            shape = self._shape
            target = recall_target if recall_target is not None else 0.0
            params = self._state.params
            tune_rows, check_rows = autotune.tune_and_check(len(sample))

            def measure(candidate: dict[str, int], rows: np.ndarray) -> float:
                def run(queries: np.ndarray, k: int) -> np.ndarray:
                    return self._ann(queries, k, None, 1.0, params=candidate, fallback=False).ids

                return autotune.measure_recall(run, sample.take(rows), truth[rows], 10)

            def evaluate(candidate: dict[str, int]) -> float:
                return measure(candidate, tune_rows)

            if progress:
                progress("tune", 0.0)
            if recall_target is None or shape.family == "flat":
                recall = evaluate(params)
            elif shape.family == "hnsw":
                kf = params.get("k_factor", autotune.K_FACTOR_LADDER[0]) if shape.lossy else 1
                ef, recall, _ = autotune.raise_until(
                    autotune.EF_SEARCH_LADDER,
                    lambda v: evaluate({"efSearch": v, "k_factor": kf}),
                    target,
                )
                params = {"efSearch": ef, "k_factor": kf}
            elif shape.family == "ivf":
                ladder = [v for v in autotune.NPROBE_LADDER if v < shape.nlist] + [shape.nlist]
                kf = autotune.K_FACTOR_LADDER[0] if shape.lossy else 1
                nprobe, recall, _ = autotune.raise_until(
                    ladder, lambda v: evaluate({"nprobe": v, "k_factor": kf}), target
                )
                if recall < target and shape.lossy:
                    kf, recall, _ = autotune.raise_until(
                        autotune.K_FACTOR_LADDER[1:],
                        lambda v: evaluate({"nprobe": nprobe, "k_factor": v}),
                        target,
                    )
                params = {"nprobe": nprobe, "k_factor": kf}
            else:
                recall = evaluate(params)
            checked = measure(params, check_rows)
            self._state.params = params
            self._state.recall_at_10 = float(checked)
            self._state.recall_queries = len(check_rows)
            self._state.recall_target = recall_target
            if progress:
                progress("tune", 1.0)
            return float(recall), float(checked)

    # -- facts -------------------------------------------------------------------------------
    @property
    def factory(self) -> str:
        return self._state.factory

    @property
    def params(self) -> dict[str, int]:
        return dict(self._state.params)

    @property
    def state(self) -> FaissState:
        """Persisted facts (factory, params, measured recall…): see `IndexCache`."""
        return self._state

    @property
    def faiss_index(self) -> Any:
        """The underlying FAISS index (for persistence; do not modify)."""
        return self._index

    @property
    def rows(self) -> VectorRows:
        return self._rows

    @property
    def tombstones(self) -> np.ndarray:
        """(t,) int64 ids removed but still inside the FAISS index (a copy)."""
        return self._tombstones.copy()

    @property
    def needs_rebuild(self) -> bool:
        """True when tombstones exceed 10% of the index, or it has more than doubled since
        it was trained (IVF centroids and HNSW entry points then fit the data poorly)."""
        total = max(1, int(self._index.ntotal))
        grown = len(self._rows) > 2 * max(1, self._state.trained_on)
        return self._tombstones.size > TOMBSTONE_REBUILD_FRACTION * total or grown

    @property
    def memory_bytes(self) -> int:
        """Estimated RAM of the FAISS structures plus in-memory rows."""
        n, d = int(self._index.ntotal), self.dim
        shape = self._shape
        if self._ivf is not None:
            faiss_bytes = n * (int(self._ivf.code_size) + 8) + int(self._ivf.nlist) * d * 4
            faiss_bytes += int(self._ivf.nlist) * shape.hnsw_m * 2 * 4
        elif shape.family == "hnsw":
            faiss_bytes = n * (d * 4 + shape.hnsw_m * 2 * 4 + 24)
        else:
            faiss_bytes = n * (d * 4 + 24)
        return faiss_bytes + self._rows.nbytes

    def info(self) -> IndexInfo:
        s = self._state
        return IndexInfo(
            backend="faiss",
            factory=s.factory,
            params=dict(s.params),
            vectors=len(self),
            memory_bytes=self.memory_bytes,
            recall_at_10=s.recall_at_10,
            recall_queries=s.recall_queries,
            recall_target=s.recall_target,
            built_at=s.built_at,
            tombstones=int(self._tombstones.size),
            rejected=dict(s.rejected),
        )

    # -- internals ---------------------------------------------------------------------------
    def _ann(
        self,
        q: np.ndarray,
        k: int,
        positions: np.ndarray | None,
        selectivity: float,
        *,
        params: dict[str, int] | None = None,
        fallback: bool = True,
    ) -> Matches:
        """FAISS search (optionally restricted to rows at ``positions``), lossy codes
        rescored exactly, queries with too few answers redone exactly."""
        faiss = self._faiss
        params = self._state.params if params is None else params
        shape = self._shape
        total = int(self._index.ntotal)
        kf = int(params.get("k_factor", 1)) if shape.lossy else 1
        kk = max(1, min(k * kf, total))
        keep: list[Any] = []
        sel = None
        live = len(self._rows) / max(1, total)
        if positions is not None:
            sel = selector(faiss, self._rows.ids[positions], keep)
        elif self._tombstones.size:
            dead = faiss.IDSelectorBatch(self._tombstones)
            sel = faiss.IDSelectorNot(dead)
            keep += [dead, sel]
        boost = 1.0 / max(selectivity * live, 1e-6)
        search_params = self._search_params(sel, boost, kk, params, keep)
        with one_thread_for_small_batches(faiss, len(q)):
            dist, labels = self._index.search(q, kk, params=search_params)  # (Q, kk) each
        labels = labels.astype(np.int64, copy=False)
        if shape.lossy:
            pos = np.full(labels.shape, -1, dtype=np.int64)
            valid = labels >= 0
            found = self._rows.contains(labels[valid])
            lookup = np.searchsorted(self._rows.ids, labels[valid])
            pos[valid] = np.where(found, lookup, -1)
            scores = rescore(self._rows, pos, q)
            labels = np.where(pos >= 0, labels, -1)
        else:
            scores = np.where(labels >= 0, dist, -np.inf).astype(np.float32)
        ids, out_scores = top_k_by_score_then_id(labels, scores, k)
        if fallback:
            available = len(self._rows) if positions is None else len(positions)
            short = np.flatnonzero((ids >= 0).sum(axis=1) < min(k, available))
            if short.size:
                redo = self._exact.search(q[short], k, positions=positions)
                ids[short], out_scores[short] = redo.ids, redo.scores
        return Matches(ids=ids, scores=out_scores)

    def _search_params(
        self, sel: Any, boost: float, kk: int, params: dict[str, int], keep: list[Any]
    ) -> Any:
        faiss = self._faiss
        shape = self._shape
        if shape.family == "hnsw" and "efSearch" in params:
            ef = min(EF_SEARCH_CAP, max(kk, math.ceil(params["efSearch"] * boost)))
            p = faiss.SearchParametersHNSW(efSearch=ef)
        elif self._ivf is not None:
            base = int(params.get("nprobe", self._ivf.nprobe))
            nprobe = min(int(self._ivf.nlist), max(1, math.ceil(base * boost)))
            p = faiss.SearchParametersIVF(nprobe=nprobe)
            if shape.hnsw_m:
                qp = faiss.SearchParametersHNSW(efSearch=max(16, 2 * nprobe))
                keep.append(qp)
                p.quantizer_params = qp
        elif shape.family == "hnsw":
            p = faiss.SearchParametersHNSW(efSearch=max(kk, 16))
        else:
            p = faiss.SearchParameters()
        if sel is not None:
            p.sel = sel
        keep.append(p)
        if isinstance(self._index, faiss.IndexPreTransform):
            outer = faiss.SearchParametersPreTransform(index_params=p)
            keep.append(outer)
            return outer
        return p


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
