"""Retrieval and zero-shot classification metrics (pure numpy).

Conventions (docs/eval.md#metrics), shared with CLIP_benchmark and CLIP4Clip so numbers compare:

- A similarity matrix ``S`` is (n_texts, n_media); ``text_to_media[t]`` is the index of
  text t's one ground-truth media. A media may have several texts (Flickr30k/COCO: 5).
- text→media rank of text t:   rank_t = 1 + #{m : S[t, m] > S[t, gt(t)]}.
- media→text rank of media m:  best_m = max_{t ∈ C(m)} S[t, m] over m's captions C(m);
  rank_m = 1 + #{t ∉ C(m) : S[t, m] > best_m}. This is the CLIP paper convention: media m
  is a hit at K when *any* of its captions is in the top K (CLIP_benchmark's
  ``recall_at_k(...) > 0``). With one caption per media (MSR-VTT 1k-A, whose JSFusion test
  csv has exactly one sentence per video) both directions are the same formula on S and Sᵀ,
  which is what CLIP4Clip's ``compute_metrics(sim.T)`` reports as video→text.
- R@K = 100 · #{rank ≤ K} / n (percent, computed as ``100 * hits / n`` like CLIP4Clip);
  MdR = median rank; MnR = mean rank.

Ties: the ground truth is never located by equality or by its position in a sort, so a
ground truth that ties with another candidate gets the best rank of its tie group (it wins
ties). The number of ground truths that tie with at least one other candidate is reported
(``n_tied``) so an optimistic count is visible, together with the tie-aware expectation
under a uniformly random tie order (``expected_recall``, ``expected_mean_rank``): with h
candidates strictly higher and e others equal, P(rank ≤ K) = clip((K − h) / (e + 1), 0, 1)
and E[rank] = 1 + h + e/2. Without ties both equal the plain figures. CLIP_benchmark's ``torch.topk`` breaks ties
by position and CLIP4Clip's ``np.where(sorted == gt)`` counts a tied query several times;
both agree with this rule whenever no ground truth ties (see docs/eval.md).

Zero-shot classification (CLIP_benchmark ``zeroshot_classification.evaluate``): top-k
accuracy, the true class's rank computed by the same strict rule; mean per-class recall
(balanced accuracy) = mean over classes present in the labels of the per-class top-1 rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from clipsearch.errors import UsageError

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
_CHUNK_ROWS = 2048  # rows of S compared at once: bounds the (rows, n) boolean temporaries


@dataclass(frozen=True)
class RankMetrics:
    """Recall@K, median and mean rank over one direction's queries.

    ranks: (n,) int64, 1-based rank of each query's ground truth (best gt for media→text).
    recall: K -> percent of queries with rank ≤ K.
    hits: K -> number of queries with rank ≤ K (recall = 100 * hits / n).
    n_tied: queries whose ground truth scores exactly equal to some other candidate.
    ties: (n,) int64, per query the number of other candidates scoring exactly the gt's score.
    expected_recall / expected_mean_rank: the same figures expected under a random order
        among tied candidates (equal to recall / mean_rank when nothing ties).
    """

    ranks: np.ndarray
    recall: dict[int, float]
    hits: dict[int, int]
    median_rank: float
    mean_rank: float
    n_tied: int
    ties: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    expected_recall: dict[int, float] = field(default_factory=dict)
    expected_mean_rank: float = float("nan")

    @property
    def n(self) -> int:
        return int(self.ranks.shape[0])

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly summary (without the per-query ranks)."""
        out: dict[str, object] = {f"R@{k}": v for k, v in self.recall.items()}
        out.update(MdR=self.median_rank, MnR=self.mean_rank, n=self.n, n_tied=self.n_tied)
        out.update({f"R@{k} ties-random": v for k, v in self.expected_recall.items()})
        out["MnR ties-random"] = self.expected_mean_rank
        return out


@dataclass(frozen=True)
class RetrievalMetrics:
    """Both directions of one retrieval evaluation."""

    text_to_media: RankMetrics
    media_to_text: RankMetrics

    def to_dict(self) -> dict[str, object]:
        return {
            "text_to_media": self.text_to_media.to_dict(),
            "media_to_text": self.media_to_text.to_dict(),
        }


@dataclass(frozen=True)
class ClassificationMetrics:
    """Zero-shot classification quality, fractions in percent.

    top_k: K -> top-K accuracy in percent, or None when there are fewer than K classes
        (CLIP_benchmark reports NaN for top-5 with fewer than 5 classes).
    mean_per_class_recall: balanced accuracy in percent over classes present in the labels.
    per_class_recall: (C,) percent, NaN for classes with no sample.
    n_tied: samples whose true-class logit equals some other class's logit.
    """

    top_k: dict[int, float | None]
    mean_per_class_recall: float
    per_class_recall: np.ndarray
    n: int
    n_tied: int
    ranks: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {f"top{k}": v for k, v in self.top_k.items()}
        out.update(mean_per_class_recall=self.mean_per_class_recall, n=self.n, n_tied=self.n_tied)
        return out


def _check_scores(S: np.ndarray, name: str = "similarity matrix") -> np.ndarray:
    S = np.asarray(S)
    if S.ndim != 2 or S.shape[0] == 0 or S.shape[1] == 0:
        raise UsageError(f"{name} must be a non-empty 2-D array, got shape {S.shape}")
    if not np.issubdtype(S.dtype, np.floating):
        S = S.astype(np.float64)
    if not np.isfinite(S).all():
        raise UsageError(f"{name} contains NaN or infinite values; check the embeddings")
    return S


def _check_gt(gt: np.ndarray | Sequence[int], n_rows: int, n_cols: int, what: str) -> np.ndarray:
    gt = np.asarray(gt)
    if gt.shape != (n_rows,) or not np.issubdtype(gt.dtype, np.integer):
        raise UsageError(f"{what} must be {n_rows} integer indices, got shape {gt.shape}")
    if n_rows and (gt.min() < 0 or gt.max() >= n_cols):
        raise UsageError(f"{what} has indices outside [0, {n_cols})")
    return gt.astype(np.int64)


def text_to_media_ranks(
    S: np.ndarray, text_to_media: np.ndarray | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each text's ground-truth media: 1 + #media scoring strictly higher.

    S: (T, M) scores. text_to_media: (T,) int, the gt media of each text.
    Returns (ranks (T,) int64, ties (T,) int64: how many other media score exactly the
    gt's score).
    Raises UsageError on malformed input.
    """
    S = _check_scores(S)
    gt = _check_gt(text_to_media, S.shape[0], S.shape[1], "text_to_media")
    ranks = np.empty(S.shape[0], dtype=np.int64)
    tied = np.empty(S.shape[0], dtype=np.int64)
    for lo in range(0, S.shape[0], _CHUNK_ROWS):
        rows = S[lo : lo + _CHUNK_ROWS]  # (R, M)
        g = gt[lo : lo + _CHUNK_ROWS]
        gt_score = rows[np.arange(rows.shape[0]), g][:, None]  # (R, 1)
        ranks[lo : lo + rows.shape[0]] = 1 + (rows > gt_score).sum(axis=1)
        tied[lo : lo + rows.shape[0]] = (rows == gt_score).sum(axis=1) - 1
    return ranks, tied


def media_to_text_ranks(
    S: np.ndarray, text_to_media: np.ndarray | Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each media's best-ranked caption: 1 + #non-caption texts scoring higher.

    S: (T, M) scores (the same orientation as for text→media). text_to_media: (T,) int.
    Returns (ranks (M,) int64, ties (M,) int64: how many non-caption texts score exactly
    the best caption's score). Raises UsageError if a media has no caption (its rank
    would be undefined).
    """
    S = _check_scores(S)
    gt = _check_gt(text_to_media, S.shape[0], S.shape[1], "text_to_media")
    n_texts, n_media = S.shape
    n_captions = np.bincount(gt, minlength=n_media)
    if (n_captions == 0).any():
        missing = np.flatnonzero(n_captions == 0)
        raise UsageError(
            f"{missing.size} media have no caption (first: index {missing[0]}); "
            "drop them before computing media→text ranks"
        )
    gt_scores = S[np.arange(n_texts), gt]  # (T,)
    best = np.full(n_media, -np.inf, dtype=np.float64)
    np.maximum.at(best, gt, gt_scores.astype(np.float64))
    best = best.astype(S.dtype)  # exact: best is one of S's own values
    # Captions equal to the best are counted to subtract them from the tie count; no
    # caption scores strictly above the best, so the strict count needs no correction.
    n_gt_at_best = np.bincount(gt, weights=(gt_scores == best[gt]), minlength=n_media)
    higher = np.zeros(n_media, dtype=np.int64)
    equal = np.zeros(n_media, dtype=np.int64)
    for lo in range(0, n_texts, _CHUNK_ROWS):
        rows = S[lo : lo + _CHUNK_ROWS]  # (R, M)
        higher += (rows > best[None, :]).sum(axis=0)
        equal += (rows == best[None, :]).sum(axis=0)
    return 1 + higher, equal - n_gt_at_best.astype(np.int64)


def rank_metrics(
    ranks: np.ndarray, *, ks: Sequence[int] = DEFAULT_KS, tied: np.ndarray | None = None
) -> RankMetrics:
    """R@K (percent), MdR, MnR from 1-based ranks (and per-query tie counts, if known).

    Raises UsageError on empty ranks.
    """
    ranks = np.asarray(ranks, dtype=np.int64)
    if ranks.size == 0:
        raise UsageError("no queries to evaluate")
    n = int(ranks.size)
    ties = np.zeros(n, np.int64) if tied is None else np.asarray(tied, dtype=np.int64)
    hits = {int(k): int((ranks <= k).sum()) for k in ks}
    higher = ranks - 1
    expected = {
        int(k): float(np.clip((k - higher) / (ties + 1), 0.0, 1.0).sum()) * 100 / n for k in ks
    }
    return RankMetrics(
        ranks=ranks,
        # float(hits) * 100 / n: the exact expression CLIP4Clip's compute_metrics uses.
        recall={k: float(h) * 100 / n for k, h in hits.items()},
        hits=hits,
        # computed on 0-based positions, then +1, exactly as CLIP4Clip does, so the floats
        # agree to the last bit (mean(r) and mean(r - 1) + 1 can differ in rounding).
        median_rank=float(np.median(ranks - 1)) + 1,
        mean_rank=float(np.mean(ranks - 1)) + 1,
        n_tied=int((ties > 0).sum()),
        ties=ties,
        expected_recall=expected,
        expected_mean_rank=float(np.mean(higher + ties / 2)) + 1,
    )


def retrieval_metrics(
    S: np.ndarray,
    text_to_media: np.ndarray | Sequence[int],
    *,
    ks: Sequence[int] = DEFAULT_KS,
    S_media_to_text: np.ndarray | None = None,
) -> RetrievalMetrics:
    """Both directions from one (T, M) similarity matrix.

    S_media_to_text: optional separate (T, M) matrix for the media→text direction (a
    reranker normalises each direction over its own queries, so the two may differ).
    """
    t_ranks, t_tied = text_to_media_ranks(S, text_to_media)
    m_ranks, m_tied = media_to_text_ranks(
        S if S_media_to_text is None else S_media_to_text, text_to_media
    )
    return RetrievalMetrics(
        text_to_media=rank_metrics(t_ranks, ks=ks, tied=t_tied),
        media_to_text=rank_metrics(m_ranks, ks=ks, tied=m_tied),
    )


def classification_metrics(
    logits: np.ndarray,
    labels: np.ndarray | Sequence[int],
    *,
    ks: Sequence[int] = (1, 5),
) -> ClassificationMetrics:
    """Top-K accuracy and mean per-class recall from (N, C) logits and (N,) int labels.

    The true class's rank is 1 + #classes with a strictly higher logit (same tie rule as
    retrieval). Raises UsageError on malformed input.
    """
    logits = _check_scores(logits, "logits")
    labels = _check_gt(labels, logits.shape[0], logits.shape[1], "labels")
    ranks, tied = text_to_media_ranks(logits, labels)
    n, n_classes = logits.shape
    top_k: dict[int, float | None] = {
        int(k): (float((ranks <= k).sum()) * 100 / n if k <= n_classes else None) for k in ks
    }
    support = np.bincount(labels, minlength=n_classes)
    correct = np.bincount(labels, weights=(ranks == 1), minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, 100.0 * correct / support, np.nan)
    return ClassificationMetrics(
        top_k=top_k,
        mean_per_class_recall=float(np.nanmean(per_class)),
        per_class_recall=per_class,
        n=n,
        n_tied=int((tied > 0).sum()),
        ranks=ranks,
    )
