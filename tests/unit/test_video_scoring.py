"""Frame pooling formulas (clipsearch.search.video); moments are in test_moments.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clipsearch.errors import UsageError
from clipsearch.search.video import (
    DEFAULT_POOLING,
    FrameSets,
    localize,
    meanp,
    pool_scores,
    pool_scores_batch,
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
    for method in ("peak", "mean", "max", "softmax"):
        np.testing.assert_allclose(
            pool_scores(3 * q, scaled, method), pool_scores(q, frames, method), rtol=1e-5
        )


def test_peak_is_the_frame_scores_averaged_under_the_softmax():
    q = np.array([[1.0, 0.0]])
    # frame scores 1, 0.6, 0.6: weights ∝ e^(s/τ)
    frames = np.array([[1.0, 0.0], [0.6, 0.8], [0.6, -0.8]])
    tau = 0.1
    w = np.exp(np.array([1.0, 0.6, 0.6]) / tau)
    expected = (w * [1.0, 0.6, 0.6]).sum() / w.sum()
    np.testing.assert_allclose(pool_scores(q, frames, "peak", tau=tau), [expected], rtol=1e-6)


def test_peak_lies_between_the_mean_frame_score_and_the_best_frame():
    rng = np.random.default_rng(4)
    q, frames = rng.standard_normal((3, 16)), rng.standard_normal((40, 16))
    s = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (
        frames / np.linalg.norm(frames, axis=1, keepdims=True)
    ).T
    peak = pool_scores(q, frames, "peak")
    assert np.all(peak <= s.max(axis=1) + 1e-6) and np.all(peak >= s.mean(axis=1) - 1e-6)
    # its limits: the best frame (τ → 0) and the plain mean of the scores (τ → ∞)
    np.testing.assert_allclose(pool_scores(q, frames, "peak", tau=1e-5), s.max(axis=1), atol=1e-5)
    np.testing.assert_allclose(pool_scores(q, frames, "peak", tau=1e5), s.mean(axis=1), atol=1e-4)


def test_peak_is_the_default_at_clips_temperature():
    assert DEFAULT_POOLING == "peak"
    rng = np.random.default_rng(6)
    q, frames = rng.standard_normal((2, 16)), rng.standard_normal((30, 16))
    np.testing.assert_allclose(
        pool_scores(q, frames), pool_scores(q, frames, "peak", tau=0.01), rtol=1e-6
    )


def test_softmax_defaults_to_hitchhikers_temperature():
    rng = np.random.default_rng(6)
    q, frames = rng.standard_normal((2, 16)), rng.standard_normal((30, 16))
    default = pool_scores(q, frames, "softmax")
    np.testing.assert_allclose(default, pool_scores(q, frames, "softmax", tau=0.1), rtol=1e-6)
    assert not np.allclose(default, pool_scores(q, frames, "softmax", tau=0.01), rtol=1e-3)


@pytest.mark.parametrize("method", ["peak", "mean", "max", "softmax"])
def test_scores_and_frame_sets_are_float32_whatever_the_input(method):
    rng = np.random.default_rng(7)
    q, frames = rng.standard_normal((2, 8)), rng.standard_normal((5, 8))  # float64
    assert pool_scores(q, frames, method).dtype == np.float32
    assert FrameSets.from_counts(frames, [2, 3]).vectors.dtype == np.float32


def test_a_video_of_one_frame_vector():
    frame = np.array([3.0, 4.0])
    sets = FrameSets.from_list([frame, np.ones((2, 2))])  # (D,): one frame
    assert sets.counts.tolist() == [1, 2]
    np.testing.assert_allclose(sets.video(0), [[0.6, 0.8]], rtol=1e-6)


def test_peak_finds_a_short_moment_that_mean_pooling_dilutes():
    # video A: 60 frames of background, 5 frames that match; video B: uniformly so-so
    rng = np.random.default_rng(5)
    d = 32
    q = np.zeros(d)
    q[0] = 1.0
    background = rng.standard_normal((60, d)) * 0.05 + np.eye(d)[1]
    match = np.tile(np.eye(d)[0] * 0.8 + np.eye(d)[1] * 0.6, (5, 1))
    a = np.concatenate([background[:30], match, background[30:]])
    b = np.tile(np.eye(d)[0] * 0.4 + np.eye(d)[1] * 0.9, (12, 1))
    sets = FrameSets.from_list([a, b])
    assert np.argmax(pool_scores_batch(q, sets, "peak")[0]) == 0
    assert np.argmax(pool_scores_batch(q, sets, "mean")[0]) == 1


@pytest.mark.parametrize("method", ["peak", "mean", "max", "softmax"])
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
    assert sets.video(0).shape == (2, vecs.shape[1]) and sets.video(1).shape == (4, vecs.shape[1])
    np.testing.assert_allclose(
        sets.video(1), vecs[2:] / np.linalg.norm(vecs[2:], axis=1)[:, None], rtol=1e-6
    )
    assert pool_scores_batch(vecs[0], sets, "max").shape == (1, 2)


def test_padded_frames_with_a_mask_of_zeros_and_ones():
    rng = np.random.default_rng(3)
    padded = rng.standard_normal((2, 3, 4))
    sets = FrameSets.from_padded(padded, np.array([[1, 1, 0], [1, 0, 0]]))  # not bool
    assert sets.counts.tolist() == [2, 1]
    np.testing.assert_allclose(
        sets.video(1)[0], padded[1, 0] / np.linalg.norm(padded[1, 0]), rtol=1e-6
    )


def test_meanp_is_float32_whatever_the_input():
    v = meanp(np.array([[3.0, 4.0], [1.0, 0.0]], dtype=np.float64))
    assert v.dtype == np.float32


def test_pooling_errors_say_what_is_wrong():
    f = np.eye(3)
    with pytest.raises(
        UsageError, match="unknown pooling 'median'; use one of peak, mean, max, softmax"
    ):
        pool_scores(f[0], f, "median")
    with pytest.raises(UsageError, match=r"softmax pooling needs tau > 0, got 0\.0"):
        pool_scores(f[0], f, "softmax", tau=0.0)
    with pytest.raises(UsageError, match="peak pooling needs tau > 0, got -1"):
        pool_scores(f[0], f, "peak", tau=-1)
    with pytest.raises(UsageError, match="needs tau > 0, got nan"):
        pool_scores(f[0], f, "peak", tau=float("nan"))
    with pytest.raises(UsageError, match="query dim 4 != frame dim 3"):
        pool_scores(np.ones(4), f, "mean")
    with pytest.raises(UsageError, match="every video needs at least one frame vector"):
        FrameSets.from_counts(f, [3, 0])
    with pytest.raises(UsageError, match="every video needs at least one frame vector"):
        FrameSets.from_counts(f, [])
    with pytest.raises(UsageError, match="3 frame vectors for 4 counted frames"):
        FrameSets.from_counts(f, [2, 2])
    with pytest.raises(UsageError, match=r"\? frame vectors for 3 counted frames"):
        FrameSets.from_counts(np.ones(3), [3])
    with pytest.raises(UsageError, match="no videos to score"):
        FrameSets.from_list([])
    with pytest.raises(
        UsageError, match=r"meanp needs a \(F, D\) matrix with F >= 1, got shape \(0, 3\)"
    ):
        meanp(np.zeros((0, 3)))
    with pytest.raises(UsageError, match=r"got shape \(3,\)"):
        meanp(np.ones(3))


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
    for method in ("peak", "mean", "max", "softmax"):
        scores = pool_scores_batch(query, FrameSets.from_list(per_video), method)[0]
        assert int(np.argmax(scores)) == 0, method
    d = decoded[0]
    t = np.array([f.t for f in d.frames])
    m = localize(t, per_video[0] @ query[0], duration=d.info.duration)
    # Frames carry their true PTS (first frame at/after each target), so a cell edge may sit up
    # to one frame interval (40 ms) past the cut.
    assert 2.0 - 0.04 <= m.start < m.best_t < m.end <= 5.0 + 0.04
    assert m.end - m.start >= 2.5
