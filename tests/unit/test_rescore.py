"""The rescoring hook of `Searcher.search` and the rescorers built on it (hubness, gap),
on a catalog written straight from ColourEncoder vectors (no ingest, no Library)."""

from __future__ import annotations

import numpy as np
import pytest

from clipsearch.errors import UsageError
from clipsearch.index import ExactIndex
from clipsearch.search import gap, rerank
from clipsearch.search.banks import BankCache
from clipsearch.search.engine import Searcher, SearchOptions
from clipsearch.search.query import parse_query
from clipsearch.search.rescore import Query
from tests.fakes import colour_image, write_catalog

COLOURS = ("red", "red", "red", "blue", "blue", "green", "yellow", "cyan", "magenta", "orange")


@pytest.fixture
def catalog(tmp_path, fake_encoder):
    items = {f"/p/{c}_{i}.jpg": colour_image(c, seed=i) for i, c in enumerate(COLOURS)}
    items["/p/clip.mp4"] = [colour_image("red", seed=50 + i) for i in range(3)] + [
        colour_image("blue", seed=60 + i) for i in range(3)
    ]
    cat = write_catalog(tmp_path / "lib", fake_encoder, items)
    yield cat
    cat.close()


@pytest.fixture
def searcher(catalog):
    table = catalog.load_vectors()
    index = ExactIndex(table.ids, table.vectors, precision="fp32")
    return Searcher(catalog, lambda: index)


class Recorder:
    """A rescorer that keeps what it was given and scores by a fixed rule."""

    def __init__(self, depth: int, score=lambda h: -h.score) -> None:
        self._depth, self._score = depth, score
        self.seen: list[tuple[Query, list]] = []

    def depth(self, need: int) -> int:
        return self._depth

    def rescore(self, query, hits):
        self.seen.append((query, list(hits)))
        return np.array([self._score(h) for h in hits])


def test_the_hook_widens_rescores_sorts_pages_and_renumbers(searcher, fake_encoder):
    q = fake_encoder.encode_texts(["red"])[0]
    plan = parse_query('red - "blurry"')
    raw = searcher.search(q, SearchOptions(k=11))
    rec = Recorder(depth=8)  # new score = −raw score
    hits = searcher.search(q, SearchOptions(k=3, offset=2), rescorer=rec, plan=plan)
    ((query, given),) = rec.seen
    assert [h.item_id for h in given] == [h.item_id for h in raw[:8]]  # depth raw hits, raw order
    assert query.plan is plan and query.text == "red" and np.array_equal(query.vector, q)
    by_new_score = sorted(raw[:8], key=lambda h: (h.score, h.item_id))  # (−new, id), new = −raw
    assert [h.item_id for h in hits] == [h.item_id for h in by_new_score[2:5]]
    assert [h.rank for h in hits] == [3, 4, 5]
    by_id = {h.item_id: h for h in raw}
    assert [h.score for h in hits] == [-by_id[h.item_id].score for h in hits]
    video = next(h for h in hits + given if h.kind == "video")
    assert video.moment is not None  # candidates carry the engine's exact video rescoring


def test_ties_break_by_item_id_and_a_short_depth_still_fills_the_page(searcher, fake_encoder):
    q = fake_encoder.encode_texts(["blue"])[0]
    rec = Recorder(depth=1, score=lambda h: 0.0)  # everything ties
    hits = searcher.search(q, SearchOptions(k=4), rescorer=rec)
    assert len(rec.seen[0][1]) == 4  # at least k + offset candidates
    assert [h.item_id for h in hits] == sorted(h.item_id for h in rec.seen[0][1])
    assert all(h.score == 0.0 for h in hits)


def test_the_hook_keeps_filters_and_returns_nothing_for_an_empty_selection(searcher, catalog):
    q = np.ones(32, dtype=np.float32)
    rec = Recorder(depth=50)
    hits = searcher.search(q, SearchOptions(k=5, where=_kind("video")), rescorer=rec)
    assert [h.kind for h in hits] == ["video"]
    none = searcher.search(
        q, SearchOptions(k=5, where=_kind("video") & _path("/q/*")), rescorer=rec
    )
    assert none == [] and len(rec.seen) == 1  # the rescorer is not called without candidates


class BringsIn(Recorder):
    """A Recorder that also names items to rescore (as a second ranking would)."""

    def __init__(self, depth: int, extra: list[int]) -> None:
        super().__init__(depth, score=lambda h: h.score)
        self.extra = extra
        self.asked: list[int] = []

    def candidates(self, query, depth):
        self.asked.append(depth)
        return self.extra


def test_a_rescorer_brings_in_items_the_vector_recall_missed(searcher, catalog, fake_encoder):
    q = fake_encoder.encode_texts(["red"])[0]
    raw = searcher.search(q, SearchOptions(k=11))
    far = [h.item_id for h in raw[-2:]]  # the two least red items
    rec = BringsIn(depth=3, extra=[*far, raw[0].item_id, 9999])  # 9999: no such item
    hits = searcher.search(q, SearchOptions(k=5), rescorer=rec)
    ((_, given),) = rec.seen
    assert rec.asked == [5]  # depth = max(depth(need), need)
    assert [h.item_id for h in given] == [h.item_id for h in raw[:5]] + far  # raw order
    assert [h.rank for h in given] == list(range(1, 8))
    by_id = {h.item_id: h for h in raw}
    for h in given:  # brought-in items are scored exactly like recalled ones
        assert h.score == pytest.approx(by_id[h.item_id].score)
    assert [h.item_id for h in hits] == [h.item_id for h in raw[:5]]


def test_brought_in_items_obey_the_filters(searcher, catalog, fake_encoder):
    q = fake_encoder.encode_texts(["red"])[0]
    video_id = next(h.item_id for h in searcher.search(q, SearchOptions(k=11)) if h.kind == "video")
    images = [h.item_id for h in searcher.search(q, SearchOptions(k=11)) if h.kind == "image"]
    rec = BringsIn(depth=1, extra=[video_id, *images])
    hits = searcher.search(q, SearchOptions(k=5, where=_kind("image")), rescorer=rec)
    assert video_id not in [h.item_id for h in rec.seen[0][1]]
    assert all(h.kind == "image" for h in hits)


def test_a_rescorer_must_score_every_candidate(searcher):
    class Short(Recorder):
        def rescore(self, query, hits):
            return np.zeros(len(hits) - 1)

    with pytest.raises(ValueError, match="scores"):
        searcher.search(np.ones(32, np.float32), SearchOptions(k=2), rescorer=Short(depth=5))


def test_query_text_is_the_positive_text_terms():
    v = np.ones(3, dtype=np.float32)
    assert Query(v).text is None
    assert Query(v, parse_query('"2:golden retriever" + sunset - blurry')).text == (
        "golden retriever sunset"
    )


@pytest.mark.parametrize("method", ["is", "qbnorm", "dbnorm", "dbnorm-dynamic"])
def test_hubness_rescorer_reranks_the_widened_candidates(
    searcher, catalog, fake_encoder, tmp_path, method
):
    terms = BankCache(catalog, fake_encoder, tmp_path / "rerank").terms()
    q = fake_encoder.encode_texts(["a red thing"])[0]
    options = SearchOptions(k=5)
    hits = searcher.search(q, options, rescorer=rerank.HubnessRescorer(terms, method))
    wide = searcher.search(q, SearchOptions(k=50))  # max(3·5, 50) raw candidates
    expected = terms.rescore(
        np.array([h.item_id for h in wide]),
        np.array([h.score for h in wide]),
        method=method,
        top1=wide[0].item_id,
    )
    best = sorted(
        zip(expected.tolist(), [h.item_id for h in wide], strict=True), key=lambda t: (-t[0], t[1])
    )
    assert [h.item_id for h in hits] == [i for _, i in best[:5]]
    np.testing.assert_allclose([h.score for h in hits], [s for s, _ in best[:5]], atol=1e-6)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    page2 = searcher.search(
        q, SearchOptions(k=2, offset=2), rescorer=rerank.HubnessRescorer(terms, method)
    )
    assert [h.item_id for h in page2] == [h.item_id for h in hits[2:4]] and page2[0].rank == 3


def test_hubness_rescorer_refuses_an_unknown_method(catalog, fake_encoder, tmp_path):
    terms = BankCache(catalog, fake_encoder, tmp_path / "rerank").terms(gallery_bank_size=0)
    with pytest.raises(UsageError, match="unknown reranker"):
        rerank.HubnessRescorer(terms, "bm25")  # type: ignore[arg-type]


def test_gap_rescorer_scores_candidates_by_the_corrected_cosine(
    searcher, catalog, fake_encoder, tmp_path
):
    g = BankCache(catalog, fake_encoder, tmp_path / "rerank").gap()
    q = fake_encoder.encode_images([colour_image("red", seed=0)])[0]  # the first red item's image
    rescorer = gap.GapRescorer(g, catalog.item_vectors, mode="center")
    hits = searcher.search(q, SearchOptions(k=3), rescorer=rescorer)
    assert hits[0].path == "/p/red_0.jpg" and hits[0].score == pytest.approx(1.0, abs=2e-3)
    vecs = catalog.item_vectors([h.item_id for h in hits])
    for h in hits:
        expected = float(g.correct(vecs[h.item_id], mode="center") @ g.correct(q, mode="center"))
        assert h.score == pytest.approx(expected, abs=1e-5)
    with pytest.raises(UsageError, match="gap-correction mode"):
        gap.GapRescorer(g, catalog.item_vectors, mode="middle")  # type: ignore[arg-type]


def _kind(kind: str):
    from clipsearch.store import ItemFilter

    return ItemFilter.parse([f"kind:{kind}"])


def _path(glob: str):
    from clipsearch.store import ItemFilter

    return ItemFilter.parse([f"path:{glob}"])
