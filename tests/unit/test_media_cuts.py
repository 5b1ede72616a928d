"""Shot cuts found on the frames a decode produces anyway (clipsearch.media.cuts)."""

from __future__ import annotations

import numpy as np
import pytest

from clipsearch.media.cuts import CutDetector, frame_signature
from tests.videogen import make_video

av = pytest.importorskip("av")

SCENES = (("green", 2.0), ("blue", 3.0), ("green", 2.0), ("blue", 3.0))  # cuts at 2, 5, 7


def cut_times(shots):
    return [a for a, _ in shots[1:]]


@pytest.fixture(scope="module")
def four_scenes(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("cuts") / "four.mp4", SCENES, moving_shape=True)


@pytest.mark.parametrize("sampler", ["uniform:12", "fps:1", "fps:4"])
@pytest.mark.parametrize("mode", ["sequential", "seek"])
def test_hard_cuts_are_found_to_within_two_frames(four_scenes, sampler, mode):
    from clipsearch.media.video import decode_frames

    d = decode_frames(four_scenes, sampler, mode=mode)
    assert d.mode == mode
    assert d.shots[0][0] == 0.0 and d.shots[-1][1] == pytest.approx(10.0, abs=0.05)
    np.testing.assert_allclose(cut_times(d.shots), [2.0, 5.0, 7.0], atol=0.081)  # 25 fps


def test_keyframes_mode_finds_cuts_to_the_keyframe(four_scenes):
    from clipsearch.media.video import decode_frames

    d = decode_frames(four_scenes, "uniform:12", mode="keyframes")  # keyframes every 2 s
    assert d.approximate
    assert cut_times(d.shots) == pytest.approx([2.0, 6.0, 8.0], abs=0.01)


def test_cross_fades_are_one_cut_in_their_middle(tmp_path):
    from clipsearch.media.video import decode_frames
    from tests.momentgen import MomentScene, write_moment_video

    scenes = [MomentScene(0.0, 4.3, 1), MomentScene(4.3, 7.6, 2), MomentScene(7.6, 12.0, 3)]
    path = tmp_path / "fades.mp4"
    write_moment_video(path, scenes, fps=10, size=(160, 120), fade_s=0.5)
    for sampler in ("uniform:12", "fps:1", "fps:2"):
        d = decode_frames(path, sampler)
        np.testing.assert_allclose(cut_times(d.shots), [4.3, 7.6], atol=0.21, err_msg=sampler)


def test_motion_inside_one_shot_is_not_a_cut(tmp_path):
    from clipsearch.media.video import decode_frames

    moving = make_video(tmp_path / "moving.mp4", [("red", 8.0)], moving_shape=True)
    panning = make_video(tmp_path / "pan.mp4", [("red", 10.0)], size=(640, 360), texture=True)
    for path in (moving, panning):
        for sampler in ("uniform:12", "fps:1", "fps:4"):
            d = decode_frames(path, sampler)
            assert len(d.shots) == 1, (path.name, sampler, d.shots)


def test_cut_detection_can_be_turned_off_and_the_shots_sampler_keeps_its_own(four_scenes):
    from clipsearch.media.video import decode_frames

    assert decode_frames(four_scenes, "fps:1", detect_cuts=False).shots is None
    pytest.importorskip("scenedetect")
    d = decode_frames(four_scenes, "shots")  # PySceneDetect's shots, as before
    np.testing.assert_allclose(cut_times(d.shots), [2.0, 5.0, 7.0], atol=0.05)


def test_signature_reads_planar_yuv_only():
    rgb = np.zeros((48, 64, 3), dtype=np.uint8)
    rgb[:, 32:] = (0, 0, 255)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    assert frame_signature(frame) is None  # not a decoder's YUV: not looked at
    yuv = frame.reformat(format="yuv420p")
    sig = frame_signature(yuv)
    assert sig.shape == (192,) and sig.dtype == np.float32
    luma = sig[:64].reshape(8, 8)
    assert luma[:, :4].mean() < luma[:, 4:].mean()  # black left half, blue right half
    tiny = av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24")
    assert frame_signature(tiny.reformat(format="yuv420p")) is None  # too small to sample


def test_a_detector_that_saw_nothing_finds_one_shot():
    assert CutDetector().shots(np.array([0.5, 1.5]), 2.0) == [(0.0, 2.0)]
