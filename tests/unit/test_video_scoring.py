"""Frame pooling formulas and moment localization (clipsearch.search.video)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clipsearch.errors import UsageError
from clipsearch.search.video import (
    FrameSets,
    Moment,
    frame_cells,
    localize,
    meanp,
    pool_scores,
    pool_scores_batch,
    smooth,
)


# --- pooling -------------------------------------------------------------------------------------
def test_meanp_hand_computed():
    # normalise([3,4]) = [.6,.8], normalise([1,0]) = [1,0]; mean [.8,.4]; norm sqrt(.8) -> [2,1]/sqrt5
    v = meanp(np.array([[3.0, 4.0], [1.0, 0.0]]))
    np.testing.assert_allclose(v, [2 / math.sqrt(5), 1 / math.sqrt(5)], rtol=1e-6)


def test_pool_scores_hand_computed():
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    frames = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    # mean: v = [1, 2]/sqrt5 -> scores 1/sqrt5, 2/sqrt5
    np.testing.assert_allclose(
        pool_scores(q, frames, "mean"), [1 / math.sqrt(5), 2 / math.sqrt(5)], rtol=1e-6
    )
    np.testing.assert_allclose(pool_scores(q, frames, "max"), [1.0, 1.0])
    # softmax, query [1,0]: s = [1,0,0], w = [e^10, 1, 1]/(e^10+2), v_t ∝ [e^10, 2]
    e = math.exp(10)
    expected0 = e / math.hypot(e, 2)
    # query [0,1]: s = [0,1,1], w ∝ [1, e^10, e^10], v_t ∝ [1, 2e^10]
    expected1 = 2 * e / math.hypot(1, 2 * e)
    np.testing.assert_allclose(
        pool_scores(q, frames, "softmax", tau=0.1), [expected0, expected1], rtol=1e-6
    )


def test_softmax_limits_are_mean_and_max():
    rng = np.random.default_rng(0)
    q, frames = rng.standard_normal((3, 16)), rng.standard_normal((9, 16))
    np.testing.assert_allclose(
        pool_scores(q, frames, "softmax", tau=1e4), pool_scores(q, frames, "mean"), atol=1e-4
    )
    np.testing.assert_allclose(
        pool_scores(q, frames, "softmax", tau=1e-4), pool_scores(q, frames, "max"), atol=1e-4
    )


def test_scores_are_cosines_whatever_the_input_scale():
    rng = np.random.default_rng(1)
    q, frames = rng.standard_normal((2, 8)), rng.standard_normal((5, 8))
    scaled = frames * rng.uniform(0.1, 10, (5, 1))
    for method in ("mean", "max", "softmax"):
        np.testing.assert_allclose(
            pool_scores(3 * q, scaled, method), pool_scores(q, frames, method), rtol=1e-5
        )


@pytest.mark.parametrize("method", ["mean", "max", "softmax"])
def test_batch_matches_one_video_at_a_time(method):
    rng = np.random.default_rng(2)
    videos = [rng.standard_normal((n, 32)).astype(np.float32) for n in (1, 7, 3, 1, 12)]
    q = rng.standard_normal((4, 32))
    batch = pool_scores_batch(q, FrameSets.from_list(videos), method)
    assert batch.shape == (4, 5)
    single = np.stack([pool_scores(q, v, method) for v in videos], axis=1)
    np.testing.assert_allclose(batch, single, rtol=1e-5, atol=1e-6)
    # the padded form gives the same
    padded = np.zeros((5, 12, 32), dtype=np.float32)
    mask = np.zeros((5, 12), dtype=bool)
    for i, v in enumerate(videos):
        padded[i, : len(v)], mask[i, : len(v)] = v, True
    np.testing.assert_allclose(
        pool_scores_batch(q, FrameSets.from_padded(padded, mask), method), batch, rtol=1e-6
    )


def test_batch_single_query_vector_and_frame_counts():
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((6, 8))
    sets = FrameSets.from_counts(vecs, [2, 4])
    assert len(sets) == 2 and sets.counts.tolist() == [2, 4]
    np.testing.assert_allclose(np.linalg.norm(sets.video(1), axis=1), 1.0, rtol=1e-6)
    assert pool_scores_batch(vecs[0], sets, "max").shape == (1, 2)


def test_pooling_errors_are_usage_errors():
    f = np.eye(3)
    with pytest.raises(UsageError, match="pooling"):
        pool_scores(f[0], f, "median")
    with pytest.raises(UsageError, match="tau"):
        pool_scores(f[0], f, "softmax", tau=0.0)
    with pytest.raises(UsageError, match="dim"):
        pool_scores(np.ones(4), f, "mean")
    with pytest.raises(UsageError, match="at least one frame"):
        FrameSets.from_counts(f, [3, 0])
    with pytest.raises(UsageError):
        meanp(np.zeros((0, 3)))


# --- localization ----------------------------------------------------------------------------------
def test_frame_cells_tile_the_video_for_centre_sampling():
    starts, ends = frame_cells(np.arange(10) + 0.5, 10.0)
    np.testing.assert_allclose(starts, np.arange(10))
    np.testing.assert_allclose(ends, np.arange(10) + 1)


def test_smoothing_is_in_seconds_not_frames():
    t = np.array([0.0, 0.01, 10.0, 20.0])
    s = np.array([1.0, 0.0, 0.0, 0.0])
    out = smooth(t, s, 1.0)
    assert out[0] == pytest.approx(out[1], abs=1e-3)  # 10 ms apart: same neighbourhood
    assert out[2] < 1e-6  # 10 s away: untouched by the spike


def test_localize_synthetic_peak_between_4_and_6_seconds():
    t = np.arange(20) * 0.5 + 0.25  # fps:2 over 10 s
    rng = np.random.default_rng(0)
    s = 0.1 + 0.01 * rng.standard_normal(20)
    s[(t > 4) & (t < 6)] = 0.3
    m = localize(t, s, duration=10.0)
    assert isinstance(m, Moment)
    assert 3.0 <= m.start <= 4.0 and 6.0 <= m.end <= 7.0  # covers 4–6 s, little more
    assert 4.0 < m.best_t < 6.0
    assert 0.2 < m.score <= 0.3


def test_localize_uneven_spacing():
    # dense frames 0–5 s (low), sparse frames 5–30 s with the match at 20 s
    t = np.concatenate([np.linspace(0, 5, 50, endpoint=False), [10.0, 15.0, 20.0, 25.0]])
    s = np.full(len(t), 0.1)
    s[t == 20.0] = 0.4
    m = localize(t, s, duration=30.0)
    assert m.best_t == 20.0
    assert 15.0 <= m.start < 20.0 < m.end <= 25.0


def test_localize_single_frame_and_flat_curves_give_whole_video():
    assert localize([3.0], [0.2], duration=8.0) == Moment(0.0, 8.0, 3.0, pytest.approx(0.2))
    m = localize(np.arange(5.0) + 0.5, np.full(5, 0.25), duration=5.0)
    assert (m.start, m.end, m.best_t) == (0.0, 5.0, 0.5)


def test_localize_min_len_widens_short_moments_inside_the_video():
    t = np.arange(80) * 0.25 + 0.125  # fps:4 over 20 s
    s = np.zeros(80)
    s[0] = 1.0  # a one-frame spike at the very start
    m = localize(t, s, duration=20.0, smooth_s=0.0, min_len_s=2.0)
    assert m.start == 0.0 and m.end == pytest.approx(2.0)
    s = np.zeros(80)
    s[40] = 1.0  # in the middle: widened symmetrically
    m = localize(t, s, duration=20.0, smooth_s=0.0, min_len_s=2.0)
    assert m.end - m.start == pytest.approx(2.0) and m.start < 10.125 < m.end


def test_localize_with_shots_returns_the_best_shot():
    t = np.array([0.5, 1.5, 3.0, 4.0, 6.0])
    s = np.array([0.1, 0.1, 0.3, 0.28, 0.35])
    shots = [(0.0, 2.0), (2.0, 5.0), (5.0, 7.0)]
    m = localize(t, s, duration=7.0, shots=shots)
    assert (m.start, m.end, m.best_t) == (5.0, 7.0, 6.0)


def test_localize_rejects_mismatched_input():
    with pytest.raises(UsageError):
        localize([], [], duration=1.0)
    with pytest.raises(UsageError):
        localize([0.5, 1.0], [0.1], duration=2.0)


# --- end to end with the colour encoder ----------------------------------------------------------
def test_colour_video_query_finds_the_blue_scene(tmp_path):
    pytest.importorskip("av")
    from clipsearch.media.video import decode_frames
    from tests.fakes import ColourEncoder
    from tests.videogen import make_video

    scenes = [("red", 2.0), ("blue", 3.0), ("green", 2.0)]
    enc = ColourEncoder()
    query = enc.encode_texts(["blue"])
    per_video, decoded = [], []
    for name, sc in [("rbg", scenes), ("red", [("red", 7.0)]), ("green", [("green", 7.0)])]:
        d = decode_frames(make_video(tmp_path / f"{name}.mp4", sc, moving_shape=True), "fps:2")
        decoded.append(d)
        per_video.append(enc.encode_images([f.image for f in d.frames]))
    for method in ("mean", "max", "softmax"):
        scores = pool_scores_batch(query, FrameSets.from_list(per_video), method)[0]
        assert int(np.argmax(scores)) == 0, method
    d = decoded[0]
    t = np.array([f.t for f in d.frames])
    m = localize(t, per_video[0] @ query[0], duration=d.info.duration)
    # Frames carry their true PTS (first frame at/after each target), so a cell edge may sit up
    # to one frame interval (40 ms) past the cut.
    assert 2.0 - 0.04 <= m.start < m.best_t < m.end <= 5.0 + 0.04
    assert m.end - m.start >= 2.5
