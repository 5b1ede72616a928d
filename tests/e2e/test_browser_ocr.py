"""The web page shows the text a result matched: a library of rendered signs indexed with
the real OCR reader, searched in Chromium (Playwright), as in test_browser.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clipsearch.ingest import IndexOptions
from clipsearch.library import Library
from tests.e2e.test_browser import LAPTOP, browser, search, served, shot  # noqa: F401
from tests.fakes import ColourEncoder
from tests.textimages import write_sign

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    media = tmp_path_factory.mktemp("browser-ocr") / "media"
    write_sign(media / "bakery.jpg", "FRESH BREAD", "orange")
    write_sign(media / "station.jpg", "PLATFORM 9", "blue")
    write_sign(media / "field.jpg", None, "green")
    lib = Library(tmp_path_factory.mktemp("lib"), encoder=ColourEncoder())
    assert lib.index([media], options=IndexOptions(ocr=True)).read == 3
    with served(lib) as url:
        yield url
    lib.close()


def test_a_result_shows_the_text_it_matched(browser, server):  # noqa: F811
    ctx = browser.new_context(viewport=LAPTOP)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + "/")
    search(page, "bread")
    first = page.locator("#grid .card").first
    assert first.locator(".name").text_content() == "bakery.jpg"
    assert first.locator(".ocr").text_content().replace(" ", "") == "FRESHBREAD"
    assert first.locator(".ocr mark").all_text_contents() == ["BREAD"]
    assert "text in picture" in first.get_attribute("aria-label")
    assert page.locator("#grid .card").nth(1).locator(".ocr").count() == 0  # no match, no text
    first.click()
    assert "BREAD" in page.locator("#viewer-meta mark").text_content()
    shot(page, "ocr-matched-text.png")
    ctx.close()
    assert not errors, errors
