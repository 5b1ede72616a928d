"""The web page's relevance cut ("show more"), month grouping under a date order, and the
near-duplicate expander, in Debian's Chromium (Playwright), over red photos with EXIF
dates in two months (one of them copied) and pictures of other colours, indexed with the
deterministic ColourEncoder."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from PIL import Image

from clipsearch.library import Library
from tests.e2e.test_browser import LAPTOP, browser, card_names, search, served, shot  # noqa: F401
from tests.fakes import ColourEncoder, colour_image

pytestmark = pytest.mark.browser

RED = {  # name: EXIF DateTimeOriginal (with offset +00:00)
    "red-march-a.jpg": "2021:03:05 10:00:00",
    "red-march-b.jpg": "2021:03:20 10:00:00",
    "red-july.jpg": "2022:07:14 10:00:00",
}
OTHERS = ["green", "blue", "yellow", "cyan", "magenta", "orange", "purple", "brown"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("arrange-browser") / "media"
    root.mkdir()
    for i, (name, when) in enumerate(RED.items()):
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9003] = when
        exif.get_ifd(0x8769)[0x9011] = "+00:00"
        colour_image("red", (160, 120), seed=i).save(root / name, quality=95, exif=exif)
    shutil.copy(root / "red-july.jpg", root / "red-july-copy.jpg")
    for i, c in enumerate(OTHERS):
        colour_image(c, (160, 120), seed=20 + i).save(root / f"{c}.jpg", quality=95)
    old = datetime(2012, 1, 1, tzinfo=UTC).timestamp()
    for p in root.iterdir():
        os.utime(p, (old, old))
    lib = Library(tmp_path_factory.mktemp("arrange-lib"), encoder=ColourEncoder())
    assert lib.index([root]).failed == 0
    with served(lib) as url:
        yield url
    lib.close()


@pytest.fixture
def page(browser, server):  # noqa: F811 - the browser fixture comes from test_browser
    ctx = browser.new_context(viewport=LAPTOP)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.goto(server + "/")
    yield pg
    ctx.close()
    assert not errors, f"errors in the page: {errors}"


def headings(page) -> list[str]:
    return page.eval_on_selector_all("#grid li.heading", "els => els.map(e => e.textContent)")


def test_show_more_reveals_the_less_relevant_results(page):
    search(page, "red")
    # the July photo and its copy are one result (either can lead: they tie)
    assert sorted(n.replace("-copy", "") for n in card_names(page)) == [
        "red-july.jpg",
        "red-march-a.jpg",
        "red-march-b.jpg",
    ]
    assert page.inner_text("#summary").startswith("3 results")
    button = page.locator("#show-more")
    assert (
        button.is_visible() and button.inner_text() == f"Show {len(OTHERS)} less relevant results"
    )
    assert page.is_hidden("#more")
    button.click()
    page.wait_for_function(
        "n => document.querySelectorAll('#grid .card').length === n", arg=3 + len(OTHERS)
    )
    assert headings(page) == ["Less relevant"]
    weak = page.eval_on_selector_all("#grid li.weak .name", "els => els.map(e => e.textContent)")
    assert sorted(weak) == sorted(f"{c}.jpg" for c in OTHERS)
    assert page.is_hidden("#show-more")
    assert page.evaluate("document.activeElement.closest('li').classList.contains('weak')")
    shot(page, "laptop-show-more.png")


def test_a_query_with_only_weak_matches_says_so(page):
    search(page, "red")
    page.click("#filters-toggle")
    page.fill("#f-after", "2023-01-01")  # no red picture was taken after that
    page.dispatch_event("#f-after", "change")
    page.wait_for_function(
        "() => document.querySelector('#summary').textContent.startsWith('No close matches')"
        " || document.querySelector('#summary').textContent.startsWith('No results')"
    )
    assert card_names(page) == []


def test_date_order_groups_results_by_month(page):
    page.click("#filters-toggle")
    page.select_option("#f-sort", "-date")
    search(page, "red")
    names = card_names(page)
    assert names[0] in ("red-july.jpg", "red-july-copy.jpg")  # folded together
    assert names[1:] == ["red-march-b.jpg", "red-march-a.jpg"]  # newest first within March
    labels = page.evaluate(
        """() => ["2022-07", "2021-03"].map(k => { const [y, m] = k.split("-").map(Number);
            return new Date(Date.UTC(y, m - 1, 15)).toLocaleDateString(undefined,
                {year: "numeric", month: "long", timeZone: "UTC"}); })"""
    )
    assert headings(page) == labels
    assert "2022" in labels[0] and "2021" in labels[1]
    shot(page, "laptop-months.png")
    page.uncheck("#f-group")
    page.wait_for_function("() => !document.querySelector('#grid li.heading')")
    assert card_names(page) == names  # the same order, without headings
    page.select_option("#f-sort", "date")
    page.check("#f-group")
    page.wait_for_function(
        "() => document.querySelector('#grid .card .name')?.textContent === 'red-march-a.jpg'"
    )
    assert headings(page) == labels[::-1]


def test_near_duplicates_fold_behind_an_expander(page):
    search(page, "red")
    dups = page.locator("#grid li .dups")
    assert dups.count() == 1 and dups.inner_text() == "+1"
    head = page.evaluate(
        "document.querySelector('#grid li .dups').closest('li').querySelector('.name').textContent"
    )
    assert head in ("red-july.jpg", "red-july-copy.jpg")
    other = ({"red-july.jpg", "red-july-copy.jpg"} - {head}).pop()
    assert other not in card_names(page)
    assert dups.get_attribute("aria-expanded") == "false"
    dups.click()
    page.wait_for_selector("#grid li.member")
    assert page.locator("#grid li .dups").get_attribute("aria-expanded") == "true"
    names = card_names(page)
    assert names[names.index(head) + 1] == other  # right after the result it belongs to
    assert page.evaluate("document.activeElement.classList.contains('dups')")
    shot(page, "laptop-duplicates.png")
    page.click("#grid li.member .card")
    page.wait_for_selector("#viewer[open]")
    assert page.inner_text("#viewer-title") == other
    page.keyboard.press("Escape")
    page.click("#grid li .dups")
    page.wait_for_function("() => !document.querySelector('#grid li.member')")
    # unfolded for good: every copy is its own result
    page.click("#filters-toggle")
    page.uncheck("#f-collapse")
    page.wait_for_function(
        "() => document.querySelectorAll('#grid .card').length === 4"
        " && !document.querySelector('#grid .dups')"
    )
    assert {head, other} <= set(card_names(page))
