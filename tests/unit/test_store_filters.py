"""``--where`` parsing and filtered vector ids, checked against a brute-force Python
reference over random items."""

from __future__ import annotations

import fnmatch
from datetime import UTC, datetime

import numpy as np
import pytest

from clipsearch.errors import QueryError, UsageError
from clipsearch.store import Catalog, ItemFilter, ItemWrite, ModelBinding
from clipsearch.store.records import TextRead
from clipsearch.store.texts import OCR

DIM = 8
DAY_NS = 86_400 * 10**9
T0 = 1_600_000_000 * 10**9  # 2020-09-13


# -- parsing -----------------------------------------------------------------------------------
def test_parse_each_accepted_form(tmp_path):
    f = ItemFilter.parse(
        [
            "path:/archive/2023/*",
            "kind:image",
            "after:2023-01-01T00:00:00+00:00",
            "before:2024-06-30T00:00Z",
            "size>1MB",
            "size<=2GiB",
            "root:/archive",
            "tag:Indoor",
        ]
    )
    assert f.paths == ("/archive/2023/*",)
    assert f.kinds == frozenset({"image"})
    assert f.mtime_after_ns == int(datetime(2023, 1, 1, tzinfo=UTC).timestamp()) * 10**9
    assert f.mtime_before_ns == int(datetime(2024, 6, 30, tzinfo=UTC).timestamp()) * 10**9
    assert (f.size_min, f.size_max) == (1_000_001, 2 * 2**30)
    assert f.roots == ("/archive",) and f.tags == ("indoor",)
    assert not f.is_empty and not f.is_unsatisfiable


@pytest.mark.parametrize(
    ("clause", "lo", "hi"),
    [
        ("size>1MB", 1_000_001, None),
        ("size>=1MB", 1_000_000, None),
        ("size<500k", None, 499_999),
        ("size < 500 kB", None, 499_999),
        ("size<=1.5KiB", None, 1536),
        ("size>1.5k", 1501, None),
        ("size<0.5", None, 0),
        ("size:>10", 11, None),
        ("size=100", 100, 100),
        ("size:2MiB", 2**21, 2**21),
        ("SIZE>1gb", 10**9 + 1, None),
    ],
)
def test_parse_sizes(clause, lo, hi):
    f = ItemFilter.parse([clause])
    assert (f.size_min, f.size_max) == (lo, hi)


def test_parse_dates_local_and_partial():
    f = ItemFilter.parse(["after:2023", "before:2023-06"])
    assert f.mtime_after_ns == int(datetime(2023, 1, 1).timestamp()) * 10**9  # local midnight
    assert f.mtime_before_ns == int(datetime(2023, 6, 1).timestamp()) * 10**9
    g = ItemFilter.parse(["after:2023-03-04 05:06:07"])
    assert g.mtime_after_ns == int(datetime(2023, 3, 4, 5, 6, 7).timestamp()) * 10**9


def test_parse_relative_and_home_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", "/home/u")
    f = ItemFilter.parse(
        ["path:photos/2023", "path:~/Pictures/*", "path:*.png", "root:../media"], cwd="/data/x"
    )
    assert f.paths == ("/data/x/photos/2023", "/home/u/Pictures/*", "*.png")
    assert f.roots == ("/data/media",)


@pytest.mark.parametrize(
    ("clause", "why"),
    [
        ("colour:red", "unknown filter"),
        ("kind:audio", "unknown kind"),
        ("after:yesterday", "not a date"),
        ("before:2023-13-01", "not a date"),
        ("size>big", "size>N"),
        ("size>5XB", "unknown size unit"),
        ("size", "size>N"),
        ("dogs on a beach", "KEY:VALUE"),
        ("   ", "empty"),
        ("path:", "needs a value"),
    ],
)
def test_parse_errors_name_the_clause_and_the_accepted_forms(clause, why):
    with pytest.raises(QueryError) as e:
        ItemFilter.parse(["kind:image", clause])
    msg = str(e.value)
    assert repr(clause) in msg and why in msg and "Accepted forms" in msg
    assert isinstance(e.value, UsageError)


def test_empty_combined_and_unsatisfiable_filters():
    assert ItemFilter().is_empty and ItemFilter.parse([]).is_empty
    both = ItemFilter.parse(["kind:image,video"]) & ItemFilter(kinds=frozenset({"video"}))
    assert both.kinds == frozenset({"video"})
    assert (ItemFilter.parse(["kind:image"]) & ItemFilter.parse(["kind:video"])).is_unsatisfiable
    assert ItemFilter.parse(["after:2024", "before:2023"]).is_unsatisfiable
    assert ItemFilter.parse(["size>10", "size<5"]).is_unsatisfiable
    assert ItemFilter.parse(["size<0"]).is_unsatisfiable
    assert not ItemFilter.parse(["size>=5", "size<=5"]).is_unsatisfiable
    assert ItemFilter.parse(["size>1", "size>3"]).size_min == 4


# -- SQL against a brute-force reference -------------------------------------------------------
DIRS = [
    "/archive/2022",
    "/archive/2023",
    "/archive/2023/trip",
    "/archive/2023-old",
    "/home/u/Pictures",
    "/home/u/Videos",
    "/data/we[ir]d*dir",
    "/data/space dir",
    "/data/ünïcode",
]
TAGS = ["dog", "beach", "indoor", "night"]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """~200 random items (plus failed ones) with their reference metadata."""
    rng = np.random.default_rng(7)
    cat = Catalog.open(tmp_path_factory.mktemp("flt") / "lib")
    cat.bind_model(ModelBinding("t", "fp", DIM))
    roots = {
        "/archive": cat.add_root("/archive"),
        "/home/u": cat.add_root("/home/u"),
        "/data": cat.add_root("/data"),
    }
    writes, meta = [], []
    for i in range(200):
        d = DIRS[rng.integers(len(DIRS))]
        kind = "video" if rng.random() < 0.3 else "image"
        ext = (
            rng.choice(["mp4", "mov"])
            if kind == "video"
            else rng.choice(["jpg", "JPG", "png", "heic"])
        )
        path = f"{d}/f{i:03d}.{ext}"
        root = next(r for r in roots if path.startswith(r + "/"))
        size = int(rng.integers(0, 5_000_000))
        # Half the items sit exactly on a UTC midnight, so range bounds get hit exactly.
        mtime = (
            T0
            + int(rng.integers(0, 100)) * DAY_NS
            + int(rng.integers(0, DAY_NS)) * (rng.random() < 0.5)
        )
        n = 1 if kind == "image" else int(rng.integers(2, 6))
        vec = rng.standard_normal((n, DIM)).astype(np.float32)
        ts = None if kind == "image" else np.append(np.arange(n - 1, dtype=float), np.nan)
        writes.append(
            ItemWrite(path, roots[root], kind, size, mtime, None, "ok", vectors=vec, timestamps=ts)
        )
        tags = {t for t in TAGS if rng.random() < 0.3}
        meta.append(
            {"path": path, "kind": kind, "size": size, "mtime": mtime, "root": root, "tags": tags}
        )
    writes += [
        ItemWrite(f"/archive/2023/bad{i}.jpg", roots["/archive"], "image", 5, T0, None, "failed")
        for i in range(5)
    ]
    ids = cat.write_items(writes)
    for m, item_id in zip(meta, ids, strict=False):
        m["id"] = item_id
    cat.set_tags({m["id"]: dict.fromkeys(m["tags"], 0.9) for m in meta if m["tags"]}, source="test")
    table = cat.load_vectors()
    yield cat, meta, table
    cat.close()


def reference(meta: list[dict], table, flt: ItemFilter) -> np.ndarray:
    """Vector ids of items matching ``flt``, computed in plain Python."""

    def path_ok(path: str, pattern: str) -> bool:
        if any(c in pattern for c in "*?["):
            return fnmatch.fnmatchcase(path, pattern)
        p = pattern.rstrip("/")
        return path == p or path.startswith(p + "/")

    keep = set()
    for m in meta:
        ok = all(path_ok(m["path"], p) for p in flt.paths)
        ok &= flt.kinds is None or m["kind"] in flt.kinds
        ok &= flt.mtime_after_ns is None or m["mtime"] >= flt.mtime_after_ns
        ok &= flt.mtime_before_ns is None or m["mtime"] < flt.mtime_before_ns
        ok &= flt.size_min is None or m["size"] >= flt.size_min
        ok &= flt.size_max is None or m["size"] <= flt.size_max
        ok &= all(m["root"] == r for r in flt.roots)
        ok &= all(t in m["tags"] for t in flt.tags)
        if ok:
            keep.add(m["id"])
    return table.ids[np.isin(table.item_ids, list(keep))]


def random_filter(rng: np.random.Generator, sizes: list[int]) -> ItemFilter:
    clauses = []
    if rng.random() < 0.5:
        clauses.append(
            "path:"
            + rng.choice(
                [
                    "/archive/2023/*",
                    "/archive/2023",
                    "/archive/2023/",
                    "/archive/202[23]/*",
                    "/archive/202[!3]/*",
                    "*.jpg",
                    "*.JPG",
                    "/home/u/*/f1??.*",
                    "/data/*",
                    "*/f0[0-4]?.*",
                    "/home",
                    "/home/u/Pictures/f0",
                ]
            )
        )
    if rng.random() < 0.4:
        clauses.append("kind:" + rng.choice(["image", "video", "image,video"]))
    if rng.random() < 0.4:
        day = int(rng.integers(0, 100))
        clauses.append(
            f"after:{datetime.fromtimestamp((T0 + day * DAY_NS) / 1e9, UTC).isoformat()}"
        )
    if rng.random() < 0.4:
        day = int(rng.integers(0, 100))
        clauses.append(
            f"before:{datetime.fromtimestamp((T0 + day * DAY_NS) / 1e9, UTC).isoformat()}"
        )
    if rng.random() < 0.4:
        op = rng.choice([">", ">=", "<", "<="])
        if rng.random() < 0.5:  # exactly an item's size: boundaries must be right
            clauses.append(f"size{op}{sizes[rng.integers(len(sizes))]}")
        else:
            clauses.append(f"size{op}{rng.integers(0, 5000)}k")
    if rng.random() < 0.2:
        clauses.append("root:" + rng.choice(["/archive", "/home/u", "/data", "/nowhere"]))
    if rng.random() < 0.3:
        clauses.append("tag:" + rng.choice([*TAGS, "Dog", "cat"]))
    return ItemFilter.parse(clauses)


def test_filters_match_brute_force_reference(library):
    cat, meta, table = library
    rng = np.random.default_rng(11)
    nonempty = 0
    sizes = [m["size"] for m in meta]
    for _ in range(150):
        flt = random_filter(rng, sizes)
        want = reference(meta, table, flt)
        got = cat.vector_ids_where(flt)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want, err_msg=str(flt))
        nonempty += len(want) > 0
    assert nonempty > 50  # the random filters do select things


def test_empty_filter_returns_every_vector(library):
    cat, _, table = library
    np.testing.assert_array_equal(cat.vector_ids_where(ItemFilter()), table.ids)


def test_selective_one_percent_filter(library):
    cat, meta, table = library
    flt = ItemFilter.parse(["path:*/f01[0-1].*"])  # 2 of 200 items
    want = reference(meta, table, flt)
    got = cat.vector_ids_where(flt)
    items = set(cat.items_for_vectors(got)[0].tolist())
    assert len(items) == 2
    np.testing.assert_array_equal(got, want)


def test_unsatisfiable_filters_return_empty_not_error(library):
    cat, _, _ = library
    for flt in (
        ItemFilter.parse(["after:2024", "before:2023"]),
        ItemFilter.parse(["size<0"]),
        ItemFilter.parse(["kind:image"]) & ItemFilter.parse(["kind:video"]),
        ItemFilter.parse(["root:/nowhere"]),
        ItemFilter.parse(["path:/no/such/folder/*"]),
        ItemFilter.parse(["tag:unicorn"]),
    ):
        got = cat.vector_ids_where(flt)
        assert got.dtype == np.int64 and len(got) == 0


@pytest.mark.parametrize(
    ("clauses", "everything"),
    [
        (["after:2263"], False),  # past the last instant an int64 of ns can hold
        (["after:9999-12-31"], False),
        (["before:2262-04-12"], True),
        (["before:9999"], True),
        (["after:1000"], True),  # before the first instant an int64 of ns can hold
        (["after:0001-01-01"], True),
        (["before:1000"], False),
        (["size>99999999999999999999999999"], False),
        (["size>=9223372036854775808"], False),
        (["size<99999999999999999999999999"], True),
        (["size<=99999999999999999999999999TiB"], True),
        (["size=99999999999999999999999999"], False),
        (["after:1000", "before:2263"], True),
    ],
)
def test_bounds_beyond_what_the_catalog_can_store_are_clamped(library, clauses, everything):
    """mtimes and sizes are 64-bit integers: a bound beyond that range is past every
    stored value, so it matches everything or nothing instead of failing."""
    cat, _, table = library
    got = cat.vector_ids_where(ItemFilter.parse(clauses))
    assert len(got) == (len(table.ids) if everything else 0)


def test_out_of_range_bounds_built_directly_are_clamped_too(library):
    cat, _, table = library
    assert len(cat.vector_ids_where(ItemFilter(size_min=-(2**70), size_max=2**70))) == len(
        table.ids
    )
    assert len(cat.vector_ids_where(ItemFilter(mtime_before_ns=-(2**64)))) == 0


def test_lookups_by_ids_beyond_64_bits_find_nothing_instead_of_failing(library):
    cat, meta, _ = library
    some = meta[0]["id"]
    got = cat.item_vectors([2**63, some, -(2**63) - 1])
    assert list(got) == [some]
    assert cat.items([2**70]) == {}


def test_prefix_respects_component_boundary(library):
    cat, meta, _ = library
    got = set(
        cat.items_for_vectors(cat.vector_ids_where(ItemFilter.parse(["path:/archive/2023"])))[
            0
        ].tolist()
    )
    paths = {m["path"] for m in meta if m["id"] in got}
    assert paths and all(p.startswith("/archive/2023/") for p in paths)
    assert any(m["path"].startswith("/archive/2023-old/") for m in meta)


def test_special_characters_are_literal_in_prefixes(library):
    cat, meta, table = library
    # An escaped pattern has no wildcard: the folder's literal name, as a prefix.
    flt = ItemFilter.parse([r"path:/data/we\[ir\]d\*dir"])
    got = cat.vector_ids_where(flt)
    want_items = {m["id"] for m in meta if m["path"].startswith("/data/we[ir]d*dir/")}
    assert want_items
    np.testing.assert_array_equal(got, table.ids[np.isin(table.item_ids, list(want_items))])
    # Unescaped, [ir] is a class: /data/weid*dir and /data/werd*dir match, the real folder does not.
    assert len(cat.vector_ids_where(ItemFilter.parse(["path:/data/we[ir]d*dir/*"]))) == 0
    # Spaces, unicode and a quote travel as parameters, never as SQL.
    assert len(cat.vector_ids_where(ItemFilter.parse(["path:/data/space dir"]))) > 0
    assert len(cat.vector_ids_where(ItemFilter.parse(["path:/data/ünïcode/*"]))) > 0
    assert len(cat.vector_ids_where(ItemFilter.parse(["path:/x' OR 1=1 --"]))) == 0


def test_glob_is_case_sensitive(library):
    cat, _meta, _table = library
    jpg = set(
        cat.items_for_vectors(cat.vector_ids_where(ItemFilter.parse(["path:*.jpg"])))[0].tolist()
    )
    upper = set(
        cat.items_for_vectors(cat.vector_ids_where(ItemFilter.parse(["path:*.JPG"])))[0].tolist()
    )
    assert jpg and upper and not jpg & upper


def test_direct_construction_normalises_containers():
    f = ItemFilter(paths="/a/*", kinds={"video"}, tags=["Dog"])
    assert f.paths == ("/a/*",) and f.kinds == frozenset({"video"}) and f.tags == ("dog",)
    assert ItemFilter(kinds="image").kinds == frozenset({"image"})
    assert (f & ItemFilter(kinds=("video", "image"))).kinds == frozenset({"video"})
    assert hash(f) == hash(ItemFilter(paths=("/a/*",), kinds=frozenset({"video"}), tags=("dog",)))


def test_text_phrases_keep_only_items_whose_text_has_each(tmp_path):
    def write(path: str, text: str | None, n: int) -> ItemWrite:
        vec = np.zeros((1, 4), dtype=np.float32)
        vec[0, n] = 1
        return ItemWrite(
            path=path,
            root_id=None,
            kind="image",
            size=100,
            mtime_ns=1,
            content_hash=f"h:{path}",
            status="ok",
            vectors=vec,
            text=TextRead(OCR, "reader-1", rows=((None, text),) if text else ()),
        )

    cat = Catalog.open(tmp_path / "lib")
    try:
        cat.bind_model(ModelBinding("fake", "fp", 4))
        items = [("/a.jpg", "Happy Birthday!"), ("/b.jpg", "BIRTHDAY PARTY"), ("/c.jpg", None)]
        a, b, c = cat.write_items([write(p, text, n) for n, (p, text) in enumerate(items)])
        assert cat.items_where([a, b, c], ItemFilter.parse(["text:happy birthday"])) == [a]
        assert cat.items_where([a, b, c], ItemFilter.parse(["text:birthday"])) == [a, b]
        both = ItemFilter.parse(["text:birthday", "text:party"])
        assert cat.items_where([a, b, c], both) == [b]
        assert cat.items_where([a, b, c], ItemFilter.parse(["text:cake"])) == []
    finally:
        cat.close()
