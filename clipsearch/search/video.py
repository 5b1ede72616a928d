"""Video scoring (frame pooling) and moment localization (docs/video.md).

A video is a set of frame vectors f_1..f_F (L2-normalised CLIP image embeddings, sampled
at times t_1..t_F). For a query vector t (text or image), s_i = t·f_i.

Pooling, i.e. one score per (query, video):

- ``mean`` — CLIP4Clip meanP (Luo et al. 2021, "CLIP4Clip", parameter-free mean pooling):
  v = normalise(Σ_i normalise(f_i) / F), score = t·v. The video vector v is what the
  catalog stores (`meanp`). Zero-shot ViT-B/32 MSR-VTT 1k-A R@1 ≈ 31.
- ``max`` — max_i s_i: the best single frame.
- ``softmax`` — training-free text-conditioned pooling, as X-Pool's attention (Gorti et al.
  2022) without learned projections, i.e. CLIP-Hitchhiker's query-scoring (Bain et al. 2022):
  w_i = softmax_i(s_i / τ), v_t = normalise(Σ_i w_i f_i), score = t·v_t. τ → ∞ gives
  ``mean``; τ → 0 gives ``max``; τ = 0.1 is Hitchhiker's choice (+1.1 R@1 over mean).

Many videos at once (the search engine rescoring its candidates) go through `FrameSets`:
all frames concatenated, (N, D), with per-video offsets; one matrix product gives every
s_i and per-video reductions use ``np.*.reduceat``, so there is no padding to the longest
video and no Python loop over videos.

Localization (`localize`), the moment inside a video that best matches the query:

1. Each frame owns the cell of time closest to it: cell edges at midpoints between
   neighbouring frame times, the outer edges half an interval beyond the first/last frame,
   clipped to [0, duration]. (For segment-centre sampling the cells are the segments.)
2. Smooth the curve in seconds, not frames (spacing may vary): Nadaraya–Watson with a
   Gaussian kernel, s̃_i = Σ_j K(t_i − t_j) s_j / Σ_j K(t_i − t_j), K(Δ) = exp(−Δ²/2σ²),
   σ = ``smooth_s``.
3. Contrast with the video's own baseline b = the 10th percentile of s̃ (its background
   level): h_i = (s̃_i − b) / (s̃_p − b), with p = argmax s̃ the peak.
4. The moment is the contiguous run of frames around p with h_i ≥ ½: full width at half
   maximum above the background. (A z-score against the mean, (s̃ − mean)/std with the run
   at z ≥ z_p/2, was the first design; it cuts moments short when the match fills much of
   the video, because the mean rises with it. The percentile baseline keeps the edges of
   a box-shaped match at its true edges.)
5. [start, end] = union of the run's cells, widened symmetrically around the peak's cell
   to at least ``min_len_s`` (clipped to [0, duration]). best_t = time of the run's frame
   with the highest raw s_i; score = mean raw s_i over the run.

With shot boundaries (`localize(..., shots=...)`) the moment is instead the shot whose
frames have the highest mean raw s_i (smoothing would blur across cuts). One frame, or a
curve without contrast (s̃_p − b < ``min_contrast``: nothing stands out, e.g. the whole video
matches), gives the whole video, best_t at the (first) best frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from clipsearch.errors import UsageError
from clipsearch.models.base import l2_normalize

PoolMethod = Literal["mean", "max", "softmax"]
POOL_METHODS = ("mean", "max", "softmax")
DEFAULT_TAU = 0.1
DEFAULT_SMOOTH_S = 1.0
DEFAULT_MIN_LEN_S = 2.0
DEFAULT_MIN_CONTRAST = 0.01  # cosine: below this the curve is flat (frame-to-frame noise)
BASELINE_PERCENTILE = 10.0


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
    method: PoolMethod = "mean",
    *,
    tau: float = DEFAULT_TAU,
) -> np.ndarray:
    """Score Q queries against V videos with one pooling method.

    Args:
        queries: (Q, D) or (D,) query vectors (normalised here).
        videos: the videos' frames as `FrameSets`.
        method: ``mean`` | ``max`` | ``softmax`` (see the module docstring).
        tau: softmax temperature (> 0), on the cosine scale.
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
    if not tau > 0:
        raise UsageError(f"softmax pooling needs tau > 0, got {tau}")
    counts = videos.counts
    logits = s / tau
    peak = np.repeat(np.maximum.reduceat(logits, starts, axis=1), counts, axis=1)
    e = np.exp(logits - peak)  # (Q, N), stable
    w = e / np.repeat(np.add.reduceat(e, starts, axis=1), counts, axis=1)  # softmax per video
    numer = np.add.reduceat(w * s, starts, axis=1)  # t·Σ w_i f_i, (Q, V)
    norms = np.empty_like(numer)
    for qi in range(q.shape[0]):  # ||Σ w_i f_i|| per video; Q is small (one query, usually)
        pooled = np.add.reduceat(w[qi][:, None] * f, starts, axis=0)  # (V, D)
        norms[qi] = np.linalg.norm(pooled, axis=1)
    return (numer / np.maximum(norms, 1e-12)).astype(np.float32)


def pool_scores(
    queries: np.ndarray,
    frames: np.ndarray,
    method: PoolMethod = "mean",
    *,
    tau: float = DEFAULT_TAU,
) -> np.ndarray:
    """Score Q queries against one video's (F, D) frames. Returns (Q,) float32."""
    return pool_scores_batch(queries, FrameSets.from_list([frames]), method, tau=tau)[:, 0]


@dataclass(frozen=True)
class Moment:
    """The best-matching stretch of a video."""

    start: float  # seconds
    end: float  # seconds
    best_t: float  # time of the best frame inside [start, end]
    score: float  # mean raw similarity of the frames in the moment


def frame_cells(timestamps: np.ndarray, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the time cell each frame stands for (see module docstring, step 1)."""
    t = np.asarray(timestamps, dtype=np.float64)
    if len(t) == 1:
        return np.array([0.0]), np.array([max(duration, t[0])])
    mid = (t[1:] + t[:-1]) / 2
    first = t[0] - (t[1] - t[0]) / 2
    last = t[-1] + (t[-1] - t[-2]) / 2
    starts = np.clip(np.concatenate([[first], mid]), 0.0, duration)
    ends = np.clip(np.concatenate([mid, [last]]), 0.0, duration)
    return starts, ends


def smooth(timestamps: np.ndarray, sims: np.ndarray, sigma_s: float) -> np.ndarray:
    """Gaussian (Nadaraya–Watson) smoothing of a curve sampled at uneven times; (F,)."""
    t = np.asarray(timestamps, dtype=np.float64)
    s = np.asarray(sims, dtype=np.float64)
    if sigma_s <= 0 or len(t) < 2:
        return s.copy()
    k = np.exp(-0.5 * ((t[:, None] - t[None, :]) / sigma_s) ** 2)  # (F, F)
    return (k @ s) / k.sum(axis=1)


def localize(
    timestamps: np.ndarray,
    sims: np.ndarray,
    *,
    duration: float,
    smooth_s: float = DEFAULT_SMOOTH_S,
    min_len_s: float = DEFAULT_MIN_LEN_S,
    min_contrast: float = DEFAULT_MIN_CONTRAST,
    shots: Sequence[tuple[float, float]] | None = None,
) -> Moment:
    """The moment of a video that best matches a query (rule in the module docstring).

    Args:
        timestamps: (F,) frame times in seconds (any order; sorted here).
        sims: (F,) query·frame similarities.
        duration: video length in seconds (moments are clipped to [0, duration]).
        smooth_s: Gaussian smoothing σ in seconds (0 disables).
        min_len_s: shortest moment returned (unless the video is shorter).
        min_contrast: peak minus baseline below which the whole video is the moment.
        shots: optional [(start, end)] shot boundaries: return the best shot instead.
    Raises:
        UsageError: no frames, or timestamps and sims of different lengths.
    """
    t = np.asarray(timestamps, dtype=np.float64).ravel()
    s = np.asarray(sims, dtype=np.float64).ravel()
    if len(t) == 0 or len(t) != len(s):
        raise UsageError(f"localize needs F >= 1 frames with one score each ({len(t)}, {len(s)})")
    order = np.argsort(t, kind="stable")
    t, s = t[order], s[order]
    duration = max(float(duration), float(t[-1]))
    if shots:
        moment = _best_shot(t, s, shots)
        if moment is not None:
            return moment
    smoothed = smooth(t, s, smooth_s)
    p = int(np.argmax(smoothed))
    base = float(np.percentile(smoothed, BASELINE_PERCENTILE))
    if len(t) == 1 or smoothed[p] - base < min_contrast:
        best = int(np.argmax(s))
        return Moment(0.0, duration, float(t[best]), float(s.mean()))
    half = (smoothed[p] + base) / 2
    lo, hi = p, p
    while lo > 0 and smoothed[lo - 1] >= half:
        lo -= 1
    while hi < len(t) - 1 and smoothed[hi + 1] >= half:
        hi += 1
    starts, ends = frame_cells(t, duration)
    start, end = float(starts[lo]), float(ends[hi])
    start, end = _widen(start, end, (starts[p] + ends[p]) / 2, min_len_s, duration)
    best = lo + int(np.argmax(s[lo : hi + 1]))
    return Moment(start, end, float(t[best]), float(s[lo : hi + 1].mean()))


def _widen(start: float, end: float, centre: float, min_len: float, duration: float):
    """Grow [start, end] to min_len around ``centre``, inside [0, duration]."""
    if end - start >= min_len:
        return start, end
    length = min(min_len, duration)
    start = min(start, max(0.0, centre - length / 2))
    end = max(end, start + length)
    if end > duration:
        end, start = duration, max(0.0, duration - length)
    return float(start), float(end)


def _best_shot(t: np.ndarray, s: np.ndarray, shots) -> Moment | None:
    best: Moment | None = None
    for a, b in shots:
        inside = (t >= a) & (t < b)
        if not inside.any():
            continue
        mean = float(s[inside].mean())
        if best is None or mean > best.score:
            i = int(np.flatnonzero(inside)[np.argmax(s[inside])])
            best = Moment(float(a), float(b), float(t[i]), mean)
    return best
