"""ITM re-ranking of first-stage hits through the engine's rescoring hook: order = the
cross-encoder's order, videos by their best frame, fusion rule, unreadable files kept,
hits past K in their first-stage order below the re-ranked ones."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from clipsearch.errors import QueryError, UsageError
from clipsearch.media import load_image
from clipsearch.media.frame_at import grab_video_frame
from clipsearch.models.blip import load_matcher
from clipsearch.search.hits import Hit
from clipsearch.search.itm import ItmRescorer, fuse, itm_text
from clipsearch.search.query import parse_query, plan_from_parts
from clipsearch.search.rescore import Query
from clipsearch.search.video import Moment
from tests.fakes import make_image
from tests.videogen import make_video

COLOURS = ["red", "green", "blue", "yellow", "cyan", "magenta", "white", "black"]


@pytest.fixture(scope="module")
def matcher(tiny_blip_itm):
    return load_matcher(str(tiny_blip_itm), precision="fp32")


def rerank(rescorer: ItmRescorer, text: str, hits: list[Hit]) -> list[Hit]:
    """What `Searcher.search` does with a rescorer: rescore, sort by (-score, id), renumber."""
    scores = rescorer.rescore(Query(np.zeros(4, np.float32), parse_query(text)), hits)
    order = sorted(range(len(hits)), key=lambda i: (-float(scores[i]), hits[i].item_id))
    ranked = [replace(hits[i], score=float(scores[i]), rank=r) for r, i in enumerate(order, 1)]
    return rescorer.annotate(ranked)


def _image_hits(tmp_path, n: int) -> list[Hit]:
    hits = []
    for i in range(n):
        path = make_image(tmp_path / f"{i}.png", COLOURS[i % len(COLOURS)], size=(40 + 4 * i, 36))
        # first-stage scores decrease with i
        hits.append(
            Hit(item_id=100 + i, path=str(path), kind="image", score=0.5 - 0.01 * i, rank=i + 1)
        )
    return hits


def test_reranked_order_is_the_itm_order(tmp_path, matcher):
    hits = _image_hits(tmp_path, 8)
    text = "a red car on the road"
    out = rerank(ItmRescorer(matcher, k=8, score="itm"), text, hits)
    images = [load_image(h.path, min_side=matcher.image_size).image for h in hits]
    p = matcher.score(text, images).probability
    want = [hits[i].item_id for i in sorted(range(8), key=lambda i: (-p[i], -hits[i].score))]
    assert [h.item_id for h in out] == want
    assert [h.rank for h in out] == list(range(1, 9))
    by_id = {h.item_id: h for h in out}
    for i, h in enumerate(hits):
        assert by_id[h.item_id].itm_score == pytest.approx(p[i], abs=1e-6)
        assert by_id[h.item_id].clip_score == h.score
        assert by_id[h.item_id].score == pytest.approx(p[i], abs=1e-6)
    assert out[0].to_dict()["itm_score"] == pytest.approx(out[0].itm_score, abs=1e-6)


def test_fusion_adds_the_itm_log_odds_to_the_clip_score(tmp_path, matcher):
    hits = _image_hits(tmp_path, 5)
    out = rerank(ItmRescorer(matcher, k=5, score="fusion"), "a blue house", hits)
    for h in out:
        p = h.itm_score
        assert h.score == pytest.approx(np.log(p / (1 - p)) + h.clip_score, abs=1e-5)
    assert [h.score for h in out] == sorted((h.score for h in out), reverse=True)


def test_fuse_rules():
    p, c = np.array([0.5, 0.9, 0.9]), np.array([0.3, 0.1, 0.2])
    np.testing.assert_allclose(fuse(p, c, "itm"), p)
    np.testing.assert_allclose(fuse(p, c, "fusion"), [0.3, np.log(9) + 0.1, np.log(9) + 0.2])
    assert np.isfinite(fuse(np.array([0.0, 1.0]), np.zeros(2), "fusion")).all()
    with pytest.raises(UsageError):
        fuse(p, c, "max")


def test_only_the_top_k_move_and_the_rest_keep_their_order(tmp_path, matcher):
    hits = _image_hits(tmp_path, 8)
    out = rerank(ItmRescorer(matcher, k=3), "a dog", hits)
    assert {h.item_id for h in out[:3]} == {h.item_id for h in hits[:3]}
    assert [h.item_id for h in out[3:]] == [h.item_id for h in hits[3:]]
    assert all(h.itm_score is None for h in out[3:])
    assert all(h.itm_score is not None for h in out[:3])
    # below the re-ranked block, CLIP score differences kept
    assert out[3].score < min(h.score for h in out[:3])
    gaps = np.diff([h.score for h in out[3:]])
    np.testing.assert_allclose(gaps, np.diff([h.score for h in hits[3:]]), atol=1e-9)


def test_a_video_is_judged_on_its_best_moment_frame(tmp_path, matcher):
    video = make_video(tmp_path / "v.mp4", (("red", 1.0), ("blue", 1.0), ("green", 1.0)))
    moment = Moment(start=1.0, end=2.0, best_t=1.5, score=0.3)
    hit = Hit(
        item_id=1, path=str(video), kind="video", score=0.4, rank=1, duration=3.0, moments=(moment,)
    )
    img = make_image(tmp_path / "i.png", "red")
    other = Hit(item_id=2, path=str(img), kind="image", score=0.3, rank=2)
    out = rerank(ItmRescorer(matcher, k=2, score="itm"), "a blue sky", [hit, other])
    frame = grab_video_frame(video, 1.5, size=matcher.image_size)
    want = matcher.score("a blue sky", [frame]).probability[0]
    got = next(h for h in out if h.item_id == 1)
    assert got.itm_score == pytest.approx(want, abs=1e-6)
    red_frame = grab_video_frame(video, 0.5, size=matcher.image_size)
    assert abs(matcher.score("a blue sky", [red_frame]).probability[0] - want) > 1e-6


def test_an_unreadable_candidate_goes_after_the_rescored_ones(tmp_path, matcher):
    hits = _image_hits(tmp_path, 4)
    (tmp_path / "1.png").unlink()
    out = rerank(ItmRescorer(matcher, k=4), "a cat", hits)
    assert out[3].item_id == 101 and out[3].itm_score is None and out[3].clip_score == hits[1].score
    assert all(h.itm_score is not None for h in out[:3])


def test_second_query_over_the_same_candidates_reuses_image_states(tmp_path, matcher, monkeypatch):
    hits = _image_hits(tmp_path, 4)
    rr = ItmRescorer(matcher, k=4)
    first = rerank(rr, "a red dog", hits)
    import clipsearch.search.itm as itm

    def no_decoding(*a, **k):
        raise AssertionError("cached candidates must not be decoded again")

    monkeypatch.setattr(itm, "_frame_of", no_decoding)
    again = rerank(rr, "a red dog", hits)
    assert [(h.item_id, h.score) for h in again] == [(h.item_id, h.score) for h in first]


def test_itm_text_keeps_positive_text_terms(tmp_path):
    assert itm_text(parse_query('"2:golden retriever" - "blurry"')) == "golden retriever"
    assert itm_text(parse_query("a dog on a beach")) == "a dog on a beach"
    example = make_image(tmp_path / "q.png", "red")
    with pytest.raises(QueryError, match="no positive text"):
        itm_text(plan_from_parts(images=(str(example),)))
    with pytest.raises(QueryError, match="no positive text"):
        itm_text(parse_query(f'{example} - "blurry"'))


def test_bad_options_are_usage_errors(matcher):
    with pytest.raises(UsageError):
        ItmRescorer(matcher, k=0)
    with pytest.raises(UsageError):
        ItmRescorer(matcher, score="best")


def test_the_rescorer_asks_the_engine_for_k_candidates(matcher):
    assert ItmRescorer(matcher, k=32).depth(10) == 32
    assert ItmRescorer(matcher, k=5).depth(50) == 5  # the engine fetches max(depth, need)


def test_a_query_without_text_is_a_query_error_unless_a_text_is_given(tmp_path, matcher):
    hits = _image_hits(tmp_path, 2)
    vector_only = Query(np.zeros(4, np.float32), None)
    with pytest.raises(QueryError, match="no query text"):
        ItmRescorer(matcher).rescore(vector_only, hits)
    given = ItmRescorer(matcher, k=2, score="itm", text="a red square")
    images = [load_image(h.path, min_side=matcher.image_size).image for h in hits]
    want = matcher.score("a red square", images).probability
    np.testing.assert_allclose(given.rescore(vector_only, hits), want, atol=1e-6)
