"""Rules every moment obeys, for any frame times, scores and shots (hypothesis).

- the segmentation is the exact optimum of its penalised least squares (brute force);
- moments lie in [0, duration], hold their best frame, are disjoint and best first;
- a moment's score is its segment's mean: between the lowest score and its best frame's,
  and the best moment's is at least the video's mean;
- asking for fewer moments gives the first of the longer list (a short one may be wider);
- the moments do not depend on the order frames come in, nor on the units of the scores
  (scaling and shifting them moves no edge);
- a lone moment without shots is at least ``min_len_s`` long (or the whole video).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from clipsearch.search.moments import (
    CUT_PENALTY_FACTOR,
    find_moments,
    frame_cells,
    noise_variance,
    segment_curve,
)
from tests.unit.test_moments import brute_force_segments

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],  # a shared machine under load
)


@st.composite
def curves(draw, max_frames: int = 40):
    """(times, scores, duration, shots): a score curve of scenes plus noise, sampled at
    uneven distinct times, with shot boundaries between frames and some on frames."""
    n_scenes = draw(st.integers(1, 7))
    # short scenes (the matches) between longer ones at a common background level
    background = draw(st.floats(-1, 1))
    lengths = [draw(st.integers(1, 12 if i % 2 else 5)) for i in range(n_scenes)]
    levels = [background + (0 if i % 2 else draw(st.floats(0.2, 1))) for i in range(n_scenes)]
    s = np.repeat(levels, lengths)[:max_frames]
    f = len(s)
    noise = draw(st.sampled_from([0.0, 1e-3, 0.02, 0.1]))
    seed = draw(st.integers(0, 2**16))
    s = s + noise * np.random.default_rng(seed).standard_normal(f)
    gaps = draw(st.lists(st.sampled_from([0.25, 0.5, 1.0, 1.0, 1.5, 4.0]), min_size=f, max_size=f))
    t = draw(st.sampled_from([0.0, 0.125, 0.5])) + np.cumsum(gaps) - gaps[0]
    duration = float(t[-1]) + draw(st.sampled_from([0.0, 0.3, 2.0]))
    on_frames = draw(st.lists(st.sampled_from(list(t)), max_size=3))
    between = draw(st.lists(st.floats(0, duration), max_size=3))
    edges = sorted({0.0, duration, *on_frames, *between})
    shots = draw(st.sampled_from([None, list(itertools.pairwise(edges))]))
    return t, s, duration, shots


def _cost(s, segments, penalty):
    sse = sum(((s[g.lo : g.hi] - g.level) ** 2).sum() for g in segments)
    return sse + sum(penalty[g.lo] for g in segments[1:])


@PROPERTY
@given(
    levels=st.lists(st.floats(0, 1), min_size=1, max_size=4),
    length=st.integers(2, 8),
    noise=st.sampled_from([0.0, 0.01, 0.1]),
    seed=st.integers(0, 1000),
    cut_bits=st.integers(0, 255),
    min_step=st.sampled_from([0.0, 0.02, 0.05, 0.2, 0.5]),
)
def test_segmentation_is_the_exact_optimum_for_any_min_step(
    levels, length, noise, seed, cut_bits, min_step
):
    s = np.resize(np.repeat(levels, 3), length)
    s = s + noise * np.random.default_rng(seed).standard_normal(length)
    cut_before = np.array([bool(cut_bits >> i & 1) for i in range(length)])
    got = segment_curve(s, cut_before=cut_before, min_step=min_step)
    assert got[0].lo == 0 and got[-1].hi == length
    assert all(a.hi == b.lo for a, b in itertools.pairwise(got))
    assert all(g.lo < g.hi for g in got)
    for g in got:
        assert g.level == pytest.approx(s[g.lo : g.hi].mean(), abs=1e-12)
    contrast = s.max() - s.min()
    if contrast <= 1e-9:
        assert len(got) == 1
        return
    beta = max(3 * noise_variance(s) * np.log(length), (min_step * contrast) ** 2, 1e-18)
    penalty = np.where(cut_before, beta * CUT_PENALTY_FACTOR, beta)
    _, best = brute_force_segments(s, penalty)
    assert _cost(s, got, penalty) == pytest.approx(best, rel=1e-9, abs=1e-12)


@PROPERTY
@given(curve=curves(), n=st.integers(1, 5), min_len=st.sampled_from([0.0, 0.5, 2.0, 7.0]))
def test_moments_lie_in_the_video_disjoint_best_first(curve, n, min_len):
    t, s, duration, shots = curve
    ms = find_moments(t, s, duration=duration, n=n, shots=shots, min_len_s=min_len)
    assert 1 <= len(ms) <= n
    for m in ms:
        assert 0.0 <= m.start <= m.best_t <= m.end <= duration
        assert m.start < m.end or duration == 0.0
        assert m.best_t in t
    by_time = sorted(ms, key=lambda m: m.start)
    for a, b in itertools.pairwise(by_time):
        assert a.end <= b.start, f"{a} overlaps {b}"
    assert [m.score for m in ms] == sorted((m.score for m in ms), reverse=True)


@PROPERTY
@given(curve=curves(), n=st.integers(1, 5))
def test_a_moments_score_is_bounded_by_its_frames(curve, n):
    t, s, duration, shots = curve
    ms = find_moments(t, s, duration=duration, n=n, shots=shots)
    tol = 1e-9
    for m in ms:
        best_frame = s[t == m.best_t].max()
        assert s.min() - tol <= m.score <= best_frame + tol
        # the mean of a run of frames inside the moment, the best frame its highest
        runs = [
            (lo, hi)
            for lo in range(len(t))
            for hi in range(lo + 1, len(t) + 1)
            if m.start <= t[lo] and t[hi - 1] <= m.end and lo <= np.argmax(t == m.best_t) < hi
        ]
        assert any(
            s[lo:hi].mean() == pytest.approx(m.score, abs=tol) and s[lo:hi].max() == best_frame
            for lo, hi in runs
        )
    assert ms[0].score >= s.mean() - tol  # the best segment is at least the average level


@PROPERTY
@given(curve=curves(), n=st.integers(2, 5), min_len=st.sampled_from([0.0, 2.0, 7.0]))
def test_fewer_moments_are_the_best_of_more(curve, n, min_len):
    t, s, duration, shots = curve
    ms = find_moments(t, s, duration=duration, n=n, shots=shots, min_len_s=min_len)
    for k in range(1, n):
        fewer = find_moments(t, s, duration=duration, n=k, shots=shots, min_len_s=min_len)
        assert [(m.best_t, m.score) for m in fewer] == [(m.best_t, m.score) for m in ms[:k]]
        # the same moments; a short one may grow more where a dropped neighbour left room
        for a, b in zip(fewer, ms, strict=False):
            assert a.end - a.start >= b.end - b.start - 1e-9
            if min_len == 0.0:
                assert (a.start, a.end) == (b.start, b.end)


@PROPERTY
@given(curve=curves(), seed=st.integers(0, 1000))
def test_the_order_frames_come_in_does_not_matter(curve, seed):
    t, s, duration, shots = curve
    order = np.random.default_rng(seed).permutation(len(t))
    assert find_moments(t[order], s[order], duration=duration, n=3, shots=shots) == find_moments(
        t, s, duration=duration, n=3, shots=shots
    )


@PROPERTY
@given(curve=curves(), power=st.integers(-4, 4))
def test_scaling_the_scores_moves_no_edge(curve, power):
    t, s, duration, shots = curve
    assume(s.max() - s.min() > 1e-6)
    scale = 2.0**power  # exact in floating point: every comparison is the same
    ms = find_moments(t, s, duration=duration, n=3, shots=shots)
    scaled = find_moments(t, s * scale, duration=duration, n=3, shots=shots)
    assert [(m.start, m.end, m.best_t) for m in scaled] == [(m.start, m.end, m.best_t) for m in ms]
    assert [m.score for m in scaled] == pytest.approx([m.score * scale for m in ms])


@pytest.mark.parametrize("shift", [-0.5, 0.25, 3.0])
@pytest.mark.parametrize("scale", [0.3, 7.0])
def test_affine_units_of_the_scores_move_no_edge(shift, scale):
    rng = np.random.default_rng(5)
    s = np.repeat([0.2, 0.6, 0.25, 0.9, 0.3, 0.7, 0.2], [6, 4, 7, 3, 8, 5, 7])
    s = s + 0.01 * rng.standard_normal(len(s))
    t = np.arange(len(s)) * 0.5 + 0.25
    shots = [(0.0, 5.1), (5.1, 8.6), (8.6, 20.0)]
    ms = find_moments(t, s, duration=20.0, n=4, shots=shots)
    moved = find_moments(t, s * scale + shift, duration=20.0, n=4, shots=shots)
    assert len(ms) >= 3
    assert [(m.start, m.end, m.best_t) for m in moved] == [(m.start, m.end, m.best_t) for m in ms]
    assert [m.score for m in moved] == pytest.approx([m.score * scale + shift for m in ms])


@PROPERTY
@given(curve=curves(), min_len=st.sampled_from([0.5, 2.0, 7.0, 100.0]))
def test_a_lone_moment_without_shots_is_at_least_min_len(curve, min_len):
    t, s, duration, _ = curve
    (m,) = find_moments(t, s, duration=duration, n=1, min_len_s=min_len)
    assert m.end - m.start >= min(min_len, duration) - 1e-9
    cell_starts, cell_ends = frame_cells(t, duration)
    i = int(np.flatnonzero(t == m.best_t)[0])
    assert m.start <= max(cell_starts[i], 0.0) and m.end >= cell_ends[i] - 1e-9


@PROPERTY
@given(
    t=st.lists(st.floats(0, 100), min_size=1, max_size=20, unique=True).map(sorted),
    extra=st.sampled_from([0.0, 0.5, 10.0]),
)
def test_frame_cells_tile_the_video(t, extra):
    t = np.array(t)
    duration = float(t[-1]) + extra
    starts, ends = frame_cells(t, duration)
    assert ((starts >= 0) & (ends <= max(duration, t[-1]))).all()
    assert (starts <= t).all() and (t <= ends).all()
    np.testing.assert_array_equal(starts[1:], ends[:-1])  # no gap, no overlap
    if len(t) > 1:
        np.testing.assert_allclose(starts[1:], (t[1:] + t[:-1]) / 2)


@PROPERTY
@given(
    levels=st.lists(st.floats(-1, 1), min_size=1, max_size=6),
    noise=st.sampled_from([0.0, 0.01, 0.1]),
    seed=st.integers(0, 1000),
    power=st.integers(-3, 3),
    shift=st.sampled_from([0.0, 1.0, -2.0]),
)
def test_noise_variance_follows_the_units_of_the_scores(levels, noise, seed, power, shift):
    s = np.repeat(levels, 8) + noise * np.random.default_rng(seed).standard_normal(8 * len(levels))
    v = noise_variance(s)
    assert v >= 0.0
    assert noise_variance(s * 2.0**power) == pytest.approx(v * 4.0**power, rel=1e-9, abs=1e-300)
    assert noise_variance(s + shift) == pytest.approx(v, rel=1e-6, abs=1e-12)
