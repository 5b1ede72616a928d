"""`Searcher.search` after ranking: the cut's count under a re-ranker, folding that must
look past its first window, and what is compared for near-duplicates."""

from __future__ import annotations

import numpy as np

from clipsearch.index.exact import ExactIndex
from clipsearch.search.engine import Searcher, SearchOptions
from clipsearch.search.relevance import Background
from tests.fakes import ColourEncoder, colour_image, write_catalog


def searcher(cat) -> Searcher:
    table = cat.load_vectors()
    index = ExactIndex(table.ids, table.vectors)
    return Searcher(cat, lambda: index)


class Reversed:
    """A re-ranker that puts the raw order upside down."""

    def depth(self, need: int) -> int:
        return 100

    def rescore(self, query, hits):
        return np.arange(len(hits), dtype=np.float64)


def test_a_reranker_keeps_the_number_of_relevant_results_not_their_raw_identity(tmp_path):
    enc = ColourEncoder()
    items = {f"/p/red{i}.jpg": colour_image("red", seed=i) for i in range(3)}
    items.update({f"/p/blue{i}.jpg": colour_image("blue", seed=10 + i) for i in range(5)})
    cat = write_catalog(tmp_path / "lib", enc, items)
    q = enc.encode_texts(["red"])[0]
    cut = Background.from_catalog(cat).threshold(q)
    s = searcher(cat)
    raw = s.search(q, SearchOptions(k=8, min_score=cut))
    assert [h.relevant for h in raw] == [True] * 3 + [False] * 5
    flipped = s.search(q, SearchOptions(k=8, min_score=cut), rescorer=Reversed())
    assert [h.item_id for h in flipped] == [h.item_id for h in reversed(raw)]
    assert [h.relevant for h in flipped] == [True] * 3 + [False] * 5  # the head is relevant
    cat.close()


def test_folding_looks_further_when_copies_fill_the_first_window(tmp_path):
    enc = ColourEncoder()
    red = colour_image("red", seed=1)
    items = {f"/p/red-copy{i:02d}.jpg": red for i in range(70)}
    items.update({f"/p/blue{i}.jpg": colour_image("blue", seed=20 + i) for i in range(3)})
    cat = write_catalog(tmp_path / "lib", enc, items)
    q = enc.encode_texts(["red"])[0]
    hits = searcher(cat).search(q, SearchOptions(k=3, collapse=True))
    assert len(hits) == 3
    assert len(hits[0].members) == 69 and hits[0].path.startswith("/p/red-copy")
    assert all(h.path.startswith("/p/blue") and h.members == () for h in hits[1:])
    assert [h.rank for h in hits] == [1, 2, 3]
    cat.close()


def test_images_and_videos_are_never_folded_together(tmp_path):
    enc = ColourEncoder()
    red = colour_image("red", seed=1)
    cat = write_catalog(tmp_path / "lib", enc, {"/p/red.jpg": red, "/p/red.mp4": [red, red]})
    hits = searcher(cat).search(enc.encode_texts(["red"])[0], SearchOptions(k=5, collapse=True))
    assert sorted(h.kind for h in hits) == ["image", "video"]
    assert all(h.members == () for h in hits)
    cat.close()
