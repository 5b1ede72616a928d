"""The web page with BLIP: the "Re-rank with BLIP" toggle sends rerank=itm and the cards
show the match probability; stored captions show under each card, the words a query
matched in them marked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clipsearch.library import Library
from clipsearch.models.blip import load_matcher
from tests.blipgen import ColourCaptioner
from tests.e2e.test_browser import (  # noqa: F401
    ARTIFACTS,
    LAPTOP,
    browser,
    search,
    served,
    show_less_relevant,
)
from tests.fakes import ColourEncoder, make_image

pytestmark = pytest.mark.browser
COLOURS = ["red", "green", "blue", "yellow", "magenta", "cyan"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_blip_itm: Path) -> Iterator[str]:
    root = tmp_path_factory.mktemp("browser-blip")
    for i, c in enumerate(COLOURS):
        make_image(root / "media" / f"{c}.jpg", c, size=(160, 120), seed=i)
    lib = Library(
        root / "lib",
        encoder=ColourEncoder(),
        matcher=load_matcher(str(tiny_blip_itm), precision="fp32"),
        captioner=ColourCaptioner(),
    )
    lib.index([root / "media"])
    lib.caption()
    with served(lib) as url:
        yield url
    lib.close()


def test_rerank_toggle_and_captions_on_cards(browser, server):  # noqa: F811
    ctx = browser.new_context(viewport=LAPTOP)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/api/search" in r.url else None)
    page.goto(server + "/")
    search(page, "red")  # typed, answered and rendered
    if page.is_visible("#show-more"):  # the captions of every card, not only the relevant
        show_less_relevant(page)
    page.wait_for_selector("#grid .card .caption")
    # The caption matched the query's word: shown once, as the matched text, word marked.
    first = page.query_selector("#grid .card")
    assert first.query_selector(".ocr").text_content() == "a photo of something red"
    assert first.query_selector(".ocr mark").text_content() == "red"
    assert first.query_selector(".caption") is None
    captions = page.eval_on_selector_all(
        "#grid .card .caption", "els => els.map(e => e.textContent)"
    )
    assert captions and all(c.startswith("a photo of something ") for c in captions)
    assert page.query_selector("#grid .badges .itm") is None
    page.click("#filters-toggle")
    page.check("#f-rerank")
    page.wait_for_selector("#grid .badges .itm")
    badge = page.text_content("#grid .badges .itm")
    assert badge.startswith("BLIP ") and badge.endswith("%")
    assert any("rerank=itm" in u for u in requests)
    label = page.get_attribute("#grid .card", "aria-label")
    assert "BLIP match" in label and "a photo of something" in label
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "blip-rerank-laptop.png"))
    ctx.close()
    assert not errors, f"errors in the page: {errors}"
