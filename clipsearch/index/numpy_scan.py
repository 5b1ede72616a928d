"""The exact scan on numpy, for processes that have not imported torch.

`clipsearch.index.exact` scans with torch (bf16 GEMM, fp16 GEMV, ``torch.topk``), which is
faster per query, but importing torch costs a process seconds and ~650 MB resident: more
than a one-query scan of a personal library (10k rows × 512: a few ms in fp32 here). So a
process without torch (a `clipsearch search` whose query was encoded by the numpy text
tower) scans in fp32 numpy: stored rows converted block by block, ``np.argpartition`` for
the per-block top-c. The scores it returns are rescored and certified by the caller exactly
as the torch fp32 scan's are (same bound: fp32 products, fp32 accumulation).
"""

from __future__ import annotations

import sys

import numpy as np


def torch_loaded() -> bool:
    """Has this process imported torch already (so using it costs nothing more)?"""
    return "torch" in sys.modules


def _blocks(vectors, queries, positions, mask, block_rows):
    """Yield (start, scores (Q, b) float32 with excluded rows at -inf) per block."""
    total = len(vectors) if positions is None else len(positions)
    for start in range(0, total, block_rows):
        stop = min(total, start + block_rows)
        excluded = None if mask is None else ~mask[start:stop]
        if excluded is not None and excluded.all():
            continue
        block = vectors[start:stop] if positions is None else vectors[positions[start:stop]]
        scores = queries @ np.asarray(block, dtype=np.float32).T  # (Q, b)
        if excluded is not None:
            scores[:, excluded] = -np.inf
        yield start, scores


def _top(values: np.ndarray, c: int) -> np.ndarray:
    """Column indices of the ``c`` largest values per row (unsorted), (Q, c)."""
    if values.shape[1] <= c:
        return np.broadcast_to(np.arange(values.shape[1]), values.shape).copy()
    return np.argpartition(-values, c - 1, axis=1)[:, :c]


def scan_top(
    vectors: np.ndarray,
    queries: np.ndarray,
    c: int,
    positions: np.ndarray | None,
    mask: np.ndarray | None,
    block_rows: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``c`` scores per query and their scan positions, (Q, c) each (-inf pads)."""
    n_q = len(queries)
    best_v = np.full((n_q, c), -np.inf, dtype=np.float32)
    best_p = np.zeros((n_q, c), dtype=np.int64)
    for start, scores in _blocks(vectors, queries, positions, mask, block_rows):
        i = _top(scores, c)
        cat_v = np.concatenate([best_v, np.take_along_axis(scores, i, 1)], axis=1)
        cat_p = np.concatenate([best_p, i + start], axis=1)
        j = _top(cat_v, c)
        best_v, best_p = np.take_along_axis(cat_v, j, 1), np.take_along_axis(cat_p, j, 1)
    return best_v, best_p


def scan_above(
    vectors: np.ndarray,
    queries: np.ndarray,
    tau: np.ndarray,
    positions: np.ndarray | None,
    mask: np.ndarray | None,
    block_rows: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(query index, scan position) of every row scoring >= ``tau`` (Q,) for its query."""
    hits_q: list[np.ndarray] = []
    hits_p: list[np.ndarray] = []
    for start, scores in _blocks(vectors, queries, positions, mask, block_rows):
        qi, pi = np.nonzero(scores >= tau[:, None])
        hits_q.append(qi)
        hits_p.append(pi + start)
    if not hits_q:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(hits_q).astype(np.int64), np.concatenate(hits_p).astype(np.int64)
