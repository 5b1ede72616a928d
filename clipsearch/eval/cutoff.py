"""How well a relevance cut-off separates the relevant results of each query from the rest.

Given every query's scores over a whole gallery, its ground-truth relevant items, and a
score threshold per query, an item is "shown" when its score is ≥ the query's threshold.
Per query with at least one relevant item:

    precision = |shown ∩ relevant| / |shown|   (0 when nothing is shown: an empty answer
                                                to a query that has answers is a failure)
    recall    = |shown ∩ relevant| / |relevant|
    F1        = 2PR / (P + R)

averaged over those queries (macro). Queries with no relevant item are scored apart: how
many items they show (every one is junk) and how often they show nothing.

`cut_thresholds` gives the thresholds of the methods compared in docs/search.md: no cut,
a fixed global score (ente uses 0.175), the best global score in hindsight (an oracle:
the single threshold with the best mean F1 on these very queries), Otsu's split of each
query's scores, and the per-query background cut of `clipsearch.search.relevance`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipsearch.search.classify import auto_threshold
from clipsearch.search.relevance import MAD_TO_SIGMA, MIN_SPREAD, background_threshold, z_for


@dataclass(frozen=True)
class CutQuality:
    """Mean quality of a cut over a query set (see the module docstring)."""

    precision: float  # macro mean over queries with relevant items
    recall: float
    f1: float
    shown: float  # mean number of items shown per query with relevant items
    junk_shown: float  # mean items shown per query without any relevant item
    empty_ok: float  # fraction of queries without relevant items that show nothing
    queries: int  # queries with relevant items
    empty_queries: int  # queries without

    def to_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(self).items()}


def cut_quality(scores: np.ndarray, relevant: np.ndarray, thresholds: np.ndarray) -> CutQuality:
    """Quality of per-query ``thresholds`` (Q,) for ``scores`` (Q, N) and the boolean
    ground truth ``relevant`` (Q, N). A threshold of -inf shows everything."""
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.shape != relevant.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and relevant {relevant.shape} must be (Q, N)")
    shown = scores >= np.asarray(thresholds, dtype=np.float64).reshape(-1, 1)  # (Q, N)
    n_rel = relevant.sum(1)
    n_shown = shown.sum(1)
    tp = (shown & relevant).sum(1)
    has = n_rel > 0
    precision = np.divide(tp, n_shown, out=np.zeros(len(tp)), where=n_shown > 0)
    recall = np.divide(tp, n_rel, out=np.zeros(len(tp)), where=has)
    f1 = np.divide(
        2 * precision * recall,
        precision + recall,
        out=np.zeros(len(tp)),
        where=(precision + recall) > 0,
    )
    empty = ~has

    def mean(x: np.ndarray) -> float:
        return float(x.mean()) if len(x) else float("nan")

    return CutQuality(
        precision=mean(precision[has]),
        recall=mean(recall[has]),
        f1=mean(f1[has]),
        shown=mean(n_shown[has].astype(np.float64)),
        junk_shown=mean(n_shown[empty].astype(np.float64)),
        empty_ok=mean((n_shown[empty] == 0).astype(np.float64)),
        queries=int(has.sum()),
        empty_queries=int(empty.sum()),
    )


def background_thresholds(
    scores: np.ndarray,
    *,
    sample: int = 4096,
    false_alarms: float = 1.0,
    z: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The per-query cut of `clipsearch.search.relevance` for every row of ``scores``
    (Q, N): μ + z·σ over a fixed random sample of ``sample`` gallery columns, with
    z = z(N) for ``false_alarms`` (or the given ``z``)."""
    n = scores.shape[1]
    cols = np.arange(n)
    if n > sample:
        cols = np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
    zz = z_for(n, false_alarms) if z is None else z
    return np.array([background_threshold(row[cols], z=zz) for row in scores])


def linear_background_thresholds(scores: np.ndarray, *, false_alarms: float = 1.0) -> np.ndarray:
    """The background cut without the −ln(1 − s) scale: μ + z(N)·σ of the raw scores
    (median and MAD, σ ≥ MIN_SPREAD), for comparison."""
    z = z_for(scores.shape[1], false_alarms)
    out = []
    for row in np.asarray(scores, dtype=np.float64):
        mu = float(np.median(row))
        sigma = max(MAD_TO_SIGMA * float(np.median(np.abs(row - mu))), MIN_SPREAD)
        out.append(mu + z * sigma)
    return np.asarray(out)


def otsu_thresholds(scores: np.ndarray) -> np.ndarray:
    """Otsu's two-group split of each query's scores (+inf where the scores do not split:
    nothing shown)."""
    out = []
    for row in scores:
        t, _ = auto_threshold(row)
        out.append(np.inf if t is None else t)
    return np.asarray(out)


def oracle_global_threshold(
    scores: np.ndarray, relevant: np.ndarray, *, grid: int = 201
) -> tuple[float, CutQuality]:
    """The single threshold with the best mean F1 on these queries (hindsight: an upper
    bound for any global threshold), searched over ``grid`` quantiles of the scores."""
    qs = np.quantile(scores, np.linspace(0.5, 1.0, grid))
    best: tuple[float, CutQuality] | None = None
    for t in np.unique(qs):
        quality = cut_quality(scores, relevant, np.full(len(scores), t))
        if best is None or quality.f1 > best[1].f1:
            best = (float(t), quality)
    assert best is not None
    return best


def cut_thresholds(
    scores: np.ndarray, relevant: np.ndarray, *, fixed: float = 0.175
) -> dict[str, np.ndarray]:
    """Per-query thresholds of every method compared in docs/search.md, by name."""
    q = len(scores)
    oracle, _ = oracle_global_threshold(scores, relevant)
    return {
        "none": np.full(q, -np.inf),
        f"fixed {fixed:g}": np.full(q, fixed),
        f"best global ({oracle:.3f}, oracle)": np.full(q, oracle),
        "otsu per query": otsu_thresholds(scores),
        "auto α=0.1": background_thresholds(scores, false_alarms=0.1),
        "auto α=1 (default)": background_thresholds(scores, false_alarms=1.0),
        "auto α=10": background_thresholds(scores, false_alarms=10.0),
        "auto z=3": background_thresholds(scores, z=3.0),
        "auto α=1, raw scores (no −ln(1−s))": linear_background_thresholds(scores),
    }
