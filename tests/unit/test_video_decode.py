"""Video probing and decoding against generated videos with exact ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from clipsearch.errors import (
    CorruptMediaError,
    MediaTooLargeError,
    NotFoundError,
    UnsupportedMediaError,
    UsageError,
)
from clipsearch.media import video_probe
from clipsearch.media.sampling import FrameSampler
from clipsearch.media.video import (
    FrameReader,
    VideoInfo,
    decode_frames,
    probe_video,
)
from tests.videogen import (
    corrupt_middle,
    frame_times,
    make_audio_only,
    make_video,
    nearest_colour,
    scene_at,
    truncate,
)

av = pytest.importorskip("av")

SCENES = [("red", 2.0), ("blue", 3.0), ("green", 2.0)]


@pytest.fixture(scope="module")
def vids(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {
        "cfr": make_video(d / "cfr.mp4", SCENES, moving_shape=True, gop=25, audio=True),
        "vfr": make_video(d / "vfr.mp4", SCENES, moving_shape=True, gop=25, vfr=True),
        "short_gop": make_video(d / "g10.mp4", SCENES, moving_shape=True, gop=10),
        "mkv": make_video(d / "cfr.mkv", SCENES, moving_shape=True, gop=25),
        "ts": make_video(d / "cfr.ts", SCENES, moving_shape=True, gop=25),  # no index
        "dir": d,
    }


def _colour(image) -> str:
    return nearest_colour(np.asarray(image).reshape(-1, 3).mean(axis=0))


def _expected_time(times: list[float], target: float) -> float:
    """Ground truth: the first frame presented at or after ``target`` (else the last)."""
    return next((t for t in times if t >= target - 1e-9), times[-1])


# --- probe ----------------------------------------------------------------------------------
def test_probe_reports_container_metadata(vids):
    info = probe_video(vids["cfr"])
    assert info == VideoInfo(
        duration=7.0,
        width=160,
        height=120,
        fps=25.0,
        rotation=0,
        codec="h264",
        frame_count=175,
        has_audio=True,
    )
    assert probe_video(vids["vfr"]).has_audio is False


def test_probe_vfr_uses_average_rate(vids):
    info = probe_video(vids["vfr"])
    assert info.duration == pytest.approx(7.0, abs=0.07)
    assert info.frame_count == len(frame_times(SCENES, vfr=True))
    assert info.fps == pytest.approx(info.frame_count / 7.0, rel=0.05)


# --- samplers vs ground truth -----------------------------------------------------------------
@pytest.mark.parametrize("vfr", [False, True])
@pytest.mark.parametrize("spec", ["uniform:12", "fps:2", "fps:0.5"])
def test_sampler_timestamps_match_ground_truth(vids, vfr, spec):
    times = frame_times(SCENES, vfr=vfr)
    d = decode_frames(vids["vfr" if vfr else "cfr"], spec, mode="sequential")
    targets = FrameSampler.parse(spec).timestamps(7.0 if not vfr else d.info.duration)
    expected = sorted({_expected_time(times, t) for t in targets})
    assert [f.t for f in d.frames] == pytest.approx(expected, abs=1e-9)
    assert [_colour(f.image) for f in d.frames] == [scene_at(SCENES, t) for t in expected]
    assert d.warning is None and not d.approximate


def test_shots_sampler_finds_the_cuts_and_samples_shot_middles(vids):
    d = decode_frames(vids["cfr"], "shots")
    assert [(round(a, 6), round(b, 6)) for a, b in d.shots] == [(0, 2), (2, 5), (5, 7)]
    times = frame_times(SCENES)
    assert [f.t for f in d.frames] == pytest.approx([_expected_time(times, m) for m in (1, 3.5, 6)])
    assert [_colour(f.image) for f in d.frames] == ["red", "blue", "green"]


def test_shots_on_vfr_cut_at_exact_pts(vids):
    d = decode_frames(vids["vfr"], "shots:2")
    times = frame_times(SCENES, vfr=True)
    cuts = [a for a, _ in d.shots[1:]]
    assert cuts == pytest.approx([_expected_time(times, 2.0), _expected_time(times, 5.0)])
    assert len(d.frames) == 6


# --- decode modes ------------------------------------------------------------------------------
def _reference(path, targets, size):
    """Brute force: decode every frame with plain PyAV, keep the first at/after each target."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        start = s.start_time or 0  # MPEG-TS streams start at 1.4 s, say
        frames = [(float((f.pts - start) * s.time_base), f) for f in c.decode(s)]
    out = {}
    for target in targets:
        t, f = next(((t, f) for t, f in frames if t >= target - 1e-6), frames[-1])
        out[t] = np.asarray(f.to_image(width=size[0], height=size[1], interpolation="BILINEAR"))
    return out


@pytest.mark.parametrize("key", ["short_gop", "vfr", "mkv", "ts"])
@pytest.mark.parametrize("threads", [1, 0])
@pytest.mark.parametrize("spec", ["uniform:5", "fps:3"])
def test_exact_modes_return_the_same_pixels_as_brute_force(vids, key, threads, spec):
    path = vids[key]
    seq = decode_frames(path, spec, mode="sequential", threads=threads)
    seek = decode_frames(path, spec, mode="seek", threads=threads)
    size = seq.frames[0].image.size
    ref = _reference(path, seq.targets, size)
    for d in (seq, seek):
        assert [f.t for f in d.frames] == pytest.approx(sorted(ref))
        for f in d.frames:
            np.testing.assert_array_equal(
                np.asarray(f.image), ref[min(ref, key=lambda t: abs(t - f.t))]
            )


def test_seek_mode_really_seeks_and_stays_exact(tmp_path):
    # 40 s, a keyframe every 0.4 s, 4 targets: seeking skips most of the video
    path = make_video(
        tmp_path / "long.mp4",
        [("red", 20.0), ("blue", 20.0)],
        size=(64, 48),
        gop=10,
        moving_shape=True,
        preset="ultrafast",
    )
    with FrameReader(path, "uniform:4") as r:
        assert r.mode == "seek"
        frames = list(r)
    seq = decode_frames(path, "uniform:4", mode="sequential")
    assert [f.t for f in frames] == [f.t for f in seq.frames]
    for a, b in zip(frames, seq.frames, strict=True):
        np.testing.assert_array_equal(np.asarray(a.image), np.asarray(b.image))


@pytest.mark.parametrize("key", ["cfr", "ts"])  # with and without a keyframe index
def test_keyframes_mode_is_labelled_approximate_and_returns_keyframes(vids, key):
    d = decode_frames(vids[key], "fps:2", mode="keyframes")  # gop 25 at 25 fps: 1 s apart
    assert d.approximate and d.mode == "keyframes"
    assert [f.t for f in d.frames] == pytest.approx([0, 1, 2, 3, 4, 5, 6])
    assert [_colour(f.image) for f in d.frames] == [scene_at(SCENES, f.t) for f in d.frames]
    exact = decode_frames(vids["cfr"], "fps:2")
    assert not exact.approximate and exact.mode in ("sequential", "seek")


# --- geometry -----------------------------------------------------------------------------------
def _quadrant_pattern(w=160, h=120):
    img = np.zeros((h, w, 3), dtype=np.uint8)
    img[: h // 2, : w // 2] = 255  # white top-left quadrant in the coded picture
    return img


def _white_quadrant(image) -> str:
    a = np.asarray(image).mean(axis=2)
    h, w = a.shape
    q = {
        "tl": a[: h // 2, : w // 2],
        "tr": a[: h // 2, w // 2 :],
        "bl": a[h // 2 :, : w // 2],
        "br": a[h // 2 :, w // 2 :],
    }
    return max(q, key=lambda k: q[k].mean())


@pytest.mark.parametrize(
    ("rotation", "size", "corner"),
    [
        (0, (160, 120), "tl"),
        (90, (120, 160), "tr"),
        (180, (160, 120), "br"),
        (270, (120, 160), "bl"),
    ],
)
def test_rotation_metadata_turns_frames_upright(tmp_path, rotation, size, corner):
    # rotation = degrees clockwise for display, as phones write it (ffmpeg's autorotate rule)
    path = make_video(
        tmp_path / f"r{rotation}.mp4",
        [("black", 0.4)],
        rotation=rotation,
        pattern=_quadrant_pattern(),
    )
    info = probe_video(path)
    assert (info.rotation, (info.width, info.height)) == (rotation, size)
    d = decode_frames(path, "uniform:1")
    assert d.frames[0].image.size == size
    assert _white_quadrant(d.frames[0].image) == corner


def test_rotation_agrees_with_opencv_autorotate(tmp_path):
    cv2 = pytest.importorskip("cv2")  # an independent FFmpeg-based reader that autorotates
    path = make_video(
        tmp_path / "r90.mp4", [("black", 0.4)], rotation=90, pattern=_quadrant_pattern()
    )
    cap = cv2.VideoCapture(str(path))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    ours = decode_frames(path, "uniform:1").frames[0].image
    assert bgr.shape[:2] == (ours.size[1], ours.size[0])
    assert _white_quadrant(bgr[:, :, ::-1]) == _white_quadrant(ours)


@pytest.mark.parametrize(
    ("rotation", "size", "corner"), [(0, (160, 120), "tr"), (90, (120, 160), "tl")]
)
def test_mirrored_display_matrix_is_honoured(tmp_path, rotation, size, corner):
    # Front cameras write rotation + mirror. Expected corner from the definition: turn the
    # coded picture clockwise, then mirror left-right. (OpenCV is no reference here: it applies
    # the matrix's angle and ignores the mirror.)
    path = make_video(
        tmp_path / "m.mp4", [("black", 0.4)], rotation=rotation, hflip=True,
        pattern=_quadrant_pattern(),
    )  # fmt: skip
    info = probe_video(path)
    assert (info.rotation, (info.width, info.height)) == (rotation, size)
    image = decode_frames(path, "uniform:1").frames[0].image
    assert image.size == size and _white_quadrant(image) == corner


def test_large_frames_are_downscaled_keeping_clip_resolution(tmp_path):
    path = make_video(tmp_path / "4k.mp4", [("blue", 0.04)], size=(4096, 2160), preset="ultrafast")
    d = decode_frames(path, "uniform:2", max_side=448)
    assert (d.info.width, d.info.height) == (4096, 2160)
    assert d.frames[0].image.size == (448, 236)
    assert _colour(d.frames[0].image) == "blue"


def test_scaled_size_rule():
    assert video_probe.scaled_size(7680, 4320, 448) == (448, 252)
    assert video_probe.scaled_size(4000, 400, 448) == (2240, 224)  # short side kept >= 224
    assert video_probe.scaled_size(160, 120, 448) == (160, 120)  # never upscaled


def test_frame_size_cap_raises_media_too_large(vids, monkeypatch):
    monkeypatch.setattr(video_probe, "MAX_PIXELS", 100 * 100)
    with pytest.raises(MediaTooLargeError, match="160x120"):
        probe_video(vids["cfr"])


def test_max_frames_cap_on_long_video(tmp_path):
    path = make_video(
        tmp_path / "60s.mp4",
        [("red", 30.0), ("blue", 30.0)],
        size=(32, 32),
        fps=10,
        gop=50,
        preset="ultrafast",
    )
    sampler = FrameSampler.parse("fps:10", max_frames=50)
    d = decode_frames(path, sampler)
    assert len(d.frames) == 50
    ts = [f.t for f in d.frames]
    assert ts[0] < 1.5 and ts[-1] > 58.5 and np.all(np.diff(ts) > 1.0)


# --- damage and bad input ------------------------------------------------------------------------
def test_truncated_faststart_mp4_keeps_earlier_frames_with_warning(tmp_path):
    path = make_video(tmp_path / "t.mp4", SCENES, moving_shape=True, gop=25)
    truncate(path, 0.5)
    d = decode_frames(path, "fps:2")
    assert 3 <= len(d.frames) < 14
    assert d.frames[0].t == pytest.approx(0.28)
    assert "truncated" in d.warning and f"kept {len(d.frames)}" in d.warning
    assert [_colour(f.image) for f in d.frames] == [scene_at(SCENES, f.t) for f in d.frames]


def test_truncated_mkv_keeps_earlier_frames_with_warning(tmp_path):
    path = make_video(tmp_path / "t.mkv", SCENES, gop=25)
    truncate(path, 0.5)
    d = decode_frames(path, "fps:2")
    assert 2 <= len(d.frames) < 14 and "truncated" in d.warning


def test_truncated_mp4_without_index_is_a_clear_error(tmp_path):
    path = make_video(tmp_path / "t.mp4", SCENES, faststart=False)
    truncate(path, 0.5)  # the index (moov) is at the end and now missing
    with pytest.raises(CorruptMediaError, match="damaged, truncated or not a video"):
        decode_frames(path)


@pytest.mark.parametrize("mode", ["sequential", "seek"])
def test_corrupt_middle_keeps_frames_before_and_after(tmp_path, mode):
    path = make_video(tmp_path / "c.mp4", SCENES, size=(320, 240), moving_shape=True, gop=25)
    corrupt_middle(path, span=0.05)
    d = decode_frames(path, "fps:4", mode=mode)
    ts = [f.t for f in d.frames]
    assert "corrupt data" in d.warning
    assert ts[0] < 1.0 and ts[-1] > 6.0  # before and after the damage
    assert len(ts) < 28  # some were lost
    assert [_colour(f.image) for f in d.frames] == [scene_at(SCENES, t) for t in ts]


def test_empty_file_is_corrupt(tmp_path):
    (tmp_path / "e.mp4").write_bytes(b"")
    with pytest.raises(CorruptMediaError, match="empty"):
        probe_video(tmp_path / "e.mp4")


def test_text_named_mp4_is_corrupt(tmp_path):
    (tmp_path / "t.mp4").write_text("not a video\n" * 20)
    with pytest.raises(CorruptMediaError, match="not a readable video"):
        decode_frames(tmp_path / "t.mp4")


def test_audio_only_has_no_video_stream(tmp_path):
    path = make_audio_only(tmp_path / "a.m4a")
    with pytest.raises(UnsupportedMediaError, match="no video stream"):
        probe_video(path)


def test_unknown_codec_is_unsupported(vids, tmp_path):
    data = vids["cfr"].read_bytes()
    (tmp_path / "z.mp4").write_bytes(data.replace(b"avc1", b"zzzz"))  # unknown fourcc
    with pytest.raises(UnsupportedMediaError, match="codec"):
        decode_frames(tmp_path / "z.mp4")


def test_missing_file_and_bad_arguments(vids, tmp_path):
    with pytest.raises(NotFoundError):
        probe_video(tmp_path / "nope.mp4")
    with pytest.raises(UsageError, match="decode mode"):
        decode_frames(vids["cfr"], mode="fast")
    with pytest.raises(UsageError, match="sampler"):
        decode_frames(vids["cfr"], "every:3")


def test_frame_reader_streams_the_same_frames(vids):
    with FrameReader(vids["cfr"], "fps:1") as r:
        assert r.info.duration == 7.0 and len(r.targets) == 7
        streamed = [f.t for f in r]
    assert streamed == [f.t for f in decode_frames(vids["cfr"], "fps:1").frames]


# -- a header that lies about the duration ---------------------------------------------------
def forge_mkv_duration(path, seconds: float):
    """Overwrite the Matroska Segment Info Duration (an 8-byte float, in TimecodeScale
    units of 1 ms) with ``seconds``; the file keeps its size and its real frames."""
    import struct

    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89\x88")  # Duration element, 8-byte payload
    assert at > 0, "no 8-byte Duration element in this MKV"
    data[at + 3 : at + 11] = struct.pack(">d", seconds * 1000.0)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("claimed", [2e8, 1e10])
def test_a_lying_duration_is_replaced_by_the_streams_real_end(tmp_path, claimed):
    import tracemalloc

    path = make_video(tmp_path / "short.mkv", [("red", 2.0), ("blue", 2.0)], fps=10, gop=10)
    forge_mkv_duration(path, claimed)
    with av.open(str(path)) as c:
        assert c.duration / 1e6 > 1e8  # the header does lie

    assert probe_video(path).duration == pytest.approx(4.0, abs=0.15)
    tracemalloc.start()
    try:
        got = decode_frames(path, "fps:1")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [round(f.t, 1) for f in got.frames] == [0.5, 1.5, 2.5, 3.5]
    assert [nearest_colour(np.asarray(f.image)[20, 20]) for f in got.frames] == [
        "red",
        "red",
        "blue",
        "blue",
    ]
    assert got.info.duration == pytest.approx(4.0, abs=0.15)
    assert got.info.frame_count == pytest.approx(40, abs=2)
    assert peak < 64 << 20  # no allocation by the claimed length
    assert f"header says {claimed:.1f} s but the stream ends at 4.0 s" in got.warning


def test_an_honest_header_keeps_its_duration(vids):
    for name in ("cfr", "mkv", "vfr"):
        with av.open(str(vids[name])) as c:
            header = c.streams.video[0].duration
            header = float(header * c.streams.video[0].time_base) if header else c.duration / 1e6
        assert probe_video(vids[name]).duration == header
