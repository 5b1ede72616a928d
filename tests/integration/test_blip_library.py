"""BLIP through the Library: captions written, resumed and searched; --rerank itm over a
real (tiny, random) BLIP ITM model; errors before any work when the model is missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clipsearch import Library
from clipsearch.errors import QueryError, WeightsUnavailableError
from clipsearch.ingest.captioning import CaptionOptions, moment_times
from clipsearch.models.blip import load_captioner, load_matcher
from clipsearch.store.texts import CAPTION
from tests.blipgen import ColourCaptioner
from tests.fakes import ColourEncoder, make_image
from tests.videogen import make_video

COLOURS = ["red", "green", "blue", "yellow", "magenta", "cyan"]


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    for c in COLOURS:
        make_image(root / f"{c}.jpg", c)
    make_video(root / "clip.mp4", (("red", 1.0), ("blue", 1.0), ("green", 1.0)))
    return root


@pytest.fixture(scope="module")
def matcher(tiny_blip_itm):
    return load_matcher(str(tiny_blip_itm), precision="fp32")


def test_caption_writes_one_caption_per_image_and_per_video_moment(tmp_path, media):
    cap = ColourCaptioner()
    with Library(tmp_path / "lib", encoder=ColourEncoder(), captioner=cap) as lib:
        lib.index([media])
        report = lib.caption(CaptionOptions(video_moments=3))
        assert (report.items, report.failed, report.skipped) == (7, 0, 0)
        assert report.captions == 6 + 3
        video = lib.catalog.item_by_path(str(media / "clip.mp4"))
        rows = [(t, text) for src, t, text in lib.catalog.texts.texts(video.id) if src == CAPTION]
        assert [text.split()[-1] for _, text in rows] == ["red", "blue", "green"]
        ts, _ = lib.catalog.frames([video.id])[video.id]
        assert all(np.any(np.isclose(ts, t)) for t, _ in rows)  # stored frame times
        again = lib.caption()  # resumable: nothing left to do
        assert (again.items, again.skipped) == (0, 7) and cap.captioned == 9


def test_captions_are_searchable_and_shown_with_hits(tmp_path, media):
    with Library(tmp_path / "lib", encoder=ColourEncoder(), captioner=ColourCaptioner()) as lib:
        lib.index([media])
        lib.caption()
        hits = lib.search("a blue photo", where=["text:something blue"], with_captions=True)
        assert {Path(h.path).name for h in hits} == {"blue.jpg", "clip.mp4"}
        by_name = {Path(h.path).name: h for h in hits}
        assert by_name["blue.jpg"].caption == "a photo of something blue"
        assert by_name["clip.mp4"].to_dict()["caption"].startswith("a photo of something")
        assert "caption" not in lib.search("red", k=1)[0].to_dict()


def test_index_with_captions_captions_new_files_only(tmp_path, media):
    cap = ColourCaptioner()
    with Library(tmp_path / "lib", encoder=ColourEncoder(), captioner=cap) as lib:
        report = lib.index([media], captions=CaptionOptions(video_moments=2))
        assert report.captions.items == 7 and report.to_dict()["captions"]["captions"] == 8
        make_image(media / "white.jpg", "white")
        report = lib.index([media], captions=CaptionOptions(video_moments=2))
        assert (report.captions.items, report.captions.skipped) == (1, 7)
        assert lib.catalog.texts.coverage(CAPTION)["texts"] == 9


def test_an_undecodable_file_is_counted_and_retried_later(tmp_path, media):
    with Library(tmp_path / "lib", encoder=ColourEncoder(), captioner=ColourCaptioner()) as lib:
        lib.index([media])
        (media / "green.jpg").write_bytes(b"not a jpeg any more")
        report = lib.caption()
        assert report.failed == 1 and report.items == 6
        assert "green.jpg" in report.errors[0]["path"]
        todo, _ = lib.catalog.texts.pending(CAPTION, ColourCaptioner.name, frames=True)
        assert [lib.catalog.item(i).path for i in todo] == [str(media / "green.jpg")]


def test_real_tiny_captioner_through_the_library(tmp_path, media, tiny_blip_caption):
    cap = load_captioner(str(tiny_blip_caption), precision="fp32")
    with Library(tmp_path / "lib", encoder=ColourEncoder(), captioner=cap) as lib:
        lib.index([media])
        report = lib.caption(CaptionOptions(max_new_tokens=4, num_beams=1, video_moments=1))
        assert report.items == 7 and report.model == str(tiny_blip_caption)
        assert lib.catalog.texts.unread(CAPTION, str(tiny_blip_caption), frames=True) == set()
        assert lib.catalog.texts.unread(CAPTION, "another-model", frames=True) != set()


def test_moment_times_spread_over_the_sampled_frames():
    ts = np.arange(12) * 0.5
    assert moment_times(ts, 4) == [0.5, 2.0, 3.5, 5.0]
    assert moment_times(ts[:2], 4) == [0.0, 0.5]


# --- ITM re-ranking ------------------------------------------------------------------------------
def test_rerank_itm_reorders_the_top_k_by_the_fused_score(tmp_path, media, matcher):
    with Library(tmp_path / "lib", encoder=ColourEncoder(), matcher=matcher) as lib:
        lib.index([media])
        plain = lib.search("a red thing", k=7)
        hits = lib.search("a red thing", k=7, rerank="itm", rerank_k=5)
        assert {h.item_id for h in hits[:5]} == {h.item_id for h in plain[:5]}
        assert [h.item_id for h in hits[5:]] == [h.item_id for h in plain[5:]]
        head = hits[:5]
        assert [h.score for h in head] == sorted((h.score for h in head), reverse=True)
        for h in head:
            p = h.itm_score
            assert h.score == pytest.approx(np.log(p / (1 - p)) + h.clip_score, abs=1e-5)
        page2 = lib.search("a red thing", k=2, offset=2, rerank="itm", rerank_k=5)
        assert [h.item_id for h in page2] == [h.item_id for h in hits[2:4]]
        assert [h.rank for h in page2] == [3, 4]
        itm_only = lib.search("a red thing", k=5, rerank="itm", rerank_k=5, rerank_score="itm")
        assert all(h.score == h.itm_score for h in itm_only)


def test_rerank_itm_needs_text_and_fails_before_loading_anything(tmp_path, media, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        lib.index([media])
        with pytest.raises(QueryError, match="text"):
            lib.search(image=[media / "red.jpg"], rerank="itm")
        with pytest.raises(WeightsUnavailableError, match="--itm-model"):
            lib.search("a red thing", rerank="itm")
    with (
        Library(tmp_path / "lib2", encoder=ColourEncoder()) as lib,
        pytest.raises(WeightsUnavailableError, match="--caption-model"),
    ):
        lib.index([media], captions=CaptionOptions())
    assert not (tmp_path / "lib2" / "ann").exists()  # nothing was indexed


def test_status_counts_captions_and_itm_refuses_gap_correction(tmp_path, media, matcher):
    from clipsearch.errors import UsageError

    with Library(
        tmp_path / "lib", encoder=ColourEncoder(), captioner=ColourCaptioner(), matcher=matcher
    ) as lib:
        lib.index([media])
        assert lib.status().to_dict()["captions"]["texts"] == 0
        lib.caption(CaptionOptions(video_moments=2))
        captions = lib.status().to_dict()["captions"]
        assert captions["texts"] == 8 and captions["by_kind"]["video"]["with_text"] == 1
        with pytest.raises(UsageError, match="gap-correction"):
            lib.search("red", rerank="itm", gap_correction="shift")


def test_a_text_query_matches_captions_through_the_text_index(tmp_path, media):
    with Library(tmp_path / "lib", encoder=ColourEncoder(), captioner=ColourCaptioner()) as lib:
        lib.index([media])
        assert all(h.text_match is None for h in lib.search("something cyan", k=3))
        lib.caption(CaptionOptions(video_moments=2))
        hits = lib.search("something cyan", k=3)  # text matching is on once captions exist
        top = hits[0]
        assert Path(top.path).name == "cyan.jpg"
        assert top.text_match.source == CAPTION and top.text_match.text.endswith("cyan")
        assert top.to_dict()["text_match"]["source"] == "caption"
        off = lib.search("something cyan", k=3, text_match=False)
        assert all(h.text_match is None for h in off)


def test_rerank_itm_order_is_the_cross_encoders_even_with_captions(tmp_path, media):
    from tests.blipgen import ColourMatcher

    with Library(
        tmp_path / "lib",
        encoder=ColourEncoder(),
        captioner=ColourCaptioner(),
        matcher=ColourMatcher(),
    ) as lib:
        lib.index([media])
        lib.caption(CaptionOptions(video_moments=1))
        plain = lib.search("yellow", k=7)
        text = "something green"  # ITM reads this; the CLIP ranking is the query's
        hits = lib.search("yellow", k=7, rerank="itm", rerank_k=7, rerank_text=text)
        assert {h.item_id for h in hits} == {h.item_id for h in plain}
        green = [h for h in hits if h.itm_score == pytest.approx(0.9)]
        assert green and hits[: len(green)] == green  # ITM's matches first
        assert all(h.text_match is None for h in hits)  # no text fusion unless asked


def test_rerank_itm_with_text_matching_fuses_the_itm_order_with_the_captions(tmp_path, media):
    from tests.blipgen import ColourMatcher

    with Library(
        tmp_path / "lib",
        encoder=ColourEncoder(),
        captioner=ColourCaptioner(),
        matcher=ColourMatcher(),
    ) as lib:
        lib.index([media])
        lib.caption(CaptionOptions(video_moments=1))
        hits = lib.search("something cyan", k=7, rerank="itm", rerank_k=7, text_match=True)
        assert Path(hits[0].path).name == "cyan.jpg"  # first for ITM and for the captions
        assert hits[0].itm_score == pytest.approx(0.9) and hits[0].text_match is not None
        assert all(h.itm_score is not None for h in hits)
