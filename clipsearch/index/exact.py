"""Exact inner-product search: blocked matrix products, top-k per block, certified rescoring.

The scan multiplies the queries (Q, D) by blocks of stored rows (b, D) and keeps the
best ``c`` rows of each block (``torch.topk``), merging blocks as it goes, so memory is
O(Q·b), never O(Q·N). On CPUs with native bf16 (AVX512-BF16 / AMX) the scan runs in
bf16 and the candidates are then rescored in fp32 from the stored fp16/fp32 rows; the
rescored values are the scores returned, and the result is certified equal to an fp32
brute force:

    For every row j, |s̃_j − ŝ_j| ≤ B + c_out·|s̃_j|  (s̃: bf16 scan score, ŝ: fp32 score), with
    B = r·‖q̃‖ + n·‖q̃ − q‖ + γ_2D·n·‖q̃‖ + γ_D·n·‖q‖  (r = max_j ‖x̃_j − x_j‖, n = max_j ‖x_j‖,
    γ_m = m·2⁻²⁴/(1 − m·2⁻²⁴), c_out = 2⁻⁸/(1 − 2⁻⁸): the bf16 rounding of the output)

(Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1, for γ_m). Let t be the
k-th best rescored score among the candidates and D the lowest scan score kept. If
D + c_out·|D| + B < t, no discarded row can reach t, so the candidates hold the true
top-k; otherwise that query is scanned again keeping every row whose scan score could
reach t, and those are rescored. Ties are broken by id, ascending. Without native bf16
the scan runs in fp32 (B shrinks to the fp32 summation error) through the same path. One
or two queries against fp16 rows scan the rows themselves with torch's fp16 GEMV (fp32
accumulation, fp16 output: r = 0, the query rounds with u = 2⁻¹¹, c_out = 2⁻¹¹/(1 − 2⁻¹¹)),
2–3× faster than bf16 for a single query on this project's CPU.

Why torch and not numpy here: on this project's CPU a bf16 matmul is 2–8× faster than an
fp32 one, and ``torch.topk`` over a (1024, 16384) block is ~8× faster than
``np.argpartition`` (measured; see benchmarks/ann.py).
"""

from __future__ import annotations

import functools
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from clipsearch.errors import UsageError
from clipsearch.index import numpy_scan
from clipsearch.index.base import IndexInfo, Matches
from clipsearch.index.rows import VectorRows, as_id_array

if TYPE_CHECKING:
    import torch

ScanPrecision = Literal["auto", "bf16", "fp32"]  # of the exact scan; not the model weights
SCAN_PRECISIONS: tuple[ScanPrecision, ...] = get_args(ScanPrecision)

_U32 = 2.0**-24  # unit roundoff of fp32
_U_BF16 = 2.0**-8  # unit roundoff of bf16
_U_FP16 = 2.0**-11  # unit roundoff of fp16
_FP16_TINY = 2.0**-25  # half the spacing of fp16 subnormals
FP16_MAX_QUERIES = 2  # fp16 GEMV beats bf16 for 1-2 queries; fp16 GEMM is slow beyond
_SAFETY = 1.05  # slack on every bound


def _torch() -> Any:
    import torch

    return torch


@functools.cache
def native_bf16() -> bool:
    """True when the CPU computes bf16 dot products natively (AVX512-BF16 or AMX-BF16).

    Elsewhere bf16 is emulated and slower than fp32 (docs/architecture.md#performance), so the
    scan uses fp32.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _gamma(m: int) -> float:
    return m * _U32 / (1.0 - m * _U32)


def as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """(Q, dim) float32 C-contiguous copy-or-view of ``queries`` ((dim,) becomes (1, dim)).

    Raises UsageError for a wrong shape or dim, or non-finite values.
    """
    q = np.asarray(queries)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2:
        raise UsageError(f"queries must be (Q, D) or (D,), got shape {np.shape(queries)}")
    if q.shape[1] != dim and dim > 0:
        raise UsageError(f"queries have dim {q.shape[1]}, the index has dim {dim}")
    if not np.issubdtype(q.dtype, np.floating):
        raise UsageError(f"queries must be floating point, got {q.dtype}")
    q = np.ascontiguousarray(q, dtype=np.float32)
    if not np.isfinite(q).all():
        raise UsageError("queries contain NaN or infinity")
    return q


def check_k(k: int) -> int:
    """``k`` as an int >= 1; UsageError otherwise."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise UsageError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def empty_matches(n_queries: int, k: int) -> Matches:
    """(Q, k) of -1 / -inf: no row qualified."""
    return Matches(
        ids=np.full((n_queries, k), -1, dtype=np.int64),
        scores=np.full((n_queries, k), -np.inf, dtype=np.float32),
    )


def rescore(rows: VectorRows, positions: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Exact fp32 scores (Q, c) of rows at ``positions`` (Q, c) (-1 = none -> -inf).

    Each score is one float32 row reduction ``(x * q).sum()``, computed the same way for
    every row, so equal vectors get bit-equal scores (ties then break by id).
    """
    n_q, c = positions.shape
    out = np.full((n_q, c), -np.inf, dtype=np.float32)
    if c == 0 or n_q == 0:
        return out
    d = rows.dim
    chunk = max(1, (8 << 20) // max(1, c * d))  # ~32 MB of fp32 rows per step
    vectors = rows.vectors
    for s in range(0, n_q, chunk):
        pos = positions[s : s + chunk]
        valid = pos >= 0
        x = vectors[np.where(valid, pos, 0)].astype(np.float32, copy=False)  # (qc, c, D)
        scores = (x * queries[s : s + chunk, None, :]).sum(axis=-1, dtype=np.float32)
        out[s : s + chunk] = np.where(valid, scores, -np.inf)
    return out


def top_k_by_score_then_id(
    ids: np.ndarray, scores: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of (Q, c) candidates, the k best by score (desc), ties by id (asc), padded."""
    n_q, c = ids.shape
    out_ids = np.full((n_q, k), -1, dtype=np.int64)
    out_scores = np.full((n_q, k), -np.inf, dtype=np.float32)
    if c == 0:
        return out_ids, out_scores
    ids = np.where(np.isneginf(scores), -1, ids)
    order = np.lexsort((ids, -scores), axis=-1)[:, :k]  # (Q, min(c, k))
    kk = order.shape[1]
    out_ids[:, :kk] = np.take_along_axis(ids, order, axis=1)
    out_scores[:, :kk] = np.take_along_axis(scores, order, axis=1)
    return out_ids, out_scores


class Scan:
    """The blocked scan over a `VectorRows`, in bf16 (with a mirror) or fp32.

    mirror: (n, D) torch bf16 copy of the rows, or None to scan fp32 (upcasting fp16 rows
        block by block). r_max / n_max: the error constants of the bound above.
    """

    def __init__(
        self,
        rows: VectorRows,
        *,
        mirror: torch.Tensor | None,
        r_max: float,
        n_max: float,
        block_rows: int | None = None,
    ) -> None:
        self.rows = rows
        self.mirror = mirror
        self.r_max = r_max
        self.n_max = n_max
        self.block_rows = block_rows

    # -- public ------------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        positions: np.ndarray | None = None,
        mask: np.ndarray | None = None,
    ) -> Matches:
        """Exact top-``k`` over all rows, the rows at ``positions`` (ascending), or the rows
        where ``mask`` (n,) is True. ``queries``: (Q, D) float32 (see `as_queries`)."""
        n_q = len(queries)
        total = len(self.rows) if positions is None else len(positions)
        valid = total if mask is None else int(mask.sum())
        if n_q == 0 or valid == 0:
            return empty_matches(n_q, k)
        c = min(total, 2 * k + 32)
        mode = self._mode(queries)
        cand_v, cand_p = self._scan_top(queries, c, positions, mask, mode)  # (Q, c) each
        row_pos = cand_p if positions is None else positions[cand_p]
        row_pos = np.where(np.isneginf(cand_v), -1, row_pos)
        exact = rescore(self.rows, row_pos, queries)
        ids = np.where(row_pos >= 0, self.rows.ids[np.maximum(row_pos, 0)], -1)
        out_ids, out_scores = top_k_by_score_then_id(ids, exact, k)

        if c < total:  # some rows were never rescored: check the certificate
            bound, c_out = self._bounds(queries, mode)
            lowest = cand_v.min(axis=1)  # (Q,) lowest scan score kept
            t = out_scores[:, min(k, c) - 1]
            reach = lowest + c_out * np.abs(lowest) + bound
            failed = np.flatnonzero(np.isfinite(lowest) & ~(reach < t))
            if failed.size:
                fix_ids, fix_scores = self._rescan(
                    queries[failed], k, t[failed], bound[failed], c_out, positions, mask, mode
                )
                out_ids[failed], out_scores[failed] = fix_ids, fix_scores
        return Matches(ids=out_ids, scores=out_scores)

    # -- internals ---------------------------------------------------------------------------
    def _block_rows(self, n_q: int) -> int:
        if self.block_rows:
            return self.block_rows
        return int(min(65536, max(2048, (1 << 22) // max(1, n_q))))

    def _mode(self, queries: np.ndarray) -> str:
        """ "fp16": one or two queries against fp16 rows (torch's fp16 GEMV accumulates in
        fp32 and is 2-3× faster than bf16 here, and fp16 rows are exact: no mirror needed);
        "bf16" with a mirror; "fp32" otherwise; "numpy" (fp32) instead of "fp16"/"fp32" in a
        process that has not imported torch (`numpy_scan`)."""
        if self.mirror is None and not numpy_scan.torch_loaded():
            return "numpy"
        if (
            len(queries) <= FP16_MAX_QUERIES
            and self.rows.dtype == np.float16
            and float(np.abs(queries).max(initial=0.0)) < 1e4
        ):
            return "fp16"
        return "bf16" if self.mirror is not None else "fp32"

    def _queries_for_scan(self, queries: np.ndarray, mode: str) -> torch.Tensor:
        torch = _torch()
        q = torch.from_numpy(queries)
        return q.to({"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[mode])

    def _block(
        self, start: int, stop: int, positions: np.ndarray | None, mode: str
    ) -> torch.Tensor:
        torch = _torch()
        if mode == "bf16":
            assert self.mirror is not None
            if positions is None:
                return self.mirror[start:stop]
            return self.mirror.index_select(0, torch.from_numpy(positions[start:stop]))
        vec = self.rows.vectors
        block = vec[start:stop] if positions is None else vec[positions[start:stop]]
        dtype = np.float16 if mode == "fp16" else np.float32
        with warnings.catch_warnings():  # a read-only memory map is only read here
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(np.ascontiguousarray(block, dtype=dtype))

    def _blocks(
        self, n_q: int, positions: np.ndarray | None, mask: np.ndarray | None, mode: str
    ) -> Any:
        """Yield (start, stop, block (b, D), mask of excluded rows or None) per block."""
        torch = _torch()
        total = len(self.rows) if positions is None else len(positions)
        bs = self._block_rows(n_q)
        mask_t = None if mask is None else torch.from_numpy(~mask)
        for start in range(0, total, bs):
            stop = min(total, start + bs)
            block_mask = None if mask_t is None else mask_t[start:stop]
            if block_mask is not None and bool(block_mask.all()):
                continue
            yield start, stop, self._block(start, stop, positions, mode), block_mask

    def _scan_top(
        self,
        queries: np.ndarray,
        c: int,
        positions: np.ndarray | None,
        mask: np.ndarray | None,
        mode: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best ``c`` scan scores per query and their scan positions, (Q, c) each."""
        if mode == "numpy":
            block_rows = self._block_rows(len(queries))
            return numpy_scan.scan_top(self.rows.vectors, queries, c, positions, mask, block_rows)
        torch = _torch()
        qs = self._queries_for_scan(queries, mode)
        n_q = len(queries)
        best_v = torch.full((n_q, c), float("-inf"), dtype=qs.dtype)
        best_p = torch.zeros((n_q, c), dtype=torch.int64)
        with torch.no_grad():
            for start, _stop, block, block_mask in self._blocks(n_q, positions, mask, mode):
                scores = qs @ block.T  # (Q, b)
                if block_mask is not None:
                    scores.masked_fill_(block_mask, float("-inf"))
                kk = min(c, scores.shape[1])
                v, i = torch.topk(scores, kk, dim=1, sorted=False)  # (Q, kk)
                cat_v = torch.cat([best_v, v], dim=1)
                cat_p = torch.cat([best_p, i + start], dim=1)
                best_v, j = torch.topk(cat_v, c, dim=1, sorted=False)
                best_p = torch.gather(cat_p, 1, j)
        return best_v.float().numpy(), best_p.numpy()

    def _bounds(self, queries: np.ndarray, mode: str) -> tuple[np.ndarray, float]:
        """Per-query B (Q,) and the relative output-rounding factor c_out (see module doc)."""
        d = self.rows.dim
        q64 = queries.astype(np.float64)
        qn = np.linalg.norm(q64, axis=1)
        if mode in ("fp32", "numpy"):
            bound = 2 * _gamma(d) * self.n_max * qn
            return _SAFETY * bound + 1e-6, 0.0
        if mode == "fp16":  # rows exact; query rounded to fp16; output rounded to fp16
            q_h = queries.astype(np.float16).astype(np.float64)
            qhn = np.linalg.norm(q_h, axis=1)
            dq = np.linalg.norm(q_h - q64, axis=1)
            bound = (
                self.n_max * dq
                + _gamma(2 * d) * self.n_max * qhn
                + _gamma(d) * self.n_max * qn
                + _FP16_TINY  # output below fp16's normal range: absolute rounding error
            )
            return _SAFETY * bound + 1e-6, _SAFETY * _U_FP16 / (1 - _U_FP16)
        torch = _torch()
        q_bf = torch.from_numpy(queries).to(torch.bfloat16).double().numpy()
        qtn = np.linalg.norm(q_bf, axis=1)
        dq = np.linalg.norm(q_bf - q64, axis=1)
        n_bf = self.n_max * (1 + _U_BF16)
        bound = (
            self.r_max * qtn
            + self.n_max * dq
            + _gamma(2 * d) * n_bf * qtn
            + _gamma(d) * self.n_max * qn
        )
        c_out = _SAFETY * _U_BF16 / (1 - _U_BF16)
        return _SAFETY * bound + 1e-6, c_out

    def _rescan(
        self,
        queries: np.ndarray,
        k: int,
        t: np.ndarray,
        bound: np.ndarray,
        c_out: float,
        positions: np.ndarray | None,
        mask: np.ndarray | None,
        mode: str,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k for queries whose certificate failed: keep every row whose scan score
        s̃ satisfies s̃ + c_out·|s̃| + B >= t, rescore them all."""
        y = t - bound
        tau = np.where(y >= 0, y / (1 + c_out), y / (1 - c_out))  # invert s + c|s| = y
        if mode == "numpy":
            qi, pi = numpy_scan.scan_above(
                self.rows.vectors,
                queries,
                tau.astype(np.float32),
                positions,
                mask,
                self._block_rows(len(queries)),
            )
            return self._rescored(queries, k, qi, pi, positions)
        torch = _torch()
        qs = self._queries_for_scan(queries, mode)
        tau_t = torch.from_numpy(tau.astype(np.float32))[:, None]
        hits_q: list[np.ndarray] = []
        hits_p: list[np.ndarray] = []
        with torch.no_grad():
            for start, _stop, block, block_mask in self._blocks(
                len(queries), positions, mask, mode
            ):
                scores = (qs @ block.T).float()
                keep = scores >= tau_t
                if block_mask is not None:
                    keep &= ~block_mask
                qi, pi = torch.nonzero(keep, as_tuple=True)
                hits_q.append(qi.numpy())
                hits_p.append(pi.numpy() + start)
        qi = np.concatenate(hits_q) if hits_q else np.empty(0, np.int64)
        pi = np.concatenate(hits_p) if hits_p else np.empty(0, np.int64)
        return self._rescored(queries, k, qi, pi, positions)

    def _rescored(
        self,
        queries: np.ndarray,
        k: int,
        qi: np.ndarray,
        pi: np.ndarray,
        positions: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k after rescoring the candidate (query index, scan position) pairs."""
        counts = np.bincount(qi, minlength=len(queries))
        width = max(1, int(counts.max()) if counts.size else 1)
        cand = np.full((len(queries), width), -1, dtype=np.int64)
        order = np.argsort(qi, kind="stable")
        qi, pi = qi[order], pi[order]
        slot = np.arange(len(qi)) - np.repeat(np.cumsum(counts) - counts, counts)
        cand[qi, slot] = pi if positions is None else positions[pi]
        exact = rescore(self.rows, cand, queries)
        ids = np.where(cand >= 0, self.rows.ids[np.maximum(cand, 0)], -1)
        return top_k_by_score_then_id(ids, exact, k)


def build_mirror(vectors: np.ndarray) -> tuple[torch.Tensor, float, float]:
    """bf16 copy of (n, D) rows plus the bound constants (r_max, n_max).

    n_max comes from the bf16 norms (‖x‖ ≤ ‖x̃‖/(1 − u)) and r_max from the a-priori
    rounding bound ‖x̃ − x‖ ≤ u·‖x‖ (u = 2⁻⁸): one pass over the data instead of three.
    """
    torch = _torch()
    n, d = vectors.shape
    mirror = torch.empty((n, d), dtype=torch.bfloat16)
    top = 0.0
    step = 65536
    for s in range(0, n, step):
        block = torch.from_numpy(np.ascontiguousarray(vectors[s : s + step]))
        mirror[s : s + step] = block.to(torch.bfloat16)
        norms = torch.linalg.vector_norm(mirror[s : s + step], dim=1, dtype=torch.float32)
        top = max(top, float(norms.max()))
    n_max = top / (1 - _U_BF16) * (1 + 1e-6)
    return mirror, _U_BF16 * n_max, n_max


def max_norm(vectors: np.ndarray) -> float:
    """max_j ‖x_j‖ over (n, D) rows, 0 for none."""
    best = 0.0
    for s in range(0, len(vectors), 65536):
        x = np.asarray(vectors[s : s + 65536], dtype=np.float32)
        best = max(best, float(np.sqrt((x.astype(np.float64) ** 2).sum(axis=1).max())))
    return best


class ExactIndex:
    """Exact top-k by inner product over all stored vectors (a `VectorIndex`).

    ids: (N,) int64 catalog vector-row ids, unique.
    vectors: (N, D) float16 or float32, L2-normalised (not checked: scores are plain
        inner products of what is stored).
    precision: "auto" scans in bf16 where the CPU has native bf16 (`native_bf16`) and in
        fp32 elsewhere; "bf16"/"fp32" force one. Results are exact either way (module doc).
    block_rows: rows per block of the scan (default: ~4M scores per block).

    Memory: 2·D bytes per vector for the stored fp16 rows plus 2·D for the bf16 scan copy
    (bf16 scan), or 4·D (fp32 scan). Raises UsageError for malformed input.
    Thread-safe: one internal lock serialises searches and changes.
    """

    def __init__(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        *,
        precision: ScanPrecision = "auto",
        block_rows: int | None = None,
    ) -> None:
        if precision not in SCAN_PRECISIONS:
            raise UsageError(f"precision must be auto, bf16 or fp32, got {precision!r}")
        self.precision: Literal["bf16", "fp32"] = (
            ("bf16" if native_bf16() else "fp32") if precision == "auto" else precision
        )
        vectors = np.asarray(vectors)
        if self.precision == "fp32" and vectors.dtype != np.float32:
            vectors = vectors.astype(np.float32)  # exact upcast; scanned in place
        self._rows = VectorRows(ids, vectors)
        self._block_rows = block_rows
        self._lock = threading.RLock()
        self._scan = self._make_scan()

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
        """Exact top-``k`` (see `VectorIndex.search`); ``exact`` changes nothing here.

        Returns (Q, k) ids/scores, best first, ties by ascending id, padded with -1/-inf.
        Raises UsageError for malformed queries or k.
        """
        k = check_k(k)
        q = as_queries(queries, self.dim)
        with self._lock:
            if len(self._rows) == 0:
                return empty_matches(len(q), k)
            if allowed is None:
                return self._scan.search(q, k)
            pos = self._rows.positions(allowed)
            if pos.size == 0:
                return empty_matches(len(q), k)
            if pos.size * 3 <= len(self._rows):
                return self._scan.search(q, k, positions=pos)
            mask = np.zeros(len(self._rows), dtype=bool)
            mask[pos] = True
            return self._scan.search(q, k, mask=mask)

    # -- changes -----------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add rows. Raises UsageError if an id is already present or the batch is bad."""
        with self._lock:
            n_before = len(self._rows)
            last_id = self._rows.ids[-1] if n_before else None
            self._rows.add(ids, vectors)
            if len(self._rows) == n_before:
                return
            appended = last_id is None or bool(np.all(as_id_array(ids) > last_id))
            if self._scan.mirror is not None and appended and n_before:
                self._extend_mirror(n_before)
            else:
                self._scan = self._make_scan()

    def remove(self, ids: np.ndarray) -> int:
        """Remove rows by id (unknown ids are ignored). Returns how many were removed."""
        with self._lock:
            pos = self._rows.remove(ids)
            if pos.size:
                mirror = self._scan.mirror
                if mirror is not None:
                    torch = _torch()
                    keep = np.ones(len(mirror), dtype=bool)
                    keep[pos] = False
                    self._scan.mirror = mirror[torch.from_numpy(keep)]
                self._scan.rows = self._rows
            return int(pos.size)

    # -- facts -------------------------------------------------------------------------------
    @property
    def ids(self) -> np.ndarray:
        """(N,) int64 ascending stored ids (a copy)."""
        with self._lock:
            return self._rows.ids.copy()

    @property
    def rows(self) -> VectorRows:
        """The stored rows (for persistence; do not modify)."""
        return self._rows

    @property
    def memory_bytes(self) -> int:
        mirror = self._scan.mirror
        extra = 0 if mirror is None else mirror.numel() * mirror.element_size()
        return self._rows.nbytes + extra

    def info(self) -> IndexInfo:
        """Backend facts. Recall is 1.0 by construction (certified exact, tested)."""
        return IndexInfo(
            backend="exact",
            factory=f"exact-{self.precision}",
            params={"precision": self.precision},
            vectors=len(self),
            memory_bytes=self.memory_bytes,
            recall_at_10=1.0,
        )

    # -- internals ---------------------------------------------------------------------------
    def _make_scan(self) -> Scan:
        vectors = self._rows.vectors
        if self.precision == "bf16":
            mirror, r_max, n_max = build_mirror(vectors)
        else:
            mirror, r_max, n_max = None, 0.0, max_norm(vectors)
        return Scan(
            self._rows, mirror=mirror, r_max=r_max, n_max=n_max, block_rows=self._block_rows
        )

    def _extend_mirror(self, n_before: int) -> None:
        torch = _torch()
        new_rows = self._rows.vectors[n_before:]
        mirror, r_max, n_max = build_mirror(new_rows)
        scan = self._scan
        scan.mirror = torch.cat([scan.mirror, mirror]) if scan.mirror is not None else mirror
        scan.r_max = max(scan.r_max, r_max)
        scan.n_max = max(scan.n_max, n_max)
        scan.rows = self._rows
