"""The web page in a real browser: Playwright drives Debian's Chromium (never downloads one)
against uvicorn on a free loopback port, over a library of coloured images and a
two-scene video indexed with the deterministic ColourEncoder.

Screenshots for people to look at land in ``artifacts/`` (git-ignored): a laptop
(1280x800) and a phone (390x844) viewport, results and the video player.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from clipsearch.library import Library
from tests.fakes import ColourEncoder, colour_image, make_image
from tests.videogen import make_video

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
COLOURS = ["red", "green", "blue", "yellow", "magenta", "cyan", "orange", "purple", "pink", "brown"]
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

if not CHROMIUM.exists():  # pragma: no cover - depends on the machine
    pytest.skip(
        "Debian's chromium is not installed (/usr/bin/chromium); "
        "apt-get install chromium chromium-driver",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(lib: Library) -> Iterator[str]:
    """The web app of ``lib`` on a free loopback port in a thread: yields its base URL."""
    import uvicorn

    from clipsearch.server import create_app

    port = _free_port()
    config = uvicorn.Config(create_app(lib), host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser") / "media"
    for i, c in enumerate(COLOURS):
        for j in range(2):
            make_image(root / f"{c}-{j}.jpg", c, size=(160, 120), seed=i * 10 + j)
    # green, blue, green, blue: a search for blue finds two moments, 2-5 s and 7-10 s
    scenes = (("green", 2.0), ("blue", 3.0), ("green", 2.0), ("blue", 3.0))
    make_video(root / "clip.mp4", scenes, size=(320, 240))
    return root


@pytest.fixture(scope="module")
def server(media: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    lib = Library(tmp_path_factory.mktemp("lib"), encoder=ColourEncoder())
    report = lib.index([media])
    assert report.failed == 0
    with served(lib) as url:
        yield url
    lib.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport=LAPTOP)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.goto(server + "/")
    yield pg
    ctx.close()
    assert not errors, f"errors in the page: {errors}"


def search(page, text: str) -> None:
    page.fill("#q", text)
    page.wait_for_function(
        "q => document.querySelector('#summary').textContent.includes('result') "
        "&& !document.querySelector('#results').hasAttribute('aria-busy')",
        arg=text,
    )


def show_less_relevant(page) -> None:
    """Click "Show N less relevant results" and wait until they are in the grid."""
    before = page.locator("#grid .card").count()
    page.click("#show-more")
    page.wait_for_function("n => document.querySelectorAll('#grid .card').length > n", arg=before)
    assert page.is_hidden("#show-more")


def card_names(page) -> list[str]:
    return page.eval_on_selector_all("#grid .card .name", "els => els.map(e => e.textContent)")


def wait_thumbnails(page) -> None:
    page.wait_for_function(
        "() => [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)"
    )


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=False)


def test_type_a_query_and_see_thumbnails(page):
    search(page, "something red")
    names = card_names(page)
    assert names[:2] and all(n.startswith("red-") for n in names[:2])
    wait_thumbnails(page)
    widths = page.eval_on_selector_all("#grid img", "els => els.map(i => i.naturalWidth)")
    assert widths and min(widths) > 0
    assert "result" in page.inner_text("#summary")  # announced through aria-live
    assert page.get_attribute("#summary", "aria-live") == "polite"
    alts = page.eval_on_selector_all("#grid img", "els => els.map(i => i.alt)")
    assert all(alts)
    shot(page, "laptop-results.png")


def test_results_update_as_you_type_and_stale_answers_lose(page):
    page.type("#q", "blue", delay=30)
    page.wait_for_function("() => document.querySelectorAll('#grid .card').length > 0")
    page.fill("#q", "yellow")
    page.wait_for_function(
        "() => document.querySelector('#grid .card .name')?.textContent.startsWith('yellow')"
    )
    time.sleep(0.5)  # any late answer for "blue" must not overwrite the grid
    assert card_names(page)[0].startswith("yellow")


def test_search_by_uploaded_image(page, tmp_path):
    query = tmp_path / "query.png"
    colour_image("magenta", (64, 64), seed=99).save(query)
    page.set_input_files("#image-input", str(query))
    page.wait_for_function("() => document.querySelectorAll('#grid .card').length > 0")
    page.wait_for_function(
        "() => document.querySelector('#grid .card .name').textContent.startsWith('magenta')"
    )
    assert page.locator("#chips .chip").count() == 1
    page.click("#chips .chip-x")
    page.wait_for_function("() => document.querySelectorAll('#grid .card').length === 0")


def test_paste_an_image(page):
    buf = io.BytesIO()
    colour_image("cyan", (48, 48), seed=5).save(buf, format="PNG")
    page.evaluate(
        """async (bytes) => {
            const file = new File([new Uint8Array(bytes)], "pasted.png", {type: "image/png"});
            const dt = new DataTransfer();
            dt.items.add(file);
            document.dispatchEvent(new ClipboardEvent("paste", {clipboardData: dt}));
        }""",
        list(buf.getvalue()),
    )
    page.wait_for_function(
        "() => document.querySelector('#grid .card .name')?.textContent.startsWith('cyan')"
    )


def test_more_like_this(page):
    search(page, "orange")
    first = card_names(page)[0]
    page.hover("#grid li:first-child")
    page.click("#grid li:first-child .like")
    page.wait_for_function(
        "n => document.querySelector('#grid .card .name')?.textContent === n", arg=first
    )
    assert page.input_value("#q") == ""
    assert "like " + first in page.inner_text("#chips")


def test_each_moment_is_a_result_and_the_player_seeks_between_them(page):
    page.click("#filters-toggle")
    page.select_option("#f-kind", "video")
    search(page, "blue")
    moments = page.evaluate(
        "fetch('/api/search?q=blue&kind=video&k=1&moments=3').then(r => r.json())"
        ".then(b => b.hits[0].moments)"
    )
    assert sorted(round(m["start"]) for m in moments) == [2, 7]  # the two blue scenes
    assert card_names(page) == ["clip.mp4", "clip.mp4"]  # one card per moment, best first
    thumbs = page.eval_on_selector_all("#grid .card img", "imgs => imgs.map(i => i.src)")
    assert [t.split("?t=")[1] for t in thumbs] == [str(m["best_t"]) for m in moments]

    def playing_at() -> float:
        page.wait_for_function(
            "() => { const v = document.querySelector('#viewer video');"
            " return v.readyState >= 1 && v.currentTime > 0; }",
            timeout=15000,
        )
        return page.evaluate("document.querySelector('#viewer video').currentTime")

    page.click("#grid li:nth-child(2) .card")  # the second moment's card
    page.wait_for_selector("#viewer[open] video")
    t = playing_at()
    assert moments[1]["start"] - 0.05 <= t <= moments[1]["end"] + 0.05, (t, moments)
    # every moment is drawn on the timeline, in proportion to the video's length
    page.wait_for_function("() => document.querySelector('#viewer video').duration > 0")
    duration = page.evaluate("document.querySelector('#viewer video').duration")
    spans = page.eval_on_selector_all(
        "#track .moment",
        "s => s.map(n => [parseFloat(n.style.left), parseFloat(n.style.width), n.classList.contains('active')])",
    )
    assert len(spans) == 2
    for (left, width, _), m in zip(spans, moments, strict=True):
        assert left == pytest.approx(100 * m["start"] / duration, abs=1.0)
        assert width == pytest.approx(100 * (m["end"] - m["start"]) / duration, abs=1.0)
    assert [a for *_, a in spans] == [False, True]  # the moment being watched
    assert page.is_visible("#timeline") and "Moment 2 of 2" in page.inner_text("#moment-text")
    page.evaluate("document.querySelector('#viewer video').pause()")
    shot(page, "laptop-video.png")
    # clicking the other moment on the timeline seeks to its start
    page.click("#track .moment[data-moment='0']")
    page.wait_for_function(
        "s => Math.abs(document.querySelector('#viewer video').currentTime - s) < 0.3",
        arg=moments[0]["start"],
    )
    assert page.evaluate("document.querySelector('#track .moment.active').dataset.moment") == "0"
    page.click(".moment-jump[data-moment='1']")  # and so does the list under it
    page.wait_for_function(
        "s => Math.abs(document.querySelector('#viewer video').currentTime - s) < 0.3",
        arg=moments[1]["start"],
    )
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer", state="hidden")


def test_keyboard_navigation(page):
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    search(page, "green")
    show_less_relevant(page)  # a full grid to move through
    page.focus("#q")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.index") == "0"
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.index") == "1"
    cols = page.evaluate(
        """() => { const c = [...document.querySelectorAll('#grid .card')];
                   const top = c[0].getBoundingClientRect().top;
                   return c.filter(x => x.getBoundingClientRect().top === top).length; }"""
    )
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.dataset.index") == str(min(1 + cols, 20))
    page.keyboard.press("ArrowLeft")
    focused = page.evaluate("document.activeElement.dataset.index")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # a visible focus ring
    page.keyboard.press("Enter")
    page.wait_for_selector("#viewer[open]")
    page.keyboard.press("Escape")
    page.wait_for_selector("#viewer", state="hidden")
    assert page.evaluate("document.activeElement.dataset.index") == focused  # focus came back


def test_load_more_pages_through_results(page, server):
    page.goto(server + "/?k=8")  # 8 results per page
    search(page, "red")
    assert sorted(card_names(page)) == ["red-0.jpg", "red-1.jpg"]  # the relevant ones
    assert page.is_hidden("#more")  # the less relevant come first, then more pages
    show_less_relevant(page)
    assert page.locator("#grid .card").count() == 8
    for expected in (16, 21):  # 20 images + 1 video
        page.click("#more")
        page.wait_for_function(
            f"() => document.querySelectorAll('#grid .card').length === {expected}"
        )
    assert page.is_hidden("#more")
    names = card_names(page)
    assert len(set(names)) == 21  # no item twice


def test_status_panel_and_indexing_from_the_page(page, tmp_path):
    page.click("#status-toggle")
    page.wait_for_selector("#status[open]")
    page.wait_for_function(
        "() => document.querySelector('#status-list').textContent.includes('fake:colour')"
    )
    folder = tmp_path / "new"
    make_image(folder / "fresh-white.jpg", "white")
    page.fill("#index-root", str(folder))
    page.click("#index-start")
    page.wait_for_function(
        "() => document.querySelector('#index-text').textContent.startsWith('Done')", timeout=20000
    )
    assert "1 encoded" in page.inner_text("#index-text")
    # the finished job refreshes the panel and the folder filter
    page.wait_for_function(
        "f => document.querySelector('#status-list').textContent.includes(f)", arg=str(folder)
    )
    assert str(folder) in page.eval_on_selector_all(
        "#f-folder option", "os => os.map(o => o.value)"
    )
    shot(page, "laptop-status.png")
    page.keyboard.press("Escape")
    search(page, "white")
    assert card_names(page)[0] == "fresh-white.jpg"


def test_phone_layout(browser, server):
    ctx = browser.new_context(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True)
    pg = ctx.new_page()
    pg.goto(server + "/")
    search(pg, "purple")
    show_less_relevant(pg)
    wait_thumbnails(pg)
    # the grid fits the screen: no horizontal scrolling, at least 3 tiles per row
    assert pg.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    tops = pg.eval_on_selector_all(
        "#grid .card", "els => els.map(e => e.getBoundingClientRect().top)"
    )
    assert max(tops.count(t) for t in tops) >= 3
    shot(pg, "phone-results.png")
    assert pg.is_hidden("#filters")  # collapsed until asked for
    pg.tap("#grid .card")
    pg.wait_for_selector("#viewer[open]")
    shot(pg, "phone-viewer.png")
    # no hover on a phone: "More like this" is in the viewer
    first = pg.inner_text("#viewer-title")
    pg.tap("#viewer-like")
    pg.wait_for_selector("#viewer", state="hidden")
    pg.wait_for_function(
        "n => document.querySelector('#grid .card .name')?.textContent === n", arg=first
    )
    ctx.close()
