"""FrameSampler parsing and target timestamps; shot detection on synthetic frames."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest

from clipsearch.errors import UsageError
from clipsearch.media.sampling import (
    AUTO_UNIFORM_MAX_S,
    SEEK_COST_FRAMES,
    FrameSampler,
    choose_mode,
    detect_shots,
    seek_cost,
)


@pytest.mark.parametrize(
    ("spec", "kind", "attr", "value"),
    [
        ("uniform:12", "uniform", "n", 12),
        ("fps:1", "fps", "rate", 1.0),
        ("fps:0.5", "fps", "rate", 0.5),
        (" fps : 2 ", "fps", "rate", 2.0),
        ("shots", "shots", "per_shot", 1),
        ("shots:3", "shots", "per_shot", 3),
        ("auto", "auto", "kind", "auto"),
    ],
)
def test_parse_accepts_documented_forms_and_round_trips(spec, kind, attr, value):
    s = FrameSampler.parse(spec)
    assert s.kind == kind
    assert getattr(s, attr) == value
    assert FrameSampler.parse(str(s)) == s


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "uniform",
        "uniform:0",
        "uniform:1.5",
        "uniform:-3",
        "fps",
        "fps:0",
        "fps:-1",
        "fps:abc",
        "fps:inf",
        "shots:0",
        "auto:3",
        "frames:3",
        "uniform:12:3",
    ],
)
def test_parse_rejects_bad_specs_with_usage_error(spec):
    with pytest.raises(UsageError) as e:
        FrameSampler.parse(spec)
    assert spec.strip().split(":")[0] in str(e.value) or "uniform:N" in str(e.value)


def test_parse_rejects_bad_max_frames():
    with pytest.raises(UsageError, match="max_frames"):
        FrameSampler.parse("fps:1", max_frames=0)


def test_uniform_is_segment_centres():
    t = FrameSampler.parse("uniform:4").timestamps(8.0)
    np.testing.assert_allclose(t, [1.0, 3.0, 5.0, 7.0])


def test_fps_is_one_frame_per_period_at_period_centres():
    np.testing.assert_allclose(
        FrameSampler.parse("fps:1").timestamps(5.0), [0.5, 1.5, 2.5, 3.5, 4.5]
    )
    np.testing.assert_allclose(FrameSampler.parse("fps:2").timestamps(1.3), [0.25, 0.75, 1.25])
    # a video shorter than one period still gets one frame, in its middle
    np.testing.assert_allclose(FrameSampler.parse("fps:1").timestamps(0.3), [0.15])


def test_auto_is_uniform12_up_to_threshold_then_1fps():
    auto = FrameSampler.parse("auto")
    short = auto.timestamps(AUTO_UNIFORM_MAX_S)
    assert len(short) == 12
    np.testing.assert_allclose(short, FrameSampler.parse("uniform:12").timestamps(12.0))
    long_ = auto.timestamps(100.0)
    np.testing.assert_allclose(long_, FrameSampler.parse("fps:1").timestamps(100.0))
    assert str(auto.resolve(5.0)) == "uniform:12" and str(auto.resolve(30.0)) == "fps:1"


def test_cap_spreads_frames_evenly_over_the_whole_video():
    t = FrameSampler.parse("fps:10", max_frames=50).timestamps(60.0)
    assert len(t) == 50
    assert np.all(np.diff(t) > 0)
    np.testing.assert_allclose(np.diff(t), 1.2, atol=0.11)  # 600 targets thinned 12:1
    assert t[0] < 1.5 and t[-1] > 58.5


def test_ten_hour_video_is_capped_by_default():
    t = FrameSampler.parse("auto").timestamps(10 * 3600.0)
    assert len(t) == 512
    assert t[-1] > 10 * 3600 - 100


@pytest.mark.parametrize("spec", ["fps:1", "fps:30", "auto", "uniform:100000000"])
def test_a_huge_duration_costs_max_frames_not_the_duration(spec):
    """A header may claim any duration (10^10 s): targets are computed for the capped
    count only, never allocated for every period of the claimed length."""
    import tracemalloc

    sampler = FrameSampler.parse(spec, max_frames=64)
    tracemalloc.start()
    try:
        t = sampler.timestamps(1e10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # bytes: the 64 targets and their index, not 10^10 of them
    assert len(t) == 64 and np.all(np.diff(t) > 0) and t[0] > 0 and t[-1] < 1e10


def test_capped_targets_are_the_same_as_thinning_the_full_list():
    for spec, duration in (("fps:10", 60.0), ("fps:2.5", 1234.5), ("uniform:700", 33.0)):
        full = FrameSampler.parse(spec, max_frames=100_000).timestamps(duration)
        capped = FrameSampler.parse(spec, max_frames=50).timestamps(duration)
        idx = np.floor((np.arange(50) + 0.5) * (len(full) / 50)).astype(int)
        np.testing.assert_allclose(capped, full[idx])


def test_shots_give_k_centres_per_shot_and_need_shots():
    shots = [(0.0, 2.0), (2.0, 5.0)]
    np.testing.assert_allclose(FrameSampler.parse("shots").timestamps(5.0, shots=shots), [1.0, 3.5])
    np.testing.assert_allclose(
        FrameSampler.parse("shots:2").timestamps(5.0, shots=shots), [0.5, 1.5, 2.75, 4.25]
    )
    with pytest.raises(UsageError, match="shot"):
        FrameSampler.parse("shots").timestamps(5.0)


def test_degenerate_duration_gives_one_frame_at_zero():
    assert FrameSampler.parse("fps:1").timestamps(0.0).tolist() == [0.0]
    assert FrameSampler.parse("uniform:12").timestamps(float("nan")).tolist() == [0.0]


def _solid(rgb, h=36, w=64):
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = rgb[::-1]  # BGR
    return img


@pytest.mark.parametrize("vfr", [False, True])
def test_detect_shots_finds_cuts_at_exact_pts(vfr):
    # red until 2.0 s, blue until 5.0 s, green until 7.0 s; VFR: uneven 20/40/60 ms steps
    tb = Fraction(1, 1000)
    steps = [20, 40, 60] if vfr else [40]
    pts, k, frames = 0, 0, []
    while pts < 7000:
        colour = (220, 20, 20) if pts < 2000 else (20, 20, 220) if pts < 5000 else (20, 200, 20)
        frames.append((pts, _solid(colour)))
        pts += steps[k % len(steps)]
        k += 1
    cut_pts = [next(p for p, _ in frames if p >= edge) for edge in (2000, 5000)]
    shots = detect_shots(iter(frames), time_base=tb, frame_rate=25, duration=7.0)
    assert len(shots) == 3
    assert shots[0][0] == 0.0 and shots[-1][1] == 7.0
    assert [round(s[0] * 1000) for s in shots[1:]] == cut_pts
    assert all(a[1] == b[0] for a, b in itertools.pairwise(shots))


def test_detect_shots_without_cuts_is_one_shot():
    frames = [(k, _solid((128, 128, 128))) for k in range(50)]
    assert detect_shots(iter(frames), time_base=Fraction(1, 25), frame_rate=25, duration=2.0) == [
        (0.0, 2.0)
    ]


# --- decode planning ---------------------------------------------------------------------------
def test_seek_cost_walks_targets_like_the_decoder():
    # fps 10, keyframes at 0 and 2 s: 0.5 s costs a seek + 5 frames, 1.5 s continues (10 frames)
    cost = seek_cost(np.array([0.5, 1.5]), np.array([0.0, 2.0]), 10.0)
    assert cost == pytest.approx(SEEK_COST_FRAMES + 5 + 10)


def _mode(spec: str, duration: float, gop_s: float | None) -> str:
    kf = None if gop_s is None else np.arange(0, duration, gop_s)
    targets = FrameSampler.parse(spec).timestamps(duration)
    return choose_mode(targets, kf, duration=duration, fps=25.0, frame_count=int(duration * 25))


def test_auto_mode_seeks_only_when_it_skips_decoding():
    assert _mode("uniform:12", 10, 10.0) == "sequential"  # one GOP: nothing to skip
    assert _mode("fps:4", 10, 2.0) == "sequential"  # every GOP needed to its end
    assert _mode("uniform:12", 600, 2.0) == "seek"  # 12 frames out of 10 minutes
    assert _mode("uniform:12", 600, None) == "seek"  # no index, but targets 50 s apart
    assert _mode("fps:4", 100, 2.0) == "sequential"  # (600 s would be capped to 512 frames)
    assert _mode("fps:1", 600, 0.5) == "seek"  # short GOPs: skip 3 of every 4
