"""Choosing a backend and tuning it to a recall target, measured against exact search.

Backend choice follows autofaiss's published heuristics (criteo/autofaiss,
``autofaiss/external/optimize.py``: ``get_optimal_index_keys_v2``,
``get_optimal_nb_clusters``, ``get_optimal_quantization``; they implement the FAISS wiki's
"Guidelines to choose an index"), reimplemented here in a few lines rather than depending
on autofaiss: it pins old numpy/pyarrow/fsspec versions and pulls Spark-oriented
dependencies, and we need only its arithmetic. Differences, and why:

- below ``flat_threshold`` vectors (autofaiss: 1000; ours 50k at 512-d) we answer
  exactly: the blocked bf16 scan takes ≤ ~5 ms there, has recall 1 and needs no build;
- HNSW is chosen when ``4·n·(d + 2·M)`` bytes fit the memory budget (autofaiss's
  ``m_hnsw = floor((budget/(4n) − d)/2)``, M capped at 32), then IVF-Flat, then
  OPQ+IVF+PQ sized to the budget — as autofaiss, except that IVF-Flat is also tried from
  1M vectors on when it fits, and the list is a list: `candidate_backends` falls through
  to the next one when the measured recall misses the target;
- autofaiss tunes nprobe/efSearch to a *latency* budget; we tune to a *recall* target:
  raise the parameter until recall@10 against exact search on sample queries reaches
  the target (or a cap, and report what was reached). Recall is always measured.

Sample queries: a new index is built without a random sample of its rows (up to twice
the tuning queries, at most a fifth), measured with those rows as queries — a third as
they are, a third each perturbed by noise of relative norm 0.5 and 1.0 (cosine ≈ 0.9 /
0.7 to their source) — against exact search over the indexed rows, and only then are
the held-out rows added (`held_out_queries`). The sample is split in two disjoint halves
(`tune_and_check`): the parameter is raised until the *tuning* half reaches the target,
and the recall stored (what ``index-info`` shows) is measured on the *check* half, which
chose nothing — a parameter picked as the first to reach the target on some queries
overstates recall on any others. Re-tuning an index that holds every row uses stored
rows leave-one-out instead (`tuning_queries`), split the same way; leave-one-out is
slightly optimistic for graph indexes (the query's own node guides the search).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from clipsearch.errors import UsageError
from clipsearch.index.exact import Scan, max_norm
from clipsearch.index.rows import VectorRows
from clipsearch.models.base import l2_normalize

FLAT_THRESHOLD = 50_000
"""Below this many 512-d vectors the exact backend is used (scaled by 512/dim). Measured
(benchmarks/ann.py, 2 cores): the exact bf16 scan answers one query in ~10 ms at 100k and
~93 ms at 1M, so ~5 ms — the ANN latency target — at 50k, where HNSW32 builds in seconds."""

IVF_FLAT_THRESHOLD = 1_000_000
"""autofaiss: not-quantized IVF only below this many vectors."""

EF_SEARCH_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)
NPROBE_LADDER = (
    1,
    2,
    3,
    4,
    6,
    8,
    12,
    16,
    24,
    32,
    48,
    64,
    96,
    128,
    192,
    256,
    384,
    512,
    768,
    1024,
    1536,
    2048,
    3072,
    4096,
)
K_FACTOR_LADDER = (8, 16, 32, 64)
PERTURBATION = 0.75  # relative noise of perturbed leave-one-out queries (re-tuning)
HELD_OUT_NOISE = (0.0, 0.5, 1.0)  # relative noise levels of held-out tuning queries


def default_memory_budget() -> int:
    """A quarter of physical RAM (bytes); 4 GiB when it cannot be read."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4)
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def nb_clusters(n: int) -> int:
    """IVF list count: autofaiss's first choice (2^round(log2(4·√n)) below 1M, 16384 below
    10M, 65536 below 300M, 2^17 beyond), capped at n/39 so every k-means centroid gets
    the 39 training points FAISS asks for."""
    if n < 1_000_000:
        nlist = 2 ** round(math.log2(max(1.0, 4 * math.sqrt(n))))
    elif n < 10_000_000:
        nlist = 16_384
    elif n < 300_000_000:
        nlist = 65_536
    else:
        nlist = 2**17
    cap = max(1, n // 39)
    while nlist > cap:
        nlist //= 2
    return max(1, nlist)


def quantized_factory(n: int, dim: int, memory_budget_bytes: int) -> str:
    """autofaiss ``get_optimal_quantization``: the largest PQ code (256, 128, … bytes) whose
    compression ratio 4·d/(m + 8) meets 4·n·d/budget; OPQ rotates to y = (min(d//m, 6)+1)·m
    dims; the coarse quantizer is HNSW32 from 1000 lists on."""
    target_ratio = 4.0 * n * dim / max(1, memory_budget_bytes)
    nlist = nb_clusters(n)
    for m in (256, 128, 64, 48, 32, 24, 16, 8, 4):
        if m >= dim or (4 * dim) / (m + 8) < target_ratio:
            continue
        y = (min(dim // m, 6) + 1) * m
        coarse = f"IVF{nlist}" if nlist < 1000 else f"IVF{nlist}_HNSW32"
        return f"OPQ{m}_{y},{coarse},PQ{m}x8"
    coarse = f"IVF{nlist}" if nlist < 1000 else f"IVF{nlist}_HNSW32"
    return f"OPQ4_{5 * 4},{coarse},PQ4x8"  # the tightest code autofaiss knows


def candidate_backends(
    n: int,
    dim: int,
    memory_budget_bytes: int | None = None,
    *,
    flat_threshold: int | None = None,
) -> list[str]:
    """Backends to try for ``n`` vectors of ``dim`` within the budget, best first:
    ["exact"], or FAISS factory strings in autofaiss's order (HNSW if it fits, IVF-Flat if
    it fits, then OPQ+IVF+PQ sized to the budget). A builder moves down the list when the
    one above cannot reach the recall target (measured: HNSW32 built with FAISS's default
    efConstruction plateaus at recall@10 ≈ 0.91 on 1M strongly clustered vectors, where
    IVF-Flat reaches 0.96; benchmarks/ann.py).
    Unlike autofaiss, IVF-Flat stays a candidate from 1M vectors on when it fits.
    """
    if n < 0 or dim <= 0:
        raise UsageError(f"choose_backend needs n >= 0 and dim > 0, got n={n}, dim={dim}")
    budget = default_memory_budget() if memory_budget_bytes is None else memory_budget_bytes
    threshold = flat_threshold if flat_threshold is not None else FLAT_THRESHOLD * 512 // dim
    exact_bytes = 4 * n * dim  # fp16 rows + bf16 scan copy
    if n < threshold and exact_bytes <= budget:
        return ["exact"]
    out = []
    m_hnsw = math.floor((budget / (4 * max(n, 1)) - dim) / 2)
    if m_hnsw >= 8:
        out.append(f"HNSW{min(m_hnsw, 32)}")
    nlist = nb_clusters(n)
    if 4 * n * dim + 8 * n + 4 * nlist * dim <= budget:
        out.append(f"IVF{nlist},Flat")
    out.append(quantized_factory(n, dim, budget))
    return out


def choose_backend(
    n: int,
    dim: int,
    memory_budget_bytes: int | None = None,
    *,
    flat_threshold: int | None = None,
) -> str:
    """ "exact" or the first FAISS factory string to try for ``n`` vectors of ``dim``.

    n, dim: collection size; memory_budget_bytes: RAM the index may use (default: a
    quarter of physical RAM); flat_threshold: exact below this many vectors (default
    `FLAT_THRESHOLD` scaled by 512/dim). See `candidate_backends` for the whole list.
    Raises UsageError for negative sizes.
    """
    return candidate_backends(n, dim, memory_budget_bytes, flat_threshold=flat_threshold)[0]


@dataclass(frozen=True)
class FactoryShape:
    """What a factory string builds, as far as tuning and persistence care."""

    family: str  # "flat", "hnsw", "ivf", "other"
    nlist: int = 0  # IVF lists
    hnsw_m: int = 0  # HNSW links (graph index or coarse quantizer)
    lossy: bool = False  # codes are compressed: candidates need exact rescoring


_EXACT_CODES = re.compile(r"^(Flat|HNSW\d+(_Flat)?|HNSW\d+,Flat|IVF\d+(_HNSW\d+)?,Flat)$")


def factory_shape(factory: str) -> FactoryShape:
    """Parse the parts of a FAISS factory string that matter here."""
    lossy = _EXACT_CODES.match(factory) is None
    ivf = re.search(r"IVF(\d+)", factory)
    hnsw = re.search(r"HNSW(\d+)", factory)
    if factory == "Flat":
        return FactoryShape("flat")
    if ivf:
        return FactoryShape(
            "ivf", nlist=int(ivf.group(1)), hnsw_m=int(hnsw.group(1)) if hnsw else 0, lossy=lossy
        )
    if hnsw:
        return FactoryShape("hnsw", hnsw_m=int(hnsw.group(1)), lossy=lossy)
    return FactoryShape("other", lossy=lossy)


# -- recall measurement ---------------------------------------------------------------------
@dataclass(frozen=True)
class TuningQueries:
    """Sample queries and, per query, the id to leave out (-1: none)."""

    queries: np.ndarray  # (m, D) float32, unit norm
    exclude: np.ndarray  # (m,) int64

    def __len__(self) -> int:
        return len(self.queries)

    def take(self, rows: np.ndarray) -> TuningQueries:
        """The queries at ``rows``."""
        return TuningQueries(queries=self.queries[rows], exclude=self.exclude[rows])


def tune_and_check(m: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint halves of ``m`` sample queries: (tuning rows, check rows), alternating, so
    each half has every kind of query the sample interleaves. With fewer than 2 queries
    both are all of them (nothing to split)."""
    rows = np.arange(m)
    if m < 2:
        return rows, rows
    return rows[0::2], rows[1::2]


def held_out_positions(n: int, n_queries: int, *, seed: int = 0) -> np.ndarray:
    """Ascending row positions to hold out of a new index while it is tuned: up to
    ``n_queries``, at most a fifth of the rows, none below 50 rows."""
    m = min(n_queries, n // 5) if n >= 50 else 0
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=m, replace=False)) if m else np.empty(0, np.int64)


def held_out_queries(rows: VectorRows, positions: np.ndarray, *, seed: int = 0) -> TuningQueries:
    """Queries from rows kept out of the index while tuning, in thirds: as they are, and
    perturbed by noise of relative norm 0.5 and 1.0 (cosine ≈ 0.9 and 0.7 to their row:
    real queries, text ones above all, rarely sit on a stored point). Nothing to exclude."""
    base = rows.rows_fp32(positions)
    base = l2_normalize(base)
    rng = np.random.default_rng(seed + 1)
    noise = rng.standard_normal(base.shape).astype(np.float32)
    noise = l2_normalize(noise)
    level = np.array(HELD_OUT_NOISE, dtype=np.float32)[np.arange(len(base)) % len(HELD_OUT_NOISE)]
    queries = base + level[:, None] * noise
    queries = l2_normalize(queries)
    return TuningQueries(queries=queries, exclude=np.full(len(queries), -1, dtype=np.int64))


def tuning_queries(rows: VectorRows, *, n_queries: int = 500, seed: int = 0) -> TuningQueries:
    """For an index that already holds every row: half leave-one-out stored vectors (the
    query's own row is dropped from truth and answer), half perturbed stored vectors.
    Slightly optimistic for graph indexes (the query's own node guides the search), so a
    new index is tuned on held-out rows instead (`held_out_queries`)."""
    n = len(rows)
    m = min(n_queries, n)
    rng = np.random.default_rng(seed)
    pos = np.sort(rng.choice(n, size=m, replace=False)) if m else np.empty(0, np.int64)
    base = rows.rows_fp32(pos) if m else np.empty((0, rows.dim), np.float32)
    n_loo = (m + 1) // 2
    noise = rng.standard_normal((m - n_loo, rows.dim)).astype(np.float32)
    perturbed = l2_normalize(base[n_loo:]) + PERTURBATION * l2_normalize(noise)
    queries = np.concatenate([base[:n_loo], perturbed]).astype(np.float32)
    queries = l2_normalize(queries)
    exclude = np.full(m, -1, dtype=np.int64)
    exclude[:n_loo] = rows.ids[pos[:n_loo]]
    return TuningQueries(queries=queries, exclude=exclude)


SearchFn = Callable[[np.ndarray, int], np.ndarray]
"""(queries (m, D), k) -> ids (m, k); -1 for none."""


def drop_excluded(ids: np.ndarray, exclude: np.ndarray, k: int) -> np.ndarray:
    """Remove each row's excluded id from (m, k+1) answers and keep the first k."""
    out = np.full((len(ids), k), -1, dtype=np.int64)
    for i, (row, ex) in enumerate(zip(ids, exclude, strict=True)):
        kept = row[row != ex] if ex >= 0 else row
        out[i, : min(k, len(kept))] = kept[:k]
    return out


def exact_truth(
    rows: VectorRows, sample: TuningQueries, k: int = 10, *, mask: np.ndarray | None = None
) -> np.ndarray:
    """(m, k) exact top-k ids of the sample queries (fp32 scan of ``rows``, restricted to
    the rows where ``mask`` is True when given)."""
    scan = Scan(rows, mirror=None, r_max=0.0, n_max=max_norm(rows.vectors))
    found = scan.search(sample.queries, k + 1, mask=mask).ids
    return drop_excluded(found, sample.exclude, k)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / |truth| (ids -1 ignored)."""
    hits = 0
    total = 0
    for f, t in zip(found, truth, strict=True):
        t = t[t >= 0]
        total += len(t)
        hits += len(np.intersect1d(f[f >= 0], t))
    return hits / total if total else 1.0


def recall_with_ties(
    found_ids: np.ndarray,
    found_scores: np.ndarray,
    truth_scores: np.ndarray,
    *,
    tol: float = 1e-5,
) -> float:
    """recall@k where k is the width of ``truth_scores`` ((m, k) exact scores, best first,
    -inf for none): an answer is right when its score reaches the k-th exact score, so
    among rows that score the same (duplicates) any is a right answer. ``found_scores``
    must be exact inner products (flat-stored indexes: HNSW, IVF-Flat, FLAT)."""
    k = truth_scores.shape[1]
    hits = total = 0
    for ids, scores, truth in zip(found_ids, found_scores, truth_scores, strict=True):
        want = truth[np.isfinite(truth)]
        total += len(want)
        if len(want):
            right = (ids[:k] >= 0) & (scores[:k] >= want[-1] - tol)
            hits += min(len(want), int(right.sum()))
    return hits / total if total else 1.0


def measure_recall(
    search: SearchFn, sample: TuningQueries, truth: np.ndarray, k: int = 10
) -> float:
    """recall@k of ``search`` on the sample against ``truth``."""
    found = drop_excluded(search(sample.queries, k + 1), sample.exclude, k)
    return recall_at_k(found, truth)


def raise_until(
    values: Sequence[int],
    evaluate: Callable[[int], float],
    target: float,
) -> tuple[int, float, list[tuple[int, float]]]:
    """Try ``values`` in increasing order until ``evaluate(v) >= target``.

    Returns (chosen value, its recall, history). If no value reaches the target the last
    (largest) value is returned with the recall it achieved: the cap.
    """
    history: list[tuple[int, float]] = []
    for v in values:
        r = evaluate(v)
        history.append((v, r))
        if r >= target:
            return v, r, history
    if not history:
        raise UsageError("no parameter values to tune")
    return history[-1][0], history[-1][1], history
