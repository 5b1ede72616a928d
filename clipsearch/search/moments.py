"""Moments inside a video: where a query matches, from its frame-score curve.

A video was sampled at times t_1 < … < t_F; for a query, s_i is frame i's similarity. A
moment is a stretch [start, end] of the video whose frames match the query best.

**The curve is segmented, then the best segment is the moment.** Content inside a shot or
scene changes little, so s is close to piecewise constant plus noise. We fit that model by
penalised least squares, solved exactly by dynamic programming (optimal partitioning,
Jackson et al. 2005; O(F²), a few ms for F = 512):

    minimise  Σ_segments Σ_{i ∈ seg} (s_i − mean_seg)²  +  Σ_changepoints β_c

- β = max(3 σ̂² ln F, (ρ·C)²): a change must stand out from the noise — the modified BIC
  penalty for a mean-shift changepoint (Zhang & Siegmund 2007; the default of R's
  changepoint package; plain BIC's 2 σ̂² ln F split scenes whose score varies as things
  move inside them), with σ̂² the noise variance estimated
  from robust (MAD) spreads of lag-1 and lag-2 differences, which ignore the jumps and
  allow for neighbouring frames being correlated (`noise_variance`) — *and* be material:
  at least ρ = 5 % of the curve's range C = max s − min s. Without the second term a
  slow drift inside one scene (a zoom, a pan) on a nearly noiseless curve would split the
  scene.
- β_c = β/4 where a shot boundary (a cut found while decoding) lies between frames c−1
  and c: content changes at cuts, so the score may change there on weaker evidence.

The segment with the highest mean s is the first moment. Where the curve has no change
at all (one segment) the moment is the whole video: the match fills it, or nothing in
it stands out. Several moments: segments whose mean is at least half-way from the
background (the 20th percentile of the frame scores: a match may fill most of a video, so
not the median) to the best segment's mean are *above background*; each maximal run of
adjacent above-background segments is one peak of the curve and gives one moment, its
best segment (so a moment's shoulder is never reported as a second moment). Moments are
ordered by score, the first is the best, and they never overlap.

**Edges.** Frame i stands for the cell of time closest to it (edges at midpoints between
neighbouring frames; the first cell starts at 0, the last ends at the video's end). A
segment covers its frames' cells, except that an edge snaps to a shot boundary lying
between the segment's edge frame and its neighbour outside (the start of the shot holding
the first frame, the end of the shot holding the last; a frame exactly on a boundary is the
first frame of the new shot). A moment shorter than ``min_len_s`` is widened around its
centre, unless both its edges sit on shot boundaries (then the shot is the moment), and
never more than half-way to the next moment returned, so moments stay disjoint.

Why not the earlier rule (smooth the curve, take the run above half height over the 10th
percentile)? When another scene of the same video scores nearly as high as the match, the
half-height run swallows it: on synthetic sets of 4–6 scene videos (docs/video.md) that
rule localised at mIoU 0.65 given the right video; this one at 0.87, 0.90 with shots.

`Moment.score` is the mean similarity over the moment's frames; `best_t` its best frame.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from clipsearch.errors import UsageError

DEFAULT_MIN_LEN_S = 2.0
MIN_STEP = 0.05  # ρ: smallest level change worth a new segment, as a fraction of C
CUT_PENALTY_FACTOR = 0.25  # a changepoint at a shot boundary costs β/4
BACKGROUND_PERCENTILE = 20.0  # a video's background level, for secondary moments
_MAD_TO_SIGMA = 1.4826  # MAD → σ for Gaussian noise
MIN_FRAMES_FOR_RHO = 20  # differences needed to estimate the noise's frame-to-frame correlation
MAX_RHO = 0.8
_EPS = 1e-9

Shot = tuple[float, float]


@dataclass(frozen=True)
class Moment:
    """A stretch of a video that matches a query."""

    start: float  # seconds
    end: float  # seconds
    best_t: float  # time of the best frame inside [start, end]
    score: float  # mean similarity of the frames in the moment


@dataclass(frozen=True)
class Segment:
    """Frames ``lo..hi-1`` (in time order) and their mean similarity."""

    lo: int
    hi: int
    level: float


def frame_cells(timestamps: np.ndarray, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the time cell each frame stands for: edges at midpoints between
    neighbouring frames, clipped to [0, duration]. (For segment-centre sampling, the cells
    are exactly the sampling segments.)"""
    t = np.asarray(timestamps, dtype=np.float64)
    if len(t) == 1:
        return np.array([0.0]), np.array([max(duration, t[0])])
    mid = (t[1:] + t[:-1]) / 2
    first = t[0] - (t[1] - t[0]) / 2
    last = t[-1] + (t[-1] - t[-2]) / 2
    starts = np.clip(np.concatenate([[first], mid]), 0.0, duration)
    ends = np.clip(np.concatenate([mid, [last]]), 0.0, duration)
    return starts, ends


def noise_variance(sims: np.ndarray) -> float:
    """Variance σ² of a score curve's frame-to-frame noise, robust to its level changes.

    From the MADs of lag-1 and lag-2 differences (each changepoint spoils only one or two
    of them): for noise of variance σ² with lag-one correlation ρ (consecutive frames of a
    shot look alike), Var(Δ₁) = 2σ²(1−ρ) and Var(Δ₂)/Var(Δ₁) = 1+ρ, so σ² = Var(Δ₁)/(2(1−ρ)).
    Lag-one differences alone would give σ²(1−ρ) and let correlated wander pass for
    changes. ρ is taken as 0 below ``MIN_FRAMES_FOR_RHO`` differences and capped at
    ``MAX_RHO``. 0 for fewer than 3 frames.
    """
    s = np.asarray(sims, dtype=np.float64)
    if len(s) < 3:
        return 0.0
    v1 = _robust_var(np.diff(s))
    if v1 <= 0.0:
        return 0.0
    rho = 0.0
    if len(s) - 1 >= MIN_FRAMES_FOR_RHO:
        rho = float(np.clip(_robust_var(s[2:] - s[:-2]) / v1 - 1.0, 0.0, MAX_RHO))
    return v1 / (2.0 * (1.0 - rho))


def _robust_var(x: np.ndarray) -> float:
    """(1.4826·MAD)², a variance estimate that ignores a minority of outliers."""
    return float((_MAD_TO_SIGMA * np.median(np.abs(x - np.median(x)))) ** 2)


def segment_curve(
    sims: np.ndarray,
    *,
    cut_before: np.ndarray | None = None,
    min_step: float = MIN_STEP,
) -> list[Segment]:
    """Penalised least-squares segmentation of a score curve (module docstring).

    Args:
        sims: (F,) scores in time order.
        cut_before: (F,) bool, True at i when a shot boundary lies between frames i−1 and i.
        min_step: ρ, the smallest level change worth a segment, as a fraction of the
            curve's range (max − min).
    Returns:
        Segments covering 0..F in order (one segment for a flat curve).
    """
    s = np.asarray(sims, dtype=np.float64)
    n = len(s)
    contrast = float(s.max() - s.min()) if n else 0.0
    if n < 2 or contrast <= _EPS:
        return [Segment(0, n, float(s.mean()) if n else 0.0)]
    beta = max(3.0 * noise_variance(s) * np.log(n), (min_step * contrast) ** 2, _EPS**2)
    penalty = np.full(n, beta)  # penalty[i]: a changepoint just before frame i
    if cut_before is not None:
        penalty[np.asarray(cut_before, dtype=bool)] *= CUT_PENALTY_FACTOR
    penalty[0] = 0.0
    c = s - s.mean()  # centred: the prefix sums below lose less to cancellation
    s1 = np.concatenate([[0.0], np.cumsum(c)])
    s2 = np.concatenate([[0.0], np.cumsum(c * c)])
    length = np.arange(1, n + 1, dtype=np.float64)[:, None] - np.arange(n)[None, :]  # j − i
    with np.errstate(divide="ignore", invalid="ignore"):  # i >= j (never read) divides by <= 0
        sums = s1[1:, None] - s1[None, :-1]  # (n, n): row j−1, column i → Σ s[i:j]
        sse = (s2[1:, None] - s2[None, :-1]) - sums * sums / length
    entry = sse + penalty[None, :]  # cost of a last segment s[i:j], changepoint at i included
    best = np.zeros(n + 1)  # best[j]: optimal cost of s[:j]
    last = np.zeros(n + 1, dtype=np.int64)  # start of the last segment of that optimum
    for j in range(1, n + 1):
        total = best[:j] + entry[j - 1, :j]
        k = int(np.argmin(total))
        best[j], last[j] = total[k], k
    bounds, j = [], n
    while j > 0:
        bounds.append((int(last[j]), j))
        j = int(last[j])
    return [Segment(a, b, float(s[a:b].mean())) for a, b in reversed(bounds)]


def find_moments(
    timestamps: np.ndarray,
    sims: np.ndarray,
    *,
    duration: float,
    n: int = 1,
    shots: Sequence[Shot] | None = None,
    min_len_s: float = DEFAULT_MIN_LEN_S,
    min_step: float = MIN_STEP,
) -> list[Moment]:
    """Up to ``n`` non-overlapping moments of a video for one query, best first.

    Args:
        timestamps: (F,) frame times in seconds (any order; sorted here).
        sims: (F,) query·frame similarities.
        duration: video length in seconds (moments lie in [0, duration]).
        n: most moments to return (≥ 1); fewer when fewer peaks stand out.
        shots: optional [(start, end)] shot boundaries (edges snap to them).
        min_len_s: shortest moment returned (unless the video or its shot is shorter).
        min_step: ρ of `segment_curve`.
    Raises:
        UsageError: no frames, timestamps and sims of different lengths, or n < 1.
    """
    t = np.asarray(timestamps, dtype=np.float64).ravel()
    s = np.asarray(sims, dtype=np.float64).ravel()
    if len(t) == 0 or len(t) != len(s):
        raise UsageError(f"moments need F >= 1 frames with one score each ({len(t)}, {len(s)})")
    if n < 1:
        raise UsageError(f"the number of moments must be at least 1, got {n}")
    order = np.argsort(t, kind="stable")
    t, s = t[order], s[order]
    duration = max(float(duration), float(t[-1]))
    cuts = _cut_times(shots, duration)
    cut_before = np.zeros(len(t), dtype=bool)
    if len(cuts) and len(t) > 1:
        # a cut c with t[i-1] < c <= t[i] lies before frame i
        idx = np.searchsorted(t, cuts, side="left")
        cut_before[idx[(idx > 0) & (idx < len(t))]] = True
    segments = segment_curve(s, cut_before=cut_before, min_step=min_step)
    if len(segments) == 1:
        best = int(np.argmax(s))
        return [Moment(0.0, duration, float(t[best]), float(s.mean()))]
    top = max(segments, key=lambda g: g.level)
    background = float(np.percentile(s, BACKGROUND_PERCENTILE))
    floor = min(top.level, background + (top.level - background) / 2)
    peaks, run = [], []
    for g in [*segments, None]:  # None flushes the last run
        if g is not None and g.level >= floor:
            run.append(g)
        elif run:
            peaks.append(max(run, key=lambda x: x.level))
            run = []
    peaks.sort(key=lambda g: (-g.level, g.lo))
    starts, ends = frame_cells(t, duration)
    starts[0], ends[-1] = 0.0, duration
    peaks = peaks[:n]
    spans = [_span(g, t, starts, ends, cuts) for g in peaks]
    # a short moment grows at most half-way to the next one: moments never overlap
    lows, highs = [0.0] * len(peaks), [duration] * len(peaks)
    by_time = sorted(range(len(peaks)), key=lambda i: peaks[i].lo)
    for a, b in itertools.pairwise(by_time):
        highs[a] = lows[b] = (spans[a].end + spans[b].start) / 2
    return [_moment(g, t, s, spans[i], lows[i], highs[i], min_len_s) for i, g in enumerate(peaks)]


def localize(
    timestamps: np.ndarray,
    sims: np.ndarray,
    *,
    duration: float,
    shots: Sequence[Shot] | None = None,
    min_len_s: float = DEFAULT_MIN_LEN_S,
    min_step: float = MIN_STEP,
) -> Moment:
    """The best moment of a video for a query: ``find_moments(..., n=1)[0]``."""
    return find_moments(
        timestamps,
        sims,
        duration=duration,
        n=1,
        shots=shots,
        min_len_s=min_len_s,
        min_step=min_step,
    )[0]


def shots_from_cuts(cuts: Sequence[float], duration: float) -> list[Shot]:
    """Cut times inside a video (as the catalog stores them) → [(start, end)] shots."""
    edges = [0.0, *sorted(float(c) for c in cuts if 0.0 < c < duration), float(duration)]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


def _cut_times(shots: Sequence[Shot] | None, duration: float) -> np.ndarray:
    """Sorted shot boundaries strictly inside (0, duration)."""
    if not shots:
        return np.zeros(0)
    edges = {float(x) for shot in shots for x in shot}
    return np.array(sorted(c for c in edges if _EPS < c < duration - _EPS))


@dataclass(frozen=True)
class _Span:
    """A peak's stretch before widening: its edges, and whether each sits on a cut."""

    start: float
    end: float
    centre: float  # of the frames' cells, around which a short moment grows
    snapped_start: bool = False
    snapped_end: bool = False


def _span(g: Segment, t: np.ndarray, starts: np.ndarray, ends: np.ndarray, cuts: np.ndarray):
    """Where segment ``g`` lies in time: its frames' cells, an edge snapped to the shot
    boundary between its edge frame and the neighbour outside. A cut c with
    t[i-1] < c <= t[i] lies before frame i (a frame on a boundary starts the new shot)."""
    start, end = float(starts[g.lo]), float(ends[g.hi - 1])
    centre = (start + end) / 2
    snapped_start = snapped_end = False
    if g.lo > 0 and len(cuts):  # the last cut before frame lo starts its shot
        inside = cuts[(cuts > t[g.lo - 1]) & (cuts <= t[g.lo])]
        if len(inside):
            start, snapped_start = float(inside[-1]), True
    if g.hi < len(t) and len(cuts):  # the first cut before frame hi ends the shot of hi-1
        inside = cuts[(cuts > t[g.hi - 1]) & (cuts <= t[g.hi])]
        if len(inside):
            end, snapped_end = float(inside[0]), True
    return _Span(start, end, centre, snapped_start, snapped_end)


def _moment(
    g: Segment, t: np.ndarray, s: np.ndarray, span: _Span, lo: float, hi: float, min_len_s: float
) -> Moment:
    """The moment of peak ``g``: its span, widened to ``min_len_s`` inside [lo, hi] unless
    both its edges are shot boundaries (then the shot is the moment)."""
    start, end = span.start, span.end
    if not (span.snapped_start and span.snapped_end):
        start, end = _widen(start, end, span.centre, min_len_s, lo, hi)
    best = g.lo + int(np.argmax(s[g.lo : g.hi]))
    return Moment(start, end, float(t[best]), g.level)


def _widen(start: float, end: float, centre: float, min_len: float, lo: float, hi: float):
    """Grow [start, end] to min_len around ``centre``, inside [lo, hi]."""
    if end - start >= min_len:
        return start, end
    length = min(min_len, hi - lo)
    start = min(start, max(lo, centre - length / 2))
    end = max(end, start + length)
    if end > hi:
        end, start = hi, max(lo, hi - length)
    return float(start), float(end)
