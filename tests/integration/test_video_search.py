"""Video search end to end: index videos beside photos, find the video and the moment.

ColourEncoder (tests/fakes.py) embeds each frame by its colour, so a query naming the
colour of a scene must return that video with a moment inside that scene."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipsearch import Library
from clipsearch.errors import UsageError
from clipsearch.ingest import IndexOptions
from tests.fakes import ColourEncoder, make_image
from tests.videogen import make_audio_only, make_video, truncate

SCENES = (("red", 2.0), ("blue", 3.0), ("green", 2.0))  # blue lies in [2, 5]


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    make_video(root / "rbg.mp4", SCENES)
    make_video(root / "yellow-magenta.mp4", (("yellow", 2.0), ("magenta", 2.0)))
    make_image(root / "orange.jpg", "orange")
    make_image(root / "blue photo.jpg", "cyan")
    return root


@pytest.fixture
def lib(tmp_path, media):
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        report = lib.index([media], options=IndexOptions(video_sampler="fps:2"))
        assert report.failed == 0
        assert report.frames > 0
        yield lib


@pytest.mark.parametrize("pooling", ["peak", "mean", "max", "softmax"])
def test_scene_colour_finds_the_video_and_the_moment(lib, pooling):
    hits = lib.search("blue", kind="video", pooling=pooling, k=2)
    top = hits[0]
    assert Path(top.path).name == "rbg.mp4" and top.kind == "video"
    m = top.moment
    assert m is not None
    assert 2.0 - 0.3 <= m.start < m.end <= 5.0 + 0.3, m
    assert 2.0 <= m.best_t <= 5.0
    assert top.duration == pytest.approx(7.0, abs=0.2)


def test_shot_cuts_found_while_indexing_place_the_moment_on_the_cuts(lib):
    rbg = lib.catalog.item_by_path(str(Path(lib.catalog.roots()[0][1]) / "rbg.mp4"))
    cuts = lib.catalog.cuts([rbg.id])[rbg.id]
    np.testing.assert_allclose(cuts, [2.0, 5.0], atol=0.05)  # 25 fps: within a frame or so
    (hit,) = lib.search("blue", kind="video", k=1)
    assert (hit.moment.start, hit.moment.end) == (cuts[0], cuts[1])  # not cell midpoints


def test_several_moments_per_video(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    scenes = (("red", 2.0), ("blue", 3.0), ("green", 2.0), ("red", 3.0), ("yellow", 2.0))
    make_video(root / "twice.mp4", scenes)
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        lib.index([root], options=IndexOptions(video_sampler="fps:2"))
        (one,) = lib.search("red", k=1)
        (hit,) = lib.search("red", k=1, moments=3)
    assert len(one.moments) == 1 and one.moment == hit.moment
    spans = sorted((m.start, m.end) for m in hit.moments)
    assert len(spans) == 2  # the two red scenes; blue, green and yellow are background
    assert spans[0] == pytest.approx((0.0, 2.0), abs=0.05)
    assert spans[1] == pytest.approx((7.0, 10.0), abs=0.05)
    d = hit.to_dict()
    assert [m["start"] for m in d["moments"]] == [round(m.start, 3) for m in hit.moments]
    assert d["moment"] == d["moments"][0] and set(d["moment"]) == {
        "start",
        "end",
        "best_t",
        "score",
    }
    with pytest.raises(UsageError, match="moments must be between 1 and 20"):
        Library(tmp_path / "lib", encoder=ColourEncoder()).search("red", moments=0)


def test_mixed_results_and_curve(lib):
    hits = lib.search("green", k=4, with_curve=True)
    assert {h.kind for h in hits} == {"image", "video"}
    video = next(h for h in hits if h.path.endswith("rbg.mp4"))
    t, s = video.curve.timestamps, video.curve.scores
    assert len(t) == len(s) >= 10
    assert s[t > 5.2].mean() > s[t < 4.8].mean()  # green is the last scene
    d = video.to_dict()
    assert d["moment"]["start"] >= 4.5 and "curve" in d


def test_image_query_finds_the_video_it_came_from(lib, tmp_path):
    still = tmp_path / "still.png"
    make_image(still, "magenta", size=(160, 120))
    hits = lib.search(image=still, kind="video", k=1)
    assert Path(hits[0].path).name == "yellow-magenta.mp4"
    assert hits[0].moment.best_t >= 2.0


def test_video_query(lib, tmp_path):
    q = make_video(tmp_path / "q.mp4", (("yellow", 1.0), ("magenta", 1.0)))
    hits = lib.search(video=q, k=1)
    assert Path(hits[0].path).name == "yellow-magenta.mp4"


def test_bad_videos_are_recorded_and_do_not_stop_the_run(tmp_path, media):
    good = media / "rbg.mp4"
    (media / "empty.mp4").write_bytes(b"")
    (media / "notes.mov").write_text("not a video")
    make_audio_only(media / "sound.mp4")
    broken = media / "cut.mp4"
    broken.write_bytes(good.read_bytes())
    truncate(broken, 0.5)
    with Library(tmp_path / "lib2", encoder=ColourEncoder()) as lib:
        report = lib.index([media])
        failures = {Path(f["path"]).name: f["error"] for f in lib.status().failures}
    assert {"empty.mp4", "notes.mov", "sound.mp4"} <= set(failures)
    assert "video stream" in failures["sound.mp4"]
    assert report.failed == len(failures)
    assert report.scanned - report.failed >= 4  # the good videos and photos all made it


def test_reindex_skips_unchanged_videos(lib, media):
    report = lib.index([media], options=IndexOptions(video_sampler="fps:2"))
    assert report.added == 0 and report.unchanged == 4


def test_frames_filling_the_row_window_do_not_hide_better_images(tmp_path):
    """Many videos with a short red opening put their frames at the top of stage 1; under
    mean pooling the red photos still score higher and must come first, page by page (and
    under the default pooling, every page is the same slice of the full ranking)."""
    root = tmp_path / "m"
    root.mkdir()
    for i in range(20):
        make_video(root / f"v{i:02d}.mp4", (("red", 2.0), ("blue", 2.0)), size=(64, 48))
    for i in range(10):
        make_image(root / f"red{i}.jpg", "red", seed=i)
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        lib.index([root], options=IndexOptions(video_sampler="fps:4"))
        everything = lib.search("red", k=40, pooling="mean")
        assert [h.kind for h in everything[:10]] == ["image"] * 10
        assert lib.search("red", k=1, pooling="mean")[0].kind == "image"
        for offset in (0, 5, 10, 15):
            page = lib.search("red", k=5, offset=offset, pooling="mean")
            assert [h.item_id for h in page] == [h.item_id for h in everything[offset : offset + 5]]
        everything = lib.search("red", k=40)
        assert len(everything) == 30
        for offset in (0, 5, 10, 25):
            page = lib.search("red", k=5, offset=offset)
            assert [h.item_id for h in page] == [h.item_id for h in everything[offset : offset + 5]]


def test_moments_are_found_for_the_page_shown_after_folding_and_date_order(tmp_path, monkeypatch):
    root = tmp_path / "m"
    root.mkdir()
    make_video(root / "a.mp4", SCENES)
    make_video(root / "b.mp4", SCENES)  # the same film again: a near-duplicate of a.mp4
    make_video(root / "c.mp4", (("green", 2.0), ("blue", 2.0)))
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        lib.index([root], options=IndexOptions(video_sampler="fps:2"))
        folded = lib.search("blue", kind="video", collapse=True, min_score="none", moments=2)
        by_date = lib.search("blue", kind="video", sort="-date", min_score="none", k=3)
        import clipsearch.search.engine as engine

        calls = []
        real = engine.find_moments
        monkeypatch.setattr(
            engine, "find_moments", lambda *a, **kw: calls.append(1) or real(*a, **kw)
        )
        (first,) = lib.search("blue", kind="video", sort="date", min_score="none", k=1)
    assert len(folded) == 2  # a.mp4 and b.mp4 are one result
    group = next(h for h in folded if h.members)
    (member,) = group.members
    assert {Path(group.path).name, Path(member.hit.path).name} == {"a.mp4", "b.mp4"}
    for shown in (group, member.hit):  # the folded copy gets its own moments too
        assert 2.0 - 0.3 <= shown.moment.start < shown.moment.end <= 5.0 + 0.3
    assert member.hit.moments == group.moments  # same film, same moments
    assert group.to_dict()["members"][0]["moment"] == group.to_dict()["moment"]
    assert len(by_date) == 3 and all(h.moment is not None for h in by_date)
    blue_c = next(h for h in by_date if h.path.endswith("c.mp4")).moment
    assert 2.0 - 0.3 <= blue_c.start < blue_c.end <= 4.0 + 0.3
    assert first.moment is not None and len(calls) == 1  # the page only, not every candidate
