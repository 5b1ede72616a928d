"""Capture times in the catalog: written with items, read back, filtered with taken>…,
kept in step with rewrites, copies and deletes, and an older catalog gaining the table."""

from __future__ import annotations

import os
import sqlite3
import time
from datetime import UTC, datetime

import numpy as np
import pytest

from clipsearch.errors import QueryError
from clipsearch.media.capture_time import CaptureTime
from clipsearch.store import Catalog, ItemFilter, ItemWrite, ModelBinding, migrations
from clipsearch.store.filters import taken_bounds

DIM = 8
BINDING = ModelBinding(spec="t", fingerprint="fp", dim=DIM)


def ns(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp()) * 10**9


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def write(path: str, *, mtime_ns: int, taken: CaptureTime | None, seed: int = 0) -> ItemWrite:
    return ItemWrite(
        path=path,
        root_id=None,
        kind="image",
        size=10,
        mtime_ns=mtime_ns,
        content_hash=f"h{seed}",
        status="ok",
        vectors=vec(seed),
        taken=taken,
    )


@pytest.fixture
def utc_zone():
    """Naive dates are local time: run in UTC so the expected bounds are plain."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.fixture
def cat(tmp_path):
    c = Catalog.open(tmp_path / "lib")
    c.bind_model(BINDING)
    yield c
    c.close()


def items_where(cat: Catalog, clauses: list[str]) -> set[int]:
    flt = ItemFilter.parse(clauses)
    return set(cat.items_for_vectors(cat.vector_ids_where(flt))[0].tolist())


# -- parsing ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("clause", "after", "before"),
    [
        ("taken>2023", ns(2024, 1, 1), None),
        ("taken>=2023", ns(2023, 1, 1), None),
        ("taken<2023-06", None, ns(2023, 6, 1)),
        ("taken<=2023-06", None, ns(2023, 7, 1)),
        ("taken<=2023-12", None, ns(2024, 1, 1)),
        ("taken:2023-06-30", ns(2023, 6, 30), ns(2023, 7, 1)),
        ("taken=2023-06-30T14:00Z", ns(2023, 6, 30, 14), ns(2023, 6, 30, 14, 1)),
        ("taken > 2023-06-30T14:00:05+00:00", ns(2023, 6, 30, 14, 0, 6), None),
        ("TAKEN:2023", ns(2023, 1, 1), ns(2024, 1, 1)),
        ("taken:20230630", ns(2023, 6, 30), ns(2023, 7, 1)),  # ISO basic format: a day
        ("taken:2023-06-30T14:00:05Z", ns(2023, 6, 30, 14, 0, 5), ns(2023, 6, 30, 14, 0, 6)),
        # a fraction of a second names that microsecond
        ("taken:2023-06-30T14:00:05.25Z", ns(2023, 6, 30, 14, 0, 5) + 250_000_000, None),
    ],
)
def test_taken_clauses_compare_with_whole_periods(clause, after, before, utc_zone):
    f = ItemFilter.parse([clause])
    if before is None and clause.startswith("taken:"):
        before = after + 1000  # one microsecond
    assert (f.taken_after_ns, f.taken_before_ns) == (after, before)


def test_bad_taken_clauses_are_named_as_written():
    with pytest.raises(
        QueryError, match=r"bad --where clause 'TAKEN : 2023-13': '2023-13' is not a"
    ):
        ItemFilter.parse(["TAKEN : 2023-13"])
    with pytest.raises(QueryError, match=r"'taken>=': expected taken>DATE, taken>=DATE, taken<"):
        ItemFilter.parse(["taken>="])
    # the bound on its own (the library's taken-after/before options) names the comparison
    with pytest.raises(QueryError, match=r"clause 'taken>=2023-13': '2023-13' is not a date"):
        taken_bounds(">=", "2023-13")


@pytest.mark.parametrize("clause", ["taken>", "taken>yesterday", "taken~2023", "taken:2023-13"])
def test_bad_taken_clauses_name_the_clause(clause):
    with pytest.raises(QueryError, match="taken"):
        ItemFilter.parse([clause])


def test_taken_bounds_combine_and_contradict():
    f = ItemFilter.parse(["taken>=2020", "taken<2022", "taken>=2021"])
    g = ItemFilter.parse(["taken<2020"]) & ItemFilter.parse(["taken>=2021"])
    assert f.taken_after_ns is not None and not f.is_unsatisfiable
    assert g.is_unsatisfiable


# -- storage ------------------------------------------------------------------------------------
def test_written_with_items_and_filtered_with_the_mtime_standing_in(cat):
    a, b, c = cat.write_items(
        [
            write(
                "/a.jpg", mtime_ns=ns(2024, 5, 1), taken=CaptureTime(ns(2019, 6, 1), 120, "exif")
            ),
            write(
                "/b.jpg",
                mtime_ns=ns(2021, 3, 1),
                taken=CaptureTime(ns(2021, 3, 1), None, "mtime"),
                seed=1,
            ),
            write("/c.jpg", mtime_ns=ns(2022, 8, 1), taken=None, seed=2),  # not read yet
        ]
    )
    got = cat.capture_times([a, b, c])
    assert got == {
        a: CaptureTime(ns(2019, 6, 1), 120, "exif"),
        b: CaptureTime(ns(2021, 3, 1), None, "mtime"),
    }
    assert items_where(cat, ["taken<2020"]) == {a}  # the EXIF date, not the newer mtime
    assert items_where(cat, ["after:2024"]) == {a}  # after: is still the mtime
    assert items_where(cat, ["taken:2022"]) == {c}  # no capture time: its mtime
    assert items_where(cat, ["taken>=2021", "taken<2023"]) == {b, c}


def test_rewrites_copies_and_deletes_keep_capture_times_in_step(cat):
    (a,) = cat.write_items(
        [write("/a.jpg", mtime_ns=1, taken=CaptureTime(ns(2019, 6, 1), None, "exif"))]
    )
    cat.write_items([write("/a.jpg", mtime_ns=2, taken=None)])  # rewritten, date unknown
    assert cat.capture_times([a]) == {}
    cat.write_items([write("/a.jpg", mtime_ns=3, taken=CaptureTime(ns(2020, 1, 1), 0, "exif"))])
    moved = ItemWrite(
        "/copy.jpg", None, "image", 10, 4, "h0", "ok", taken=CaptureTime(ns(2020, 1, 1), 0, "exif")
    )
    copy = cat.copy_item(a, moved)
    assert cat.capture_times([copy])[copy].ns == ns(2020, 1, 1)
    cat.delete_items([a])
    assert cat.capture_times([a]) == {}
    with sqlite3.connect(cat.db_path) as conn:
        assert conn.execute("SELECT count(*) FROM capture_times").fetchone()[0] == 1


def test_set_capture_times_skips_items_that_are_gone_and_bumps_the_generation(cat):
    (a,) = cat.write_items([write("/a.jpg", mtime_ns=1, taken=None)])
    assert cat.undated_items(root_id=0) == set()  # not under that root
    gen = cat.generation()
    stored = cat.set_capture_times(
        {a: CaptureTime(ns(2018, 1, 1), None, "exif"), 999: CaptureTime(1, None, "mtime")}
    )
    assert stored == 1 and cat.generation() > gen
    assert cat.capture_times([a, 999]) == {a: CaptureTime(ns(2018, 1, 1), None, "exif")}


def test_an_older_catalog_gains_the_table_and_lists_its_undated_items(tmp_path):
    lib = tmp_path / "old"
    with Catalog.open(lib) as c:
        c.bind_model(BINDING)
        root = c.add_root("/photos")
        ids = c.write_items(
            [
                ItemWrite("/photos/a.jpg", root, "image", 10, 1, "h", "ok", vectors=vec(0)),
                ItemWrite("/photos/b.jpg", root, "image", 3, 1, None, "failed", error="bad"),
            ]
        )
    before = migrations.MIGRATIONS.index(migrations.m004_capture_time)  # the version before
    with sqlite3.connect(lib / "catalog.sqlite") as conn:  # back to it, as written then
        conn.execute("DROP TABLE capture_times")
        conn.execute("DROP TABLE shots")  # a later migration's table
        conn.execute(f"PRAGMA user_version = {before}")
    with Catalog.open(lib) as c:
        assert c.stats()["schema_version"] == migrations.SCHEMA_VERSION
        assert c.undated_items(root) == {ids[0]}  # ok items only
        assert items_where(c, ["taken<1971"]) == {ids[0]}  # the mtime (1 ns) stands in
