"""Moments inside a video from its frame-score curve (clipsearch.search.moments)."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from clipsearch.errors import UsageError
from clipsearch.search.moments import (
    Moment,
    Segment,
    find_moments,
    frame_cells,
    localize,
    noise_variance,
    segment_curve,
    shots_from_cuts,
)

FPS1 = np.arange(40) + 0.5  # fps:1 over a 40 s video


def scenes_curve(levels_and_lengths, *, noise=0.0, seed=0):
    """(times, scores) at fps:1 for scenes given as (level, seconds)."""
    s = np.concatenate([np.full(n, level) for level, n in levels_and_lengths])
    s = s + noise * np.random.default_rng(seed).standard_normal(len(s))
    return np.arange(len(s)) + 0.5, s


# --- the segmentation -----------------------------------------------------------------------------
def brute_force_segments(s, penalty):
    """Every partition of s into contiguous segments; the least penalised SSE wins (the
    first found among equal costs: fewest changepoints, earliest). Returns the segments as
    (lo, hi) pairs and their cost (also the reference of test_moments_properties.py)."""
    n, best, arg = len(s), np.inf, None
    for k in range(n):
        for cuts in itertools.combinations(range(1, n), k):
            edges = [0, *cuts, n]
            cost = sum(((s[a:b] - s[a:b].mean()) ** 2).sum() for a, b in itertools.pairwise(edges))
            cost += sum(penalty[c] for c in cuts)
            if cost < best - 1e-12:
                best, arg = cost, list(itertools.pairwise(edges))
    return arg, best


@pytest.mark.parametrize("seed", range(12))
def test_segmentation_is_the_exact_optimum(seed):
    from clipsearch.search.moments import CUT_PENALTY_FACTOR, MIN_STEP

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 10))
    s = np.repeat(rng.random(4), 3)[:n] + 0.02 * rng.standard_normal(n)
    cut_before = rng.random(n) < 0.3
    got = [(g.lo, g.hi) for g in segment_curve(s, cut_before=cut_before)]
    contrast = s.max() - s.min()
    beta = max(3 * noise_variance(s) * np.log(n), (MIN_STEP * contrast) ** 2, 1e-18)
    penalty = np.where(cut_before, beta * CUT_PENALTY_FACTOR, beta)
    assert got == brute_force_segments(s, penalty)[0]


def test_noise_variance_ignores_jumps_and_sees_correlated_noise():
    rng = np.random.default_rng(0)
    steps = np.repeat([0.2, 0.9, 0.4, 0.7], 50)
    white = 0.01 * rng.standard_normal(200)
    assert noise_variance(steps + white) == pytest.approx(1e-4, rel=0.35)
    # AR(1) noise with ρ = 0.7 and σ = 0.01: lag-1 differences alone would see 0.3·σ²
    e = 0.01 * np.sqrt(1 - 0.49) * rng.standard_normal(2000)
    ar = np.zeros(2000)
    for i in range(1, 2000):
        ar[i] = 0.7 * ar[i - 1] + e[i]
    assert noise_variance(ar) == pytest.approx(1e-4, rel=0.3)


# --- one moment ------------------------------------------------------------------------------------
def test_the_best_scene_not_its_nearly_as_good_neighbour():
    # the failure of a half-height rule: a neighbour at 0.94 next to the match at 0.98
    t, s = scenes_curve([(0.5, 10), (0.94, 10), (0.98, 4), (0.4, 16)], noise=0.002)
    m = localize(t, s, duration=40.0)
    assert (m.start, m.end) == (20.0, 24.0)
    assert 20.0 < m.best_t < 24.0 and m.score == pytest.approx(0.98, abs=0.003)


def test_a_short_scene_is_not_returned_as_the_whole_video():
    t = (np.arange(12) + 0.5) * 0.75  # uniform:12 over a 9 s video of three 3 s scenes
    s = np.where((t > 3) & (t < 6), 0.31, 0.27)
    m = localize(t, s, duration=9.0)
    assert (m.start, m.end) == (3.0, 6.0)


def test_moments_at_the_first_and_the_last_frame_reach_the_video_edges():
    t, s = scenes_curve([(0.9, 5), (0.3, 35)], noise=0.001)
    first = localize(t, s, duration=40.2)
    assert (first.start, first.end) == (0.0, 5.0)
    t, s = scenes_curve([(0.3, 34), (0.9, 6)], noise=0.001)
    last = localize(t, s, duration=40.2)  # the last frame's cell ends at the video's end
    assert (last.start, last.end) == (34.0, 40.2)


def test_a_flat_curve_is_the_whole_video():
    assert localize([3.0], [0.2], duration=8.0) == Moment(0.0, 8.0, 3.0, pytest.approx(0.2))
    m = localize(np.arange(5.0) + 0.5, np.full(5, 0.25), duration=5.0)
    assert (m.start, m.end, m.best_t) == (0.0, 5.0, 0.5)
    # white noise and nothing else: no change stands out, so the match fills the video
    t, s = scenes_curve([(0.25, 40)], noise=0.01, seed=3)
    assert (localize(t, s, duration=40.0).start, localize(t, s, duration=40.0).end) == (0, 40)


def test_a_slow_drift_inside_a_scene_does_not_split_it():
    # a zoom: the score creeps up by 0.01 across a 12 s scene that stands 0.5 above the rest
    s = np.concatenate([np.full(14, 0.4), np.linspace(0.90, 0.91, 12), np.full(14, 0.4)])
    s += 1e-4 * np.random.default_rng(0).standard_normal(40)
    m = localize(FPS1, s, duration=40.0)
    assert (m.start, m.end) == (14.0, 26.0)


def test_a_bump_in_noise_is_found():
    rng = np.random.default_rng(1)
    s = 0.2 + 0.012 * rng.standard_normal(120)
    s[60:75] += 0.05
    m = localize(np.arange(120) + 0.5, s, duration=120.0)
    assert abs(m.start - 60) <= 2 and abs(m.end - 75) <= 2


def test_uneven_spacing_uses_cells_of_time():
    # dense frames 0–5 s (low), sparse frames 5–30 s with the match at 20 s
    t = np.concatenate([np.linspace(0, 5, 50, endpoint=False), [10.0, 15.0, 20.0, 25.0]])
    s = np.full(len(t), 0.1)
    s[t == 20.0] = 0.4
    m = localize(t, s, duration=30.0)
    assert m.best_t == 20.0 and (m.start, m.end) == (17.5, 22.5)


def test_short_moments_are_widened_inside_the_video():
    t = np.arange(80) * 0.25 + 0.125  # fps:4 over 20 s
    s = np.zeros(80)
    s[0] = 1.0  # a one-frame spike at the very start
    m = localize(t, s, duration=20.0, min_len_s=2.0)
    assert m.start == 0.0 and m.end == pytest.approx(2.0)
    s = np.zeros(80)
    s[40] = 1.0  # in the middle: widened around it
    m = localize(t, s, duration=20.0, min_len_s=2.0)
    assert m.end - m.start == pytest.approx(2.0) and m.start < 10.125 < m.end
    m = localize(t, s, duration=20.0, min_len_s=5.0)
    assert (m.start, m.end) == (7.625, 12.625)  # 5 s centred on the frame's cell [10, 10.25]
    m = localize(t, s, duration=20.0, min_len_s=0.0)
    assert (m.start, m.end) == (10.0, 10.25)  # the frame's own cell


# --- shots ----------------------------------------------------------------------------------------
def test_edges_snap_to_shot_boundaries_between_frames():
    # fps:1 samples; the match is the shot from 12.3 s to 17.6 s
    t, s = scenes_curve([(0.3, 12), (0.8, 6), (0.3, 22)], noise=0.001)
    without = localize(t, s, duration=40.0)
    assert (without.start, without.end) == (12.0, 18.0)  # cell edges: midpoints
    shots = [(0.0, 12.3), (12.3, 17.6), (17.6, 40.0)]
    m = localize(t, s, duration=40.0, shots=shots)
    assert (m.start, m.end) == (12.3, 17.6)


def test_a_one_second_shot_keeps_its_own_length():
    t, s = scenes_curve([(0.3, 20), (0.8, 1), (0.3, 19)], noise=0.001)
    m = localize(t, s, duration=40.0, shots=[(0, 19.8), (19.8, 20.9), (20.9, 40)])
    assert (m.start, m.end) == (19.8, 20.9)  # not widened to min_len_s across the cuts


def test_a_cut_lets_a_smaller_change_start_a_moment():
    # a 0.012 step in noise of σ 0.006: too weak alone, found where a cut says content changed
    rng = np.random.default_rng(2)
    s = 0.25 + 0.006 * rng.standard_normal(60)
    s[30:40] += 0.012
    t = np.arange(60) + 0.5
    with_cuts = localize(t, s, duration=60.0, shots=[(0, 29.6), (29.6, 40.2), (40.2, 60)])
    assert (with_cuts.start, with_cuts.end) == (29.6, 40.2)


# --- several moments ------------------------------------------------------------------------------
def test_several_moments_are_separate_peaks_best_first():
    t, s = scenes_curve(
        [(0.3, 5), (0.7, 4), (0.3, 10), (0.9, 5), (0.3, 6), (0.8, 3), (0.3, 7)], noise=0.002
    )
    ms = find_moments(t, s, duration=40.0, n=5)
    assert [(m.start, m.end) for m in ms] == [(19.0, 24.0), (30.0, 33.0), (5.0, 9.0)]
    assert [m.score for m in ms] == sorted((m.score for m in ms), reverse=True)
    assert find_moments(t, s, duration=40.0, n=2) == ms[:2]


def test_a_moments_shoulder_is_not_a_second_moment():
    # 0.9 flanked by 0.8: one peak of the curve, one moment; background elsewhere
    t, s = scenes_curve([(0.3, 10), (0.8, 5), (0.9, 5), (0.8, 5), (0.3, 15)], noise=0.002)
    ms = find_moments(t, s, duration=40.0, n=3)
    assert [(m.start, m.end) for m in ms] == [(15.0, 20.0)]


def test_background_is_never_a_moment():
    t, s = scenes_curve([(0.3, 18), (0.9, 4), (0.3, 18)], noise=0.01)
    assert len(find_moments(t, s, duration=40.0, n=4)) == 1


# --- input checks ---------------------------------------------------------------------------------
def test_frame_cells_tile_the_video_for_centre_sampling():
    starts, ends = frame_cells(np.arange(10) + 0.5, 10.0)
    np.testing.assert_allclose(starts, np.arange(10))
    np.testing.assert_allclose(ends, np.arange(10) + 1)


def test_bad_input_is_a_usage_error():
    with pytest.raises(UsageError):
        localize([], [], duration=1.0)
    with pytest.raises(UsageError):
        localize([0.5, 1.0], [0.1], duration=2.0)
    with pytest.raises(UsageError, match="at least 1"):
        find_moments([0.5], [0.1], duration=1.0, n=0)


def test_unsorted_frames_are_sorted():
    t, s = scenes_curve([(0.3, 10), (0.9, 5), (0.3, 25)], noise=0.001)
    order = np.random.default_rng(0).permutation(len(t))
    assert localize(t[order], s[order], duration=40.0) == localize(t, s, duration=40.0)


# --- edges, shots and ties ------------------------------------------------------------------------
FPS1_START = np.arange(40.0)  # fps:1 sampled at the start of each second, not its centre


def test_frame_cells_with_start_sampling_reach_the_video_edges():
    starts, ends = frame_cells(np.array([0.0, 2.0, 4.0]), 6.0)
    np.testing.assert_allclose(starts, [0.0, 1.0, 3.0])
    np.testing.assert_allclose(ends, [1.0, 3.0, 5.0])  # the last cell: as wide as its neighbour
    starts, ends = frame_cells(np.array([1.0, 2.0, 4.0]), 4.5)
    np.testing.assert_allclose(starts, [0.5, 1.5, 3.0])
    np.testing.assert_allclose(ends, [1.5, 3.0, 4.5])  # clipped to the video
    starts, ends = frame_cells(np.array([3.0]), 2.0)  # one frame past a wrong duration
    np.testing.assert_allclose([*starts, *ends], [0.0, 3.0])


def test_moments_at_the_edges_with_start_sampling():
    s = np.where(FPS1_START < 5, 0.9, 0.3)  # frames 0-4 s
    assert (
        localize(FPS1_START, s, duration=40.0).start,
        localize(FPS1_START, s, duration=40.0).end,
    ) == (
        0.0,
        4.5,
    )
    s = np.where(FPS1_START >= 34, 0.9, 0.3)  # the last frame is at 39 s of a 40 s video
    m = localize(FPS1_START, s, duration=40.0)
    assert (m.start, m.end, m.best_t) == (33.5, 40.0, 34.0)
    t = FPS1_START + 1.0  # frames at 1..40 s: the first cell still starts the video
    m = localize(t, np.where(t <= 4, 0.9, 0.3), duration=40.0)
    assert (m.start, m.end) == (0.0, 4.5)


def test_a_frame_exactly_on_a_shot_boundary_starts_the_new_shot():
    # the match is the shot [12 s, 18 s); frames at whole seconds, so frames 12 and 18 sit on
    # the boundaries: frame 12 is the shot's first, frame 18 the next shot's first
    s = np.where((FPS1_START >= 12) & (FPS1_START < 18), 0.8, 0.3)
    shots = [(0.0, 12.0), (12.0, 18.0), (18.0, 40.0)]
    m = localize(FPS1_START, s, duration=40.0, shots=shots)
    assert (m.start, m.end) == (12.0, 18.0)
    # frames 5-12 match, and a cut at 12 s starts frame 12's shot: that cut does not end the
    # moment at frame 12's own time; the moment ends with frame 12's cell
    s = np.where((FPS1_START >= 5) & (FPS1_START <= 12), 0.8, 0.3)
    m = localize(FPS1_START, s, duration=40.0, shots=[(0.0, 12.0), (12.0, 40.0)])
    assert (m.start, m.end) == (4.5, 12.5)


def test_close_moments_are_widened_without_overlapping():
    t = np.arange(80) * 0.25 + 0.125  # fps:4 over 20 s
    s = np.zeros(80)
    s[40], s[44] = 1.0, 0.9  # one-frame peaks at 10.125 s and 11.125 s, 1 s apart
    first, second = find_moments(t, s, duration=20.0, n=2, min_len_s=2.0)
    # each grows to 2 s, up to half-way between the two frames' cells (10.625 s)
    assert (first.start, first.end, first.best_t) == (8.625, 10.625, 10.125)
    assert (second.start, second.end, second.best_t) == (10.625, 12.625, 11.125)
    # alone, the best moment grows around its centre
    assert localize(t, s, duration=20.0, min_len_s=2.0) == pytest.approx(
        Moment(9.125, 11.125, 10.125, 1.0)
    )


def test_tied_scenes_come_in_time_order():
    s = np.full(40, 0.3)
    s[5:10] = s[25:30] = 0.9  # two equally good scenes, no noise
    ms = find_moments(FPS1, s, duration=40.0, n=3)
    assert [(m.start, m.end, m.score) for m in ms] == [(5.0, 10.0, 0.9), (25.0, 30.0, 0.9)]
    assert localize(FPS1, s, duration=40.0) == ms[0]


def test_empty_and_whole_video_shots_change_nothing():
    t, s = scenes_curve([(0.3, 12), (0.8, 6), (0.3, 22)], noise=0.001)
    plain = find_moments(t, s, duration=40.0, n=2)
    assert find_moments(t, s, duration=40.0, n=2, shots=[]) == plain
    assert find_moments(t, s, duration=40.0, n=2, shots=[(0.0, 40.0)]) == plain
    # boundaries at or outside the video's ends are not cuts
    assert find_moments(t, s, duration=40.0, n=2, shots=[(-3.0, 0.0), (40.0, 45.0)]) == plain


def test_shots_from_cuts_drops_cuts_outside_the_video_and_repeats():
    assert shots_from_cuts([12.0, 5.0, 5.0, 0.0, 40.0, -1.0, 55.0], 40.0) == [
        (0.0, 5.0),
        (5.0, 12.0),
        (12.0, 40.0),
    ]
    assert shots_from_cuts([], 9.5) == [(0.0, 9.5)]
    assert shots_from_cuts([0.4, 9.1], 9.5) == [(0.0, 0.4), (0.4, 9.1), (9.1, 9.5)]


# --- parameters -----------------------------------------------------------------------------------
def test_min_step_sets_the_smallest_change_worth_a_segment():
    # no noise: a 0.1 step is 10 % of the curve's range
    s = np.concatenate([np.zeros(20), np.full(10, 1.0), np.full(10, 0.9)])
    assert (localize(FPS1, s, duration=40.0).start, localize(FPS1, s, duration=40.0).end) == (
        20.0,
        30.0,
    )
    m = localize(FPS1, s, duration=40.0, min_step=0.3)  # 0.1 is not worth a segment
    assert (m.start, m.end, m.score) == (20.0, 40.0, pytest.approx(0.95))
    assert len(segment_curve(s, min_step=0.3)) == 2
    assert len(segment_curve(s)) == 3


def test_a_cut_lowers_the_evidence_a_change_needs_to_a_quarter():
    # noiseless, range C ≈ 1: β = (0.05·C)² ≈ 0.0026. Splitting 20 frames at a step d
    # saves 20·(d/2)² = 5d²: d = 0.2 saves 0.2 > β (always split); d = 0.015 saves 0.0011,
    # less than β but more than β/4 (split only where a cut lies)
    s = np.concatenate([np.zeros(10), np.full(10, 1.0), np.full(10, 1.2)])
    assert [(g.lo, g.hi) for g in segment_curve(s)] == [(0, 10), (10, 20), (20, 30)]
    s = np.concatenate([np.zeros(10), np.full(10, 1.0), np.full(10, 1.015)])
    cut = np.zeros(30, dtype=bool)
    cut[20] = True
    assert [(g.lo, g.hi) for g in segment_curve(s)] == [(0, 10), (10, 30)]
    assert [(g.lo, g.hi) for g in segment_curve(s, cut_before=cut)] == [(0, 10), (10, 20), (20, 30)]
    cut[:] = False
    cut[5] = True  # a cut elsewhere does not help
    assert [(g.lo, g.hi) for g in segment_curve(s, cut_before=cut)] == [(0, 10), (10, 30)]


def test_a_curve_flatter_than_rounding_is_one_segment():
    s = 0.3 + 1e-10 * np.sin(np.arange(40))  # contrast 2e-10: below 1e-9
    (g,) = segment_curve(s)
    assert (g.lo, g.hi, g.level) == (0, 40, pytest.approx(0.3))
    m = localize(FPS1, s, duration=40.0)
    assert (m.start, m.end, m.best_t) == (0.0, 40.0, FPS1[int(np.argmax(s))])
    s = np.where(FPS1 < 10, 0.3 + 1e-7, 0.3)  # a tiny but noiseless step is still a step
    assert [(g.lo, g.hi) for g in segment_curve(s)] == [(0, 10), (10, 40)]


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("sigma", [1e-4, 0.01, 0.3])
def test_noise_alone_is_one_segment(seed, sigma):
    s = 0.25 + sigma * np.random.default_rng(seed).standard_normal(120)
    assert len(segment_curve(s)) == 1
    m = localize(np.arange(120) + 0.5, s, duration=120.0)
    assert (m.start, m.end) == (0.0, 120.0) and m.score == pytest.approx(s.mean())


def test_noise_variance_edge_cases():
    assert noise_variance(np.array([0.1, 0.9])) == 0.0  # fewer than 3 frames
    assert noise_variance(np.full(30, 0.4)) == 0.0
    assert noise_variance(np.repeat([0.0, 1.0, 0.2], 15)) == 0.0  # jumps are not noise
    # below 20 differences ρ is taken as 0: σ² = Var(Δ₁)/2
    rng = np.random.default_rng(4)
    short = np.cumsum(rng.standard_normal(20))  # a random walk: strongly correlated
    d1 = np.diff(short)
    v1 = (1.4826 * np.median(np.abs(d1 - np.median(d1)))) ** 2
    assert noise_variance(short) == pytest.approx(v1 / 2)

    # from 20 differences on, ρ is estimated from lag-2 differences and capped at 0.8
    def robust_var(x):
        return (1.4826 * np.median(np.abs(x - np.median(x)))) ** 2

    for n, wander in [(21, 0.0), (200, 0.5), (400, 3.0)]:
        e = rng.standard_normal(n)
        s = e + wander * np.cumsum(e)  # white noise plus a random walk: ρ grows with wander
        v1, v2 = robust_var(np.diff(s)), robust_var(s[2:] - s[:-2])
        rho = min(max(v2 / v1 - 1, 0.0), 0.8)
        assert noise_variance(s) == pytest.approx(v1 / (2 * (1 - rho)))
    smooth = np.cumsum(np.cumsum(rng.standard_normal(400)))  # Var(Δ₂)/Var(Δ₁) ≈ 4: ρ capped
    d1 = np.diff(smooth)
    assert noise_variance(smooth) == pytest.approx(robust_var(d1) / 0.4)


def test_error_messages_say_what_is_wrong():
    with pytest.raises(
        UsageError, match=r"moments need F >= 1 frames with one score each \(0, 0\)"
    ):
        find_moments([], [], duration=1.0)
    with pytest.raises(UsageError, match=r"one score each \(2, 1\)"):
        find_moments([0.5, 1.0], [0.1], duration=2.0)
    with pytest.raises(UsageError, match="the number of moments must be at least 1, got 0"):
        find_moments([0.5], [0.1], duration=1.0, n=0)


def test_a_cut_on_the_frame_before_a_moment_is_not_its_start():
    # a shot starts on frame 11 (the cut at 11.0 is that frame's own time); the match starts
    # at frame 12 inside that shot: the moment starts at the cell edge, not at the cut
    s = np.where((FPS1_START >= 12) & (FPS1_START < 18), 0.8, 0.3)
    m = localize(FPS1_START, s, duration=40.0, shots=[(0.0, 11.0), (11.0, 40.0)])
    assert (m.start, m.end) == (11.5, 17.5)


def test_a_moment_from_the_second_frame_starts_at_its_cut():
    s = np.where((FPS1 >= 1) & (FPS1 < 6), 0.8, 0.3)  # frames 1-5 (1.5 s to 5.5 s)
    m = localize(FPS1, s, duration=40.0, shots=[(0.0, 0.8), (0.8, 40.0)])
    assert (m.start, m.end) == (0.8, 6.0)


def test_a_moment_exactly_min_len_long_is_kept_as_it_is():
    # start snapped to a cut at 12.25, end at the cell edge 14.0: 1.75 s, exactly min_len_s
    s = np.where((FPS1 > 12) & (FPS1 < 14), 0.8, 0.3)  # frames at 12.5 and 13.5
    m = localize(FPS1, s, duration=40.0, shots=[(0.0, 12.25), (12.25, 40.0)], min_len_s=1.75)
    assert (m.start, m.end) == (12.25, 14.0)


def test_a_cut_after_the_first_frame_counts():
    # the first frame alone is 0.04 above its scene: worth a segment only at a cut (β/4)
    s = np.array([1.04] + [1.0] * 14 + [0.0] * 15)
    m = localize(FPS1[:30], s, duration=30.0, shots=[(0.0, 0.9), (0.9, 30.0)])
    assert (m.start, m.end, m.best_t) == (0.0, 2.0, 0.5)  # frame 0, widened to 2 s
    assert (
        localize(FPS1[:30], s, duration=30.0).start,
        localize(FPS1[:30], s, duration=30.0).end,
    ) == (
        0.0,
        15.0,
    )


def test_a_moment_with_one_edge_on_a_cut_is_still_widened():
    s = np.where((FPS1 > 12) & (FPS1 < 14), 0.8, 0.3)  # frames at 12.5 and 13.5
    m = localize(FPS1, s, duration=40.0, shots=[(0.0, 12.25), (12.25, 40.0)], min_len_s=2.0)
    assert (m.start, m.end) == (12.0, 14.0)  # 1.75 s from the cut, grown around 13.0


def test_a_scene_less_than_half_way_above_background_is_no_moment():
    # background 0.3, best 0.9: a second scene must reach 0.6; one at 0.52 does not
    s = np.full(40, 0.3)
    s[5:10], s[25:30] = 0.9, 0.52
    assert [(m.start, m.end) for m in find_moments(FPS1, s, duration=40.0, n=3)] == [(5.0, 10.0)]
    s[25:30] = 0.62
    assert len(find_moments(FPS1, s, duration=40.0, n=3)) == 2


def test_frame_cells_end_at_a_duration_shorter_than_the_frames():
    starts, ends = frame_cells(np.array([0.0, 2.0, 4.0]), 2.5)
    np.testing.assert_allclose(starts, [0.0, 1.0, 2.5])
    np.testing.assert_allclose(ends, [1.0, 2.5, 2.5])


def test_contrast_at_or_below_1e9_is_flat_above_it_a_step():
    for step, segments in [(5e-10, 1), (1e-9, 1), (4e-9, 2)]:
        s = np.where(FPS1 < 20, 0.0, step)  # noiseless: any step above the floor splits
        assert len(segment_curve(s)) == segments, step
    assert segment_curve(np.array([])) == [Segment(0, 0, 0.0)]


def test_noise_variance_from_3_frames_and_rho_from_20_differences():
    assert noise_variance(np.array([0.0, 1.0, 0.0])) == pytest.approx(1.4826**2 / 2)
    rng = np.random.default_rng(8)
    walk = np.cumsum(np.cumsum(rng.standard_normal(21)))  # 20 differences: ρ is estimated
    d1 = np.diff(walk)
    v1 = (1.4826 * np.median(np.abs(d1 - np.median(d1)))) ** 2
    assert noise_variance(walk) == pytest.approx(v1 / 0.4)  # ρ capped at 0.8


def test_segmentation_raises_no_numpy_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, s = scenes_curve([(0.3, 12), (0.8, 6), (0.3, 22)], noise=0.01)
        assert len(segment_curve(s)) == 3
