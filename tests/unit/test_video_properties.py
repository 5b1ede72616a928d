"""Moment finding (search/video.py ``localize``, ``frame_cells``, ``smooth``) against a
per-frame reference written from the rule in its docstring, plus the cases the rule
singles out: moments touching the first or last frame, cell edges when frames are not
sampled at segment centres, smoothing widths, the low-contrast fallback on a noisy curve,
frames exactly on a shot boundary, empty and tied shots, and the bounds of a moment.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipsearch.errors import UsageError
from clipsearch.search.video import Moment, frame_cells, localize, smooth

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],  # a shared machine under load
)


# -- the reference: the docstring's steps, one frame at a time --------------------------------
def reference_cells(t: list[float], duration: float) -> list[tuple[float, float]]:
    """Step 1: each frame owns the time closest to it; outer edges half an interval out."""
    if len(t) == 1:
        return [(0.0, max(duration, t[0]))]
    cells = []
    for i in range(len(t)):
        lo = (t[i - 1] + t[i]) / 2 if i else t[0] - (t[1] - t[0]) / 2
        hi = (t[i] + t[i + 1]) / 2 if i + 1 < len(t) else t[-1] + (t[-1] - t[-2]) / 2
        cells.append((min(max(lo, 0.0), duration), min(max(hi, 0.0), duration)))
    return cells


def reference_smooth(t: list[float], s: list[float], sigma: float) -> list[float]:
    """Step 2: Nadaraya–Watson with a Gaussian kernel of σ seconds."""
    if sigma <= 0 or len(t) < 2:
        return list(s)
    out = []
    for ti in t:
        k = [math.exp(-0.5 * ((ti - tj) / sigma) ** 2) for tj in t]
        out.append(sum(kj * sj for kj, sj in zip(k, s, strict=True)) / sum(k))
    return out


def reference_run(t, s, *, duration, smooth_s, min_contrast):
    """Steps 2-4: the run of frames (lo, hi) at half maximum above the 10th-percentile
    baseline, or None when the curve has no contrast (the whole video is the moment)."""
    sm = reference_smooth(t, s, smooth_s)
    p = max(range(len(sm)), key=lambda i: (sm[i], -i))  # the first highest
    base = float(np.percentile(sm, 10))
    if len(t) == 1 or sm[p] - base < min_contrast:
        return None
    lo = hi = p
    while lo > 0 and (sm[lo - 1] - base) / (sm[p] - base) >= 0.5:
        lo -= 1
    while hi + 1 < len(t) and (sm[hi + 1] - base) / (sm[p] - base) >= 0.5:
        hi += 1
    return lo, hi, p


@st.composite
def curves(draw):
    """(sorted distinct times, scores, duration): uneven spacing, any scores."""
    n = draw(st.integers(1, 20))
    times = draw(st.lists(st.integers(0, 3000), min_size=n, max_size=n, unique=True))
    t = sorted(x / 100 for x in times)
    s = draw(st.lists(st.integers(-200, 500), min_size=n, max_size=n))
    s = [x / 1000 + draw(st.floats(0, 1e-4)) for x in s]  # rarely exactly equal
    duration = t[-1] + draw(st.sampled_from([0.0, 0.01, 0.5, 3.0]))
    return t, s, duration


# -- properties -------------------------------------------------------------------------------
@PROPERTY
@given(curves(), st.sampled_from([0.0, 0.3, 1.0, 2.5]), st.sampled_from([0.0, 1.0, 2.0, 6.0]))
def test_the_moment_follows_the_rule_frame_by_frame(curve, smooth_s, min_len_s):
    t, s, duration = curve
    m = localize(t, s, duration=duration, smooth_s=smooth_s, min_len_s=min_len_s)
    run = reference_run(t, s, duration=duration, smooth_s=smooth_s, min_contrast=0.01)
    if run is None:  # no contrast: the whole video, best at the first best frame
        first_best = max(range(len(s)), key=lambda i: (s[i], -i))
        assert (m.start, m.end, m.best_t) == (0.0, duration, t[first_best])
        assert m.score == pytest.approx(sum(s) / len(s))
        return
    lo, hi, _ = run
    inside = s[lo : hi + 1]
    assert m.best_t == t[lo + inside.index(max(inside))]
    assert m.score == pytest.approx(sum(inside) / len(inside))
    cells = reference_cells(t, duration)
    start, end = cells[lo][0], cells[hi][1]
    if end - start >= min_len_s:  # long enough: exactly the run's cells
        assert (m.start, m.end) == pytest.approx((start, end), abs=1e-9)
    else:  # widened to min_len_s (or the whole video), never cut
        assert m.start <= start + 1e-9 and m.end >= end - 1e-9
        assert m.end - m.start == pytest.approx(min(min_len_s, duration), abs=1e-9)


@PROPERTY
@given(curves(), st.sampled_from([0.0, 0.5, 1.0, 3.0]), st.sampled_from([0.0, 0.05, 1.0]))
def test_a_moment_lies_in_the_video_and_scores_between_its_frames(curve, smooth_s, contrast):
    t, s, duration = curve
    rng = np.random.default_rng(len(t))
    order = rng.permutation(len(t))  # any order: sorted inside
    m = localize(
        np.array(t)[order],
        np.array(s)[order],
        duration=duration,
        smooth_s=smooth_s,
        min_contrast=contrast,
    )
    assert 0.0 <= m.start <= m.best_t <= m.end <= duration
    assert m.best_t in t
    assert min(s) - 1e-12 <= m.score <= max(s) + 1e-12
    assert m == localize(t, s, duration=duration, smooth_s=smooth_s, min_contrast=contrast)


@PROPERTY
@given(curves())
def test_frame_cells_give_each_instant_to_its_nearest_frame(curve):
    t, _, duration = curve
    starts, ends = frame_cells(np.array(t), duration)
    np.testing.assert_allclose(np.c_[starts, ends], reference_cells(t, duration), atol=1e-12)
    if len(t) > 1:
        for x in np.linspace(0, duration, 37):
            owners = [i for i in range(len(t)) if starts[i] <= x <= ends[i]]
            nearest = min(abs(x - ti) for ti in t)
            assert all(abs(abs(x - t[i]) - nearest) < 1e-9 for i in owners), (x, owners)


@PROPERTY
@given(curves(), st.sampled_from([0.0, -1.0, 0.25, 1.0, 2.5, 40.0]))
def test_smoothing_equals_the_kernel_formula(curve, sigma):
    t, s, _ = curve
    out = smooth(np.array(t), np.array(s), sigma)
    np.testing.assert_allclose(out, reference_smooth(t, s, sigma), rtol=1e-9, atol=1e-12)
    assert min(s) - 1e-12 <= out.min() and out.max() <= max(s) + 1e-12


# -- the cases the rule singles out ------------------------------------------------------------
START_SAMPLED = np.arange(10.0)  # one frame at the start of each second of a 10 s video


def test_cells_when_frames_sit_at_segment_starts():
    """Not centre sampling: the edges are the midpoints, the first cell is clipped at 0,
    the last one ends half an interval after the last frame (the video's last half second
    belongs to no frame)."""
    starts, ends = frame_cells(START_SAMPLED, 10.0)
    assert starts.tolist() == [0.0, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5]
    assert ends.tolist() == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.5]
    starts, ends = frame_cells(np.array([2.0, 3.0]), 3.2)  # clipped to the duration
    assert (starts.tolist(), ends.tolist()) == ([1.5, 2.5], [2.5, 3.2])
    assert [c.tolist() for c in frame_cells(np.array([4.0]), 3.0)] == [[0.0], [4.0]]


@pytest.mark.parametrize(
    ("high", "start", "end", "best_t"),
    [
        ([0, 1, 2], 0.0, 2.5, 0.0),  # touches the first frame: starts at 0
        ([7, 8, 9], 6.5, 9.5, 7.0),  # touches the last frame: ends with its cell
        ([4, 5], 3.5, 5.5, 4.0),  # in the middle: whole cells, first best frame
    ],
)
def test_a_box_match_is_its_frames_cells(high, start, end, best_t):
    s = np.full(10, 0.1)
    s[high] = 0.3
    m = localize(START_SAMPLED, s, duration=10.0, smooth_s=0.0, min_len_s=0.0)
    assert (m.start, m.end, m.best_t) == (start, end, best_t)
    assert m.score == pytest.approx(0.3)


def test_a_moment_at_the_edges_is_widened_inwards():
    s = np.full(10, 0.1)
    s[0] = 0.3
    m = localize(START_SAMPLED, s, duration=10.0, smooth_s=0.0, min_len_s=3.0)
    assert (m.start, m.end) == (0.0, 3.0)
    s = np.full(10, 0.1)
    s[9] = 0.3
    m = localize(START_SAMPLED + 0.5, s, duration=10.0, smooth_s=0.0, min_len_s=3.0)
    assert (m.start, m.end, m.best_t) == (7.0, 10.0, 9.5)
    m = localize(START_SAMPLED + 0.5, s, duration=10.0, smooth_s=0.0, min_len_s=30.0)
    assert (m.start, m.end) == (0.0, 10.0)  # never longer than the video


def test_a_wider_smoothing_kernel_spreads_a_spike_over_more_frames():
    t = np.arange(40) * 0.25 + 0.125  # fps:4 over 10 s
    s = np.full(40, 0.1)
    s[20] = 0.5
    spans = []
    for sigma in (0.0, 0.25, 1.0, 2.0):
        m = localize(t, s, duration=10.0, smooth_s=sigma, min_len_s=0.0)
        assert m.best_t == t[20] and m.start < t[20] < m.end
        spans.append(m.end - m.start)
    assert spans[0] == pytest.approx(0.25)  # the spike's own cell
    assert spans == sorted(spans) and len(set(spans)) == 4


def test_a_noisy_curve_without_contrast_is_the_whole_video():
    rng = np.random.default_rng(3)
    t = np.arange(60) * 0.5 + 0.25
    s = 0.2 + 0.01 * rng.standard_normal(60)  # frame-to-frame noise, smoothed flat
    smoothed = smooth(t, s, 1.0)
    assert smoothed.max() - np.percentile(smoothed, 10) < 0.01 < s.max() - s.min()
    m = localize(t, s, duration=30.0)
    assert (m.start, m.end, m.best_t) == (0.0, 30.0, t[int(np.argmax(s))])
    assert m.score == pytest.approx(s.mean())
    # the same noise over a real bump: a moment, not the whole video
    s[20:26] += 0.1
    m = localize(t, s, duration=30.0)
    assert m.start >= 9.0 and m.end <= 14.0
    # the contrast threshold is the caller's: at 0, the noise itself makes a moment
    m = localize(t, 0.2 + 0.01 * rng.standard_normal(60), duration=30.0, min_contrast=0.0)
    assert (m.start, m.end) != (0.0, 30.0)


def test_a_frame_on_a_shot_boundary_belongs_to_the_shot_it_starts():
    t = np.array([1.0, 4.0, 5.0, 6.0, 9.0])
    s = np.array([0.2, 0.2, 0.9, 0.1, 0.1])
    m = localize(t, s, duration=10.0, shots=[(0.0, 5.0), (5.0, 10.0)])
    # shot 2 holds frames 5, 6, 9: mean 0.367 > shot 1's 0.2 (with frame 5 shot 1 would win)
    assert (m.start, m.end, m.best_t) == (5.0, 10.0, 5.0)
    assert m.score == pytest.approx((0.9 + 0.1 + 0.1) / 3)


def test_empty_and_tied_shots():
    t = np.array([1.0, 2.0, 7.0, 8.0])
    s = np.array([0.3, 0.1, 0.1, 0.3])
    shots = [(0.0, 0.5), (0.5, 3.0), (3.0, 6.0), (6.0, 10.0)]  # the 1st and 3rd hold no frame
    m = localize(t, s, duration=10.0, shots=shots)
    assert (m.start, m.end, m.best_t) == (0.5, 3.0, 1.0)  # tie: the first of the best shots
    assert m.score == pytest.approx(0.2)
    # no shot holds a frame: the curve rule decides, as without shots
    no_frames = [(20.0, 30.0)]
    assert localize(t, s, duration=10.0, shots=no_frames) == localize(t, s, duration=10.0)


def test_localize_refusals_say_what_is_wrong():
    with pytest.raises(
        UsageError, match=r"localize needs F >= 1 frames with one score each \(0, 0\)"
    ):
        localize([], [], duration=1.0)
    with pytest.raises(UsageError, match=r"one score each \(2, 1\)"):
        localize([0.5, 1.0], [0.1], duration=2.0)


def test_a_duration_shorter_than_the_frames_is_stretched_to_the_last_frame():
    m = localize([0.5, 1.5, 2.5], [0.1, 0.1, 0.1], duration=1.0)
    assert m == Moment(0.0, 2.5, 0.5, pytest.approx(0.1))
