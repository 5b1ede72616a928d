"""Video scoring: one score per (query, video) from the video's frame vectors (docs/video.md).

A video is a set of frame vectors f_1..f_F (L2-normalised CLIP image embeddings, sampled
at times t_1..t_F). For a query vector t (text or image), s_i = t·f_i.

Pooling methods:

- ``peak`` (the default) — the video's best-matching part, softly: the frame scores averaged
  under a softmax over the frames at CLIP's temperature, score = Σ_i p_i s_i with
  p_i = softmax_i(s_i / τ), τ = 0.01 = 1/100, the logit scale CLIP-family models train to
  (OpenAI CLIP and OpenCLIP end at the clamp, 100), so p_i is the probability a trained
  model gives frame i of being the match among the video's frames. Between the mean and
  the best of the frame scores, close to the best few; never above max_i s_i, so the
  search engine's stage-1 bound stays exact. Measured against the others in
  docs/video.md: within two queries of ``max`` (of 94) on picture-query moment sets,
  and 4-6 points more often right in simulated long noisy videos, where ``max`` favours
  long videos (more frames, a higher maximum of the noise).
- ``mean`` — CLIP4Clip meanP (Luo et al. 2021, "CLIP4Clip", parameter-free mean pooling):
  v = normalise(Σ_i normalise(f_i) / F), score = t·v. The video vector v is what the
  catalog stores (`meanp`). Zero-shot ViT-B/32 MSR-VTT 1k-A R@1 ≈ 31: right for
  caption-per-clip benchmarks, wrong for finding one moment in a long video (the rest of
  the video dilutes it).
- ``max`` — max_i s_i: the best single frame.
- ``softmax`` — training-free text-conditioned pooling, as X-Pool's attention (Gorti et al.
  2022) without learned projections, i.e. CLIP-Hitchhiker's query-scoring (Bain et al. 2022):
  w_i = softmax_i(s_i / τ), v_t = normalise(Σ_i w_i f_i), score = t·v_t. τ → ∞ gives
  ``mean``; τ → 0 gives ``max``; τ = 0.1 is Hitchhiker's choice (+1.1 R@1 over mean).

Many videos at once (the search engine rescoring its candidates) go through `FrameSets`:
all frames concatenated, (N, D), with per-video offsets; one matrix product gives every
s_i and per-video reductions use ``np.*.reduceat``, so there is no padding to the longest
video and no Python loop over videos.

Where inside a video the query matches (moments) is `clipsearch.search.moments`;
`Moment`, `localize` and `frame_cells` are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clipsearch.errors import UsageError
from clipsearch.models.base import l2_normalize
from clipsearch.search.choices import DEFAULT_POOLING, POOL_METHODS, PoolMethod
from clipsearch.search.moments import Moment, find_moments, frame_cells, localize

__all__ = [
    "DEFAULT_POOLING",
    "PEAK_TAU",
    "POOL_METHODS",
    "FrameSets",
    "Moment",
    "PoolMethod",
    "default_tau",
    "find_moments",
    "frame_cells",
    "localize",
    "meanp",
    "pool_scores",
    "pool_scores_batch",
]

DEFAULT_TAU = 0.1  # softmax (X-Pool) temperature, Hitchhiker's choice
PEAK_TAU = 0.01  # peak temperature: 1 / the logit scale trained CLIP models reach (100)


def default_tau(method: str) -> float:
    """The temperature a pooling method uses when none is given (``peak`` 0.01, else 0.1)."""
    return PEAK_TAU if method == "peak" else DEFAULT_TAU


def meanp(frames: np.ndarray) -> np.ndarray:
    """CLIP4Clip meanP video vector: normalise(Σ_i normalise(f_i) / F).

    Args: frames (F, D), F >= 1. Returns: (D,) float32, unit norm.
    Raises: UsageError if F == 0.
    """
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim != 2 or frames.shape[0] == 0:
        raise UsageError(f"meanp needs a (F, D) matrix with F >= 1, got shape {frames.shape}")
    return l2_normalize(l2_normalize(frames).mean(axis=0))


@dataclass(frozen=True)
class FrameSets:
    """Frame vectors of V videos, concatenated: video v owns ``vectors[offsets[v]:offsets[v+1]]``.

    Build with `from_list`, `from_counts` (rows already grouped by video, e.g. a catalog
    query ordered by item) or `from_padded`. Every video has at least one frame.
    """

    vectors: np.ndarray  # (N, D) float32, unit rows
    offsets: np.ndarray  # (V + 1,) int64, offsets[0] = 0, offsets[-1] = N

    @classmethod
    def from_counts(cls, vectors: np.ndarray, counts: Sequence[int]) -> FrameSets:
        counts = np.asarray(counts, dtype=np.int64)
        if counts.ndim != 1 or len(counts) == 0 or (counts < 1).any():
            raise UsageError("every video needs at least one frame vector")
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != counts.sum():
            raise UsageError(
                f"{vectors.shape[0] if vectors.ndim == 2 else '?'} frame vectors for "
                f"{int(counts.sum())} counted frames"
            )
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return cls(l2_normalize(vectors), offsets)

    @classmethod
    def from_list(cls, frames: Sequence[np.ndarray]) -> FrameSets:
        frames = [np.asarray(f, dtype=np.float32).reshape(-1, np.shape(f)[-1]) for f in frames]
        if not frames:
            raise UsageError("no videos to score")
        return cls.from_counts(np.concatenate(frames), [len(f) for f in frames])

    @classmethod
    def from_padded(cls, frames: np.ndarray, mask: np.ndarray) -> FrameSets:
        """(V, F, D) padded frames and a (V, F) bool mask of real frames."""
        frames, mask = np.asarray(frames), np.asarray(mask, dtype=bool)
        return cls.from_counts(frames[mask], mask.sum(axis=1))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def video(self, v: int) -> np.ndarray:
        """(F_v, D) frames of video ``v``."""
        return self.vectors[self.offsets[v] : self.offsets[v + 1]]


def pool_scores_batch(
    queries: np.ndarray,
    videos: FrameSets,
    method: PoolMethod = DEFAULT_POOLING,
    *,
    tau: float | None = None,
) -> np.ndarray:
    """Score Q queries against V videos with one pooling method.

    Args:
        queries: (Q, D) or (D,) query vectors (normalised here).
        videos: the videos' frames as `FrameSets`.
        method: ``peak`` | ``mean`` | ``max`` | ``softmax`` (see the module docstring).
        tau: temperature (> 0) of ``peak`` and ``softmax``, on the cosine scale; None: the
            method's default (`default_tau`: 0.01 for ``peak``, 0.1 for ``softmax``).
    Returns:
        (Q, V) float32 scores (cosines, in [-1, 1]).
    Raises:
        UsageError: unknown method, tau <= 0, or dimension mismatch.
    """
    if method not in POOL_METHODS:
        raise UsageError(f"unknown pooling {method!r}; use one of {', '.join(POOL_METHODS)}")
    q = l2_normalize(np.atleast_2d(queries))  # (Q, D)
    f, starts = videos.vectors, videos.offsets[:-1]  # (N, D), (V,)
    if q.shape[1] != f.shape[1]:
        raise UsageError(f"query dim {q.shape[1]} != frame dim {f.shape[1]}")
    if method == "mean":
        v = l2_normalize(np.add.reduceat(f, starts, axis=0))  # (V, D); /F is undone by normalise
        return q @ v.T
    s = q @ f.T  # (Q, N)
    if method == "max":
        return np.maximum.reduceat(s, starts, axis=1)
    if tau is None:
        tau = default_tau(method)
    if not tau > 0:
        raise UsageError(f"{method} pooling needs tau > 0, got {tau}")
    counts = videos.counts
    logits = s / tau
    top = np.repeat(np.maximum.reduceat(logits, starts, axis=1), counts, axis=1)
    e = np.exp(logits - top)  # (Q, N), stable
    w = e / np.repeat(np.add.reduceat(e, starts, axis=1), counts, axis=1)  # softmax per video
    numer = np.add.reduceat(w * s, starts, axis=1)  # Σ w_i s_i = t·Σ w_i f_i, (Q, V)
    if method == "peak":
        return numer.astype(np.float32)
    norms = np.empty_like(numer)
    for qi in range(q.shape[0]):  # ||Σ w_i f_i|| per video; Q is small (one query, usually)
        pooled = np.add.reduceat(w[qi][:, None] * f, starts, axis=0)  # (V, D)
        norms[qi] = np.linalg.norm(pooled, axis=1)
    return (numer / np.maximum(norms, 1e-12)).astype(np.float32)


def pool_scores(
    queries: np.ndarray,
    frames: np.ndarray,
    method: PoolMethod = DEFAULT_POOLING,
    *,
    tau: float | None = None,
) -> np.ndarray:
    """Score Q queries against one video's (F, D) frames. Returns (Q,) float32."""
    return pool_scores_batch(queries, FrameSets.from_list([frames]), method, tau=tau)[:, 0]
