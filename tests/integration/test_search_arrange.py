"""Relevance cut, date order, capture-date filters and folded duplicates, through
`Library.search` on a folder indexed with the deterministic ColourEncoder: a text naming
a colour finds the pictures of that colour, so "relevant" has a ground truth here."""

from __future__ import annotations

import os
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsearch import Library
from clipsearch.store import migrations
from tests.fakes import ColourEncoder, colour_image

OTHERS = ["green", "blue", "yellow", "magenta", "cyan", "orange", "purple", "brown"]
RED_TAKEN = {  # red-N.jpg: EXIF DateTimeOriginal with its offset
    "red-0.jpg": ("2019:03:01 10:00:00", "+01:00"),
    "red-1.jpg": ("2021:07:04 18:30:00", "+02:00"),
    "red-2.jpg": ("2020:12:24 20:00:00", "-05:00"),
    "red-3.jpg": ("2022:05:05 05:05:05", "+00:00"),
}
OLD = datetime(2015, 1, 1, tzinfo=UTC).timestamp()


class CountingEncoder(ColourEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.encoded = 0

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        self.encoded += len(pixels)
        return super().encode_pixels(pixels)


def save_with_exif(path: Path, image: Image.Image, when: str, offset: str) -> None:
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    ifd[0x9003], ifd[0x9011] = when, offset
    image.save(path, quality=95, exif=exif)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("arrange") / "photos"
    root.mkdir()
    for i, (name, (when, offset)) in enumerate(RED_TAKEN.items()):
        save_with_exif(root / name, colour_image("red", (64, 48), seed=i), when, offset)
    shutil.copy(root / "red-0.jpg", root / "red-0-copy.jpg")  # a byte-identical copy
    small = colour_image("red", (64, 48), seed=1).resize((48, 36), Image.Resampling.LANCZOS)
    small.save(root / "red-1-small.jpg", quality=80)  # a resized re-encode, no EXIF
    for j, colour in enumerate(OTHERS):
        for s in range(3):
            colour_image(colour, (64, 48), seed=10 * j + s).save(root / f"{colour}-{s}.jpg")
    for p in root.iterdir():
        os.utime(p, (OLD, OLD))  # files without EXIF date from 2015 by their mtime
    return root


@pytest.fixture(scope="module")
def lib(photos: Path, tmp_path_factory: pytest.TempPathFactory):
    with Library(tmp_path_factory.mktemp("lib"), encoder=CountingEncoder()) as lib:
        assert lib.index([photos]).failed == 0
        yield lib


def names(hits) -> list[str]:
    return [Path(h.path).name for h in hits]


REDS = {*RED_TAKEN, "red-0-copy.jpg", "red-1-small.jpg"}


def test_the_relevant_results_are_the_named_colour_and_come_first(lib):
    hits = lib.search("something red", k=30)
    flags = [h.relevant for h in hits]
    assert set(names(h for h in hits if h.relevant)) == REDS
    assert flags == sorted(flags, reverse=True)  # relevant ones first
    assert len(hits) == 30 and hits.relevant == [h for h in hits if h.relevant]
    assert 0 < hits.min_score < min(h.score for h in hits if h.relevant)
    d = hits[-1].to_dict()
    assert d["relevant"] is False and d["taken_source"] == "mtime"


def test_none_keeps_everything_relevant_and_a_number_is_a_fixed_cut(lib):
    everything = lib.search("red", k=10, min_score="none")
    assert everything.min_score is None and all(h.relevant for h in everything)
    red_scores = sorted(h.score for h in lib.search("red", k=6) if h.relevant)
    middle = (red_scores[0] + red_scores[-1]) / 2
    fixed = lib.search("red", k=10, min_score=middle)
    assert fixed.min_score == middle
    assert {h.item_id for h in fixed if h.relevant} == {
        h.item_id for h in everything if h.score >= middle
    }


def test_a_narrow_filter_does_not_make_junk_relevant(lib, photos):
    hits = lib.search("red", where=[f"path:{photos}/green-*"], k=10)
    assert names(hits) and all(n.startswith("green-") for n in names(hits))
    assert not any(h.relevant for h in hits)


def test_date_order_sorts_the_relevant_results_by_when_they_were_taken(lib):
    oldest = lib.search("red", k=30, sort="date")
    relevant = [h for h in oldest if h.relevant]
    got = names(relevant)
    # the resized copy has no EXIF (its 2015 mtime), the byte copy shares red-0's EXIF date
    assert got[0] == "red-1-small.jpg"
    assert set(got[1:3]) == {"red-0.jpg", "red-0-copy.jpg"}
    assert got[3:] == ["red-2.jpg", "red-1.jpg", "red-3.jpg"]
    assert [h.taken.ns for h in relevant] == sorted(h.taken.ns for h in relevant)
    assert not any(h.relevant for h in oldest[len(relevant) :])
    rest = [h.score for h in oldest[len(relevant) :]]
    assert rest == sorted(rest, reverse=True)  # the others follow by score
    newest = lib.search("red", k=30, sort="-date")
    assert names(newest)[:3] == ["red-3.jpg", "red-1.jpg", "red-2.jpg"]
    assert names(newest)[5] == "red-1-small.jpg"
    assert newest[0].to_dict()["taken"] == "2022-05-05T05:05:05+00:00"
    assert newest[1].to_dict()["taken"] == "2021-07-04T18:30:00+02:00"  # its own offset
    assert newest[1].to_dict()["taken_source"] == "exif"
    paged = [
        h.item_id for off in (0, 2, 4) for h in lib.search("red", k=2, offset=off, sort="-date")
    ]
    assert paged == [h.item_id for h in newest[:6]]


def test_capture_date_filters(lib):
    hits = lib.search("red", taken_after="2020", taken_before="2022", k=10)
    assert set(names(hits)) == {"red-1.jpg", "red-2.jpg"}
    same = lib.search("red", where=["taken>=2020", "taken<2022"], k=10)
    assert [h.item_id for h in same] == [h.item_id for h in hits]
    from datetime import date

    assert names(lib.search("red", taken_before=date(2016, 1, 1), k=3))  # mtime 2015 ones


def test_capture_dates_past_what_the_catalog_holds_match_all_or_nothing(lib):
    everything = lib.search("red", where=["taken>=1000"], k=40, min_score="none")
    assert len(everything) == len(lib.search("red", k=40, min_score="none"))
    assert lib.search("red", where=["taken<1000"], k=5) == []
    assert lib.search("red", taken_after="2300", k=5) == []


def test_collapse_folds_copies_into_the_best_member(lib):
    plain = lib.search("red", k=6, min_score="none")
    folded = lib.search("red", k=6, collapse=True)
    groups = [{Path(h.path).name, *(Path(m.hit.path).name for m in h.members)} for h in folded]
    assert {"red-0.jpg", "red-0-copy.jpg"} in groups
    assert {"red-1.jpg", "red-1-small.jpg"} in groups
    assert {"red-2.jpg"} in groups and {"red-3.jpg"} in groups
    assert [h.relevant for h in folded] == [True] * 4 + [False] * 2
    for h in folded:
        for m in h.members:
            assert m.similarity >= 0.95 and m.hit.score <= h.score  # the best one is shown
            assert m.hit.rank == h.rank
    assert all(h.members is None for h in plain)
    assert len({h.item_id for h in plain[:6]} & {h.item_id for h in folded}) < 6
    d = next(h for h in folded if h.members).to_dict()
    assert d["members"][0]["similarity"] >= 0.95 and "rank" not in d["members"][0]
    assert all(h.to_dict()["members"] == [] for h in folded if not h.members)


def test_collapsed_pages_show_every_item_once(lib):
    seen: list[str] = []
    for offset in range(0, 40, 5):
        for h in lib.search("red", k=5, offset=offset, collapse=True, min_score="none"):
            seen += [h.path, *(m.hit.path for m in h.members)]
    assert len(seen) == len(set(seen)) == 4 + 2 + 3 * len(OTHERS)


def test_an_older_library_gets_capture_dates_without_encoding_again(photos, tmp_path):
    enc = CountingEncoder()
    path = tmp_path / "old"
    with Library(path, encoder=enc) as lib:
        lib.index([photos])
    before = migrations.MIGRATIONS.index(migrations.m004_capture_time)
    with sqlite3.connect(path / "catalog.sqlite") as conn:  # as written before capture times
        conn.execute("DROP TABLE capture_times")
        conn.execute("DROP TABLE shots")  # a later migration's table
        conn.execute(f"PRAGMA user_version = {before}")
    with Library(path, encoder=enc) as lib:
        n = len(list(photos.iterdir()))
        unread = {"exif": 0, "container": 0, "mtime": 0, "unread": n}
        assert lib.status().to_dict()["capture_times"] == unread
        before = lib.search("red", k=30, sort="date")
        assert all(h.taken.source == "mtime" for h in before)  # usable before the fill
        encoded = enc.encoded
        report = lib.index([photos])
        assert enc.encoded == encoded and report.encoded == 0
        assert report.dated == len(list(photos.iterdir())) and report.to_dict()["dated"] > 0
        after = {Path(h.path).name: h.taken for h in lib.search("red", k=30, sort="date")}
        assert after["red-3.jpg"].source == "exif" and after["green-0.jpg"].source == "mtime"
        assert lib.index([photos]).dated == 0  # once
        exif = len(RED_TAKEN) + 1  # and the byte-identical copy of one
        read = {"exif": exif, "container": 0, "mtime": n - exif, "unread": 0}
        assert lib.status().to_dict()["capture_times"] == read
