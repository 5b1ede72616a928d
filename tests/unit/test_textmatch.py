"""Fusing the model's ranking with the text read in pictures: query terms, the fusion
arithmetic (RRF, calibrated sum), brought-in matches, matched spans. The catalog is
written straight from ColourEncoder vectors with given texts (no OCR here: the reader
has its own tests, and the Library tests run it end to end)."""

from __future__ import annotations

import numpy as np
import pytest

from clipsearch.index import ExactIndex
from clipsearch.search.engine import Searcher, SearchOptions
from clipsearch.search.query import parse_query
from clipsearch.search.rescore import Query
from clipsearch.search.textmatch import (
    RRF_K,
    TextFusion,
    match_spans,
    query_terms,
    with_text_matches,
)
from clipsearch.store.records import TextRead
from clipsearch.store.texts import OCR
from tests.fakes import colour_image, write_catalog

# path -> (colour, text read in it)
ITEMS = {
    "/p/red_plain.jpg": ("red", None),
    "/p/red_pizza.jpg": ("red", "PIZZA"),
    "/p/blue_pizza.jpg": ("blue", "PIZZA NAPOLI"),
    "/p/blue_plain.jpg": ("blue", None),
    "/p/green_menu.jpg": ("green", "MENU PIZZA PASTA"),
    "/p/yellow.jpg": ("yellow", "HOTEL"),
}


@pytest.fixture
def catalog(tmp_path, fake_encoder):
    items = {p: colour_image(c, seed=i) for i, (p, (c, _)) in enumerate(ITEMS.items())}
    fields = {
        p: {"text": TextRead(OCR, "r", rows=((None, t),) if t else ())}
        for p, (_, t) in ITEMS.items()
    }
    cat = write_catalog(tmp_path / "lib", fake_encoder, items, fields=fields)
    yield cat
    cat.close()


@pytest.fixture
def searcher(catalog):
    table = catalog.load_vectors()
    index = ExactIndex(table.ids, table.vectors, precision="fp32")
    return Searcher(catalog, lambda: index)


def run(searcher, encoder, text: str, rescorer=None, k: int = 6):
    plan = parse_query(text)
    q = encoder.encode_texts([" ".join(t.value for t in plan.terms)])[0]
    return searcher.search(q, SearchOptions(k=k), rescorer=rescorer, plan=plan)


def paths(hits) -> list[str]:
    return [h.path.rsplit("/", 1)[1] for h in hits]


def test_query_terms_are_content_words_and_phrases():
    assert query_terms(parse_query("a photo of a sign saying Pizza Napoli")) == ("pizza", "napoli")
    assert query_terms(parse_query('cake "happy birthday"')) == (
        "cake",
        "happy",
        "birthday",
        "happybirthday",
    )
    assert query_terms(parse_query("red - pizza")) == ("red",)  # negatives are not looked up
    assert query_terms(parse_query("an ox")) == ()  # too short for a trigram index
    assert query_terms(None) == ()


def test_rrf_puts_the_text_match_first_for_a_word_the_model_cannot_see(searcher, fake_encoder):
    plain = run(searcher, fake_encoder, "pizza")
    fused = run(searcher, fake_encoder, "pizza", TextFusion(searcher.catalog.texts, method="rrf"))
    assert set(paths(fused[:3])) == {"red_pizza.jpg", "blue_pizza.jpg", "green_menu.jpg"}
    assert paths(fused[:3]) != paths(plain[:3])
    # The score is RRF: 1/(k + model rank) + 1/(k + text rank), here with equal coverage
    # (1.0) the text ranks follow bm25, and every item gets its model-rank term.
    model_rank = {h.item_id: h.rank for h in plain}
    top = fused[0]
    assert top.score > 1 / (RRF_K + model_rank[top.item_id])
    assert top.score <= 1 / (RRF_K + model_rank[top.item_id]) + 1 / (RRF_K + 1) + 1e-12
    no_text = next(h for h in fused if h.path.endswith("plain.jpg"))
    assert no_text.score == pytest.approx(1 / (RRF_K + model_rank[no_text.item_id]))


def test_colour_and_word_together_pick_the_item_with_both(searcher, fake_encoder):
    for method in ("rrf", "sum"):
        fused = run(
            searcher, fake_encoder, "red pizza", TextFusion(searcher.catalog.texts, method=method)
        )
        assert paths(fused)[0] == "red_pizza.jpg", method


def test_calibrated_sum_adds_lambda_sigma_coverage(searcher, fake_encoder):
    plain = run(searcher, fake_encoder, "pizza pasta")
    fused = run(
        searcher,
        fake_encoder,
        "pizza pasta",
        TextFusion(searcher.catalog.texts, method="sum", weight=2.0),
    )
    raw = {h.item_id: h.score for h in plain}
    sigma = np.std(list(raw.values()))
    by_name = {p: h for p, h in zip(paths(fused), fused, strict=True)}
    assert by_name["green_menu.jpg"].score == pytest.approx(
        raw[by_name["green_menu.jpg"].item_id] + 2.0 * sigma * 1.0
    )
    assert by_name["red_pizza.jpg"].score == pytest.approx(
        raw[by_name["red_pizza.jpg"].item_id] + 2.0 * sigma * 0.5
    )
    assert by_name["red_plain.jpg"].score == pytest.approx(raw[by_name["red_plain.jpg"].item_id])


def test_a_text_match_outside_the_model_recall_is_brought_in(searcher, fake_encoder):
    fusion = TextFusion(searcher.catalog.texts)
    hits = run(searcher, fake_encoder, "hotel", fusion, k=1)
    assert paths(hits) == ["yellow.jpg"]
    assert fusion.candidates(Query(np.zeros(32), parse_query("hotel")), 10) == [hits[0].item_id]


def test_queries_without_terms_keep_the_model_order(searcher, fake_encoder):
    plain = run(searcher, fake_encoder, "red")
    fused = run(searcher, fake_encoder, "red", TextFusion(searcher.catalog.texts))
    assert paths(fused) == paths(plain)  # "red" is in nobody's text


def test_hits_carry_their_best_matching_text(searcher, fake_encoder, catalog):
    hits = run(searcher, fake_encoder, "pizza pasta", TextFusion(catalog.texts))
    hits = with_text_matches(hits, catalog.texts, query_terms(parse_query("pizza pasta")))
    by_name = dict(zip(paths(hits), hits, strict=True))
    menu = by_name["green_menu.jpg"].text_match
    assert (menu.text, menu.terms, menu.coverage) == ("MENU PIZZA PASTA", ("pizza", "pasta"), 1.0)
    assert by_name["red_plain.jpg"].text_match is None
    d = by_name["green_menu.jpg"].to_dict()["text_match"]
    assert d["spans"] == [[5, 10], [11, 16]] and d["t"] is None and d["source"] == "ocr"


@pytest.mark.parametrize(
    ("text", "terms", "spans"),
    [
        ("HAPPY BIRTHDAYANNA", ["birthday"], [(6, 14)]),
        ("HAPPY BIRTHDAYANNA", ["happybirthday", "anna"], [(0, 18)]),
        ("Fresh\nStrawberries", ["freshstraw"], [(0, 11)]),
        ("Café Müller", ["cafe"], [(0, 4)]),
        ("no match", ["pizza"], []),
    ],
)
def test_match_spans_point_into_the_text_as_read(text, terms, spans):
    assert match_spans(text, terms) == spans
