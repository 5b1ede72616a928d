"""Text read in pictures, in the catalog: stored with the item, found by squashed substring
(glued words too), ranked by coverage, kept in step with the item's life (changed, moved,
deleted), filtered with text:PHRASE, counted for status."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from clipsearch.errors import QueryError
from clipsearch.store import (
    CATALOG_FILE,
    SCHEMA_VERSION,
    Catalog,
    ItemFilter,
    ItemWrite,
    ModelBinding,
    migrations,
)
from clipsearch.store.records import TextRead
from clipsearch.store.texts import OCR, ReadingSettings, squash

DIM = 8


def item(path: str, text: str | None, *, n: int = 0, read: bool = True, **kw) -> ItemWrite:
    vec = np.zeros((1, DIM), dtype=np.float32)
    vec[0, n % DIM] = 1
    rows = ((None, text),) if text else ()
    return ItemWrite(
        path=path,
        root_id=None,
        kind=kw.pop("kind", "image"),
        size=kw.pop("size", 100),
        mtime_ns=kw.pop("mtime_ns", 1),
        content_hash=kw.pop("content_hash", f"h:{path}"),
        status="ok",
        vectors=kw.pop("vectors", vec),
        text=TextRead(OCR, "reader-1", rows=rows) if read else None,
        **kw,
    )


@pytest.fixture
def catalog(tmp_path):
    c = Catalog.open(tmp_path / "lib")
    c.bind_model(ModelBinding("fake", "fp", DIM))
    yield c
    c.close()


def ids_of(matches) -> list[int]:
    return [m.item_id for m in matches]


@pytest.mark.parametrize(
    ("text", "squashed"),
    [
        ("HAPPY BIRTHDAYANNA", "happybirthdayanna"),
        ("Fresh\nStrawberries 2.99€", "freshstrawberries299"),
        ("Café Müller", "cafemuller"),
        ("STRASSE / Straße", "strassestrasse"),
        ("東京 Tower", "東京tower"),
    ],
)
def test_squash_keeps_letters_and_digits_of_any_script(text, squashed):
    assert squash(text) == squashed


def test_glued_words_are_found_by_each_word(catalog):
    ids = catalog.write_items(
        [
            item("/a.jpg", "HAPPY BIRTHDAYANNA", n=0),
            item("/b.jpg", "Fresh\nStrawberries", n=1),
            item("/c.jpg", None, n=2),
        ]
    )
    texts = catalog.texts
    assert ids_of(texts.matches(["birthday"])) == [ids[0]]
    assert ids_of(texts.matches(["Anna"])) == [ids[0]]
    assert ids_of(texts.matches(["fresh strawberries"])) == [ids[1]]  # a phrase, squashed
    assert texts.matches(["pizza"]) == []
    best = texts.matches(["happy", "birthday"])[0]
    assert best.text == "HAPPY BIRTHDAYANNA" and best.terms == ("happy", "birthday")
    assert best.coverage == 1.0 and best.t is None and best.source == OCR


def test_items_matching_more_of_the_query_rank_first(catalog):
    ids = catalog.write_items(
        [
            item("/pizza.jpg", "PIZZA", n=0),
            item("/menu.jpg", "PIZZA PASTA WINE", n=1),
            item("/wine.jpg", "WINE BAR", n=2),
        ]
    )
    matches = catalog.texts.matches(["pizza", "pasta"])
    assert ids_of(matches) == [ids[1], ids[0]]
    assert matches[0].coverage == 1.0
    assert matches[1].coverage == pytest.approx(5 / 10)


def test_terms_too_short_for_the_index_are_ignored(catalog):
    catalog.write_items([item("/a.jpg", "AB CD", n=0)])
    assert catalog.texts.matches(["ab", "c"]) == []


def test_a_changed_file_loses_its_old_text_and_a_moved_one_keeps_it(catalog):
    (a,) = catalog.write_items([item("/a.jpg", "OLD SIGN")])
    catalog.write_items([item("/a.jpg", None, read=False, mtime_ns=2)])  # re-encoded, not read
    assert catalog.texts.matches(["sign"]) == []
    assert a in catalog.texts.unread(OCR, "reader-1", frames=False)
    catalog.write_items([item("/a.jpg", "NEW SIGN", mtime_ns=3)])
    moved = catalog.copy_item(a, item("/moved.jpg", None, read=False, vectors=None))
    assert sorted(ids_of(catalog.texts.matches(["newsign"]))) == sorted([a, moved])
    assert moved not in catalog.texts.unread(OCR, "reader-1", frames=False)


def test_deleting_an_item_removes_its_text_from_the_index(catalog):
    a, b = catalog.write_items([item("/a.jpg", "PHARMACY", n=0), item("/b.jpg", "PHARMA", n=1)])
    catalog.delete_items([a])
    assert ids_of(catalog.texts.matches(["pharma"])) == [b]
    # The FTS index and its content table agree (no dangling rows after the cascade).
    catalog._conn.execute("INSERT INTO texts_fts(texts_fts) VALUES ('integrity-check')")


def test_text_read_later_replaces_only_that_source(catalog):
    (a,) = catalog.write_items([item("/a.jpg", None, read=False)])
    assert catalog.texts.unread(OCR, "reader-1", frames=False) == {a}
    catalog.texts.write(
        {a: TextRead(OCR, "reader-1", rows=((None, "EXIT"),)), 999: TextRead(OCR, "r")}
    )
    assert ids_of(catalog.texts.matches(["exit"])) == [a]
    assert catalog.texts.unread(OCR, "reader-1", frames=False) == set()
    assert catalog.texts.unread(OCR, "reader-2", frames=False) == {a}  # another reader re-reads
    catalog.texts.write({a: TextRead(OCR, "reader-2", rows=((None, "ENTRANCE"),))})
    assert catalog.texts.matches(["exit"]) == []


def test_videos_are_unread_until_their_frames_are_read(catalog):
    frames = np.eye(DIM, dtype=np.float32)[:3]
    (v,) = catalog.write_items(
        [
            ItemWrite(
                path="/v.mp4",
                root_id=None,
                kind="video",
                size=1000,
                mtime_ns=1,
                content_hash="h:v",
                status="ok",
                vectors=np.vstack([frames, frames.mean(0, keepdims=True)]),
                timestamps=np.array([0.0, 1.0, 2.0, np.nan]),
                text=TextRead(OCR, "reader-1", frames=True, rows=((1.0, "GOAL"),)),
            )
        ]
    )
    assert catalog.texts.unread(OCR, "reader-1", frames=False) == set()
    assert catalog.texts.unread(OCR, "reader-1", frames=True) == set()
    match = catalog.texts.matches(["goal"])[0]
    assert (match.item_id, match.t) == (v, 1.0)


def test_text_filter_keeps_only_pictures_whose_text_has_the_phrase(catalog):
    a, b, c = catalog.write_items(
        [
            item("/a.jpg", "HAPPY BIRTHDAYANNA", n=0),
            item("/b.jpg", "BIRTHDAY PARTY", n=1),
            item("/c.jpg", None, n=2),
        ]
    )
    flt = ItemFilter.parse(["text:happy birthday"])
    assert flt.texts == ("happybirthday",)
    assert catalog.items_where([a, b, c], flt) == [a]
    assert catalog.items_where([c, b, a], ItemFilter.parse(['text:"birthday"'])) == [b, a]
    assert len(catalog.vector_ids_where(flt)) == 1
    both = ItemFilter.parse(["text:birthday", "text:party"])
    assert catalog.items_where([a, b, c], both) == [b]
    with pytest.raises(QueryError, match="text:"):
        ItemFilter.parse(["text: !!"])


def test_settings_are_remembered(catalog):
    assert catalog.texts.settings() == ReadingSettings()
    catalog.texts.save_settings(ReadingSettings(ocr=True, ocr_frames=True))
    assert catalog.texts.settings() == ReadingSettings(ocr=True, ocr_frames=True)


def test_coverage_counts_read_items_and_items_with_text(catalog):
    catalog.write_items(
        [
            item("/a.jpg", "EXIT", n=0),
            item("/b.jpg", None, n=1),  # read, no text
            item("/c.jpg", None, n=2, read=False),
        ]
    )
    cov = catalog.texts.coverage()
    assert cov["by_kind"]["image"] == {"items": 3, "read": 2, "with_text": 1}
    assert cov["texts"] == 1
    assert catalog.texts.has_text()


def test_a_catalog_from_before_text_reading_upgrades_with_its_data(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    db = lib / CATALOG_FILE
    conn = sqlite3.connect(db, isolation_level=None)
    assert migrations.migrate(conn, db, target=2) == 2
    conn.execute(
        "INSERT INTO items (path, kind, size, mtime_ns, status, indexed_at) "
        "VALUES ('/a.jpg', 'image', 1, 1, 'ok', 0)"
    )
    conn.execute("INSERT INTO tags (item_id, tag, score, source) VALUES (1, 'sea', 1, 'user')")
    conn.close()
    with Catalog.open(lib) as c:
        assert c.stats()["schema_version"] == SCHEMA_VERSION
        assert c.item_by_path("/a.jpg").kind == "image" and c.tags([1]) == {1: {"sea": 1.0}}
        assert c.texts.unread(OCR, "reader-1", frames=False) == {1}
        generation = c.generation()
        c.texts.write({1: TextRead(OCR, "reader-1", rows=((None, "LIGHTHOUSE"),))})
        assert c.generation() == generation + 1
        assert ids_of(c.texts.matches(["lighthouse"])) == [1]
