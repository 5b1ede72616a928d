"""The ``--where`` filter language (store/filters.py, docs in its docstring) as rules that
hold for any clause, checked against references that share no code with it:

- sizes: the bounds of ``size OP N UNIT`` admit exactly the whole byte counts that satisfy
  the comparison with the exact rational N·UNIT (``size>1.5k`` is size ≥ 1501);
- dates: an ISO date with a zone is that instant, to the microsecond;
- clauses AND: two ``after:``, ``before:`` or ``size`` clauses admit what both admit;
- ``path:`` globs select what Python's ``fnmatch`` selects (``*`` crossing "/", classes,
  ``[!…]``, ``[]…]``, an unclosed ``[`` as a literal), ``\\c`` is a literal c, and a
  pattern without a wildcard is a folder or file prefix on a component boundary;
- prefix patterns still range-scan the unique index on ``items.path``;
- each refusal names the clause, says what is wrong and lists the accepted forms.
"""

from __future__ import annotations

import fnmatch
import math
import operator
import re
import sqlite3
import time
from datetime import UTC, datetime, timedelta, timezone
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from clipsearch.errors import QueryError
from clipsearch.store import Catalog, ItemFilter, ItemWrite, ModelBinding, vector_io
from clipsearch.store.filter_sql import (
    INT64_MAX,
    INT64_MIN,
    filter_condition,
    path_condition,
    shell_to_glob,
)

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],  # a shared machine under load
)

UNITS = {
    "": 1,
    "B": 1,
    "k": 10**3,
    "kB": 10**3,
    "M": 10**6,
    "MB": 10**6,
    "G": 10**9,
    "GB": 10**9,
    "T": 10**12,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}
COMPARE = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "=": operator.eq,
}


def admits(flt: ItemFilter, *, size: int | None = None, mtime: int | None = None) -> bool:
    """Whether an item of this size / mtime passes the filter's bounds (the reference
    reading of the fields' documented meaning: inclusive, inclusive, exclusive before)."""
    ok = True
    if size is not None:
        ok &= flt.size_min is None or size >= flt.size_min
        ok &= flt.size_max is None or size <= flt.size_max
    if mtime is not None:
        ok &= flt.mtime_after_ns is None or mtime >= flt.mtime_after_ns
        ok &= flt.mtime_before_ns is None or mtime < flt.mtime_before_ns
    return ok


# -- sizes ------------------------------------------------------------------------------------
@st.composite
def size_clauses(draw):
    """(clause text, operator, exact value in bytes) in every accepted spelling."""
    whole = draw(st.integers(0, 2000))
    frac = draw(st.sampled_from(["", "0", "5", "25", "125", "999", "001"]))
    form = draw(st.sampled_from(["int", "frac", "dot", "lead"]))
    if form == "int" or (form == "frac" and not frac):
        number, value = str(whole), Fraction(whole)
    elif form == "frac":
        number, value = f"{whole}.{frac}", Fraction(f"{whole}.{frac}")
    elif form == "dot":  # "3." is 3
        number, value = f"{whole}.", Fraction(whole)
    else:  # ".5"
        frac = frac or "5"
        number, value = f".{frac}", Fraction(f"0.{frac}")
    op = draw(st.sampled_from(list(COMPARE)))
    unit = draw(st.sampled_from(list(UNITS)))
    spelt_unit = draw(st.sampled_from([unit, unit.lower(), unit.upper()]))
    key = draw(st.sampled_from(["size", "SIZE", "Size"]))
    gap = draw(st.sampled_from(["", " "]))
    if draw(st.booleans()):  # size:OP N (and size:N for "=")
        spelt_op = "" if op == "=" and draw(st.booleans()) else op
        clause = f"{key}:{gap}{spelt_op}{gap}{number}{gap}{spelt_unit}"
    else:
        clause = f"{key}{gap}{op}{gap}{number}{gap}{spelt_unit}"
    return clause, op, value * UNITS[unit]


@PROPERTY
@given(size_clauses())
def test_size_bounds_admit_exactly_the_sizes_that_satisfy_the_comparison(case):
    clause, op, value = case
    flt = ItemFilter.parse([clause])
    floor, ceil = math.floor(value), math.ceil(value)
    for size in {0, 1, floor - 1, floor, floor + 1, ceil, ceil + 1, 2 * ceil + 7}:
        if size >= 0:
            assert admits(flt, size=size) == COMPARE[op](size, value), (clause, size)
    assert flt.is_unsatisfiable == ((op == "<" and value <= 0) or (op == "=" and floor != value))
    assert (flt.mtime_after_ns, flt.mtime_before_ns, flt.kinds, flt.paths) == (
        None,
        None,
        None,
        (),
    )


@pytest.mark.parametrize(
    ("clause", "lo", "hi"),
    [
        ("size=1.5", 2, 1),  # nothing has a fractional size: valid, matches nothing
        ("size>.5MB", 500_001, None),
        ("size>=.5MB", 500_000, None),
        ("size<=.5k", None, 500),
        ("size: 3.", 3, 3),
        ("size = 1.5KiB", 1536, 1536),
        ("size<1tib", None, 2**40 - 1),
        ("size>" + "9" * 100, 10**100, None),  # a hundred digits are still a number
    ],
)
def test_size_spellings_from_the_docs(clause, lo, hi):
    f = ItemFilter.parse([clause])
    assert (f.size_min, f.size_max) == (lo, hi)


# -- dates ------------------------------------------------------------------------------------
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@PROPERTY
@given(
    st.datetimes(datetime(1971, 1, 1), datetime(2200, 12, 31)),
    st.sampled_from(
        [UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))]
    ),
    st.sampled_from(["iso", "Z", "minutes"]),
)
def test_a_date_with_a_zone_is_that_instant_to_the_microsecond(naive, tz, form):
    dt = naive.replace(tzinfo=tz)
    if form == "minutes":
        dt = dt.replace(second=0, microsecond=0)
        text = dt.strftime("%Y-%m-%dT%H:%M") + dt.isoformat()[-6:]
    elif form == "Z":
        dt = dt.astimezone(UTC)
        text = dt.isoformat().replace("+00:00", "Z")
    else:
        text = dt.isoformat()
    want = (dt - EPOCH) // timedelta(microseconds=1) * 1000  # exact integer arithmetic
    assert ItemFilter.parse([f"after:{text}"]).mtime_after_ns == want
    assert ItemFilter.parse([f"before: {text}"]).mtime_before_ns == want


@PROPERTY
@given(st.integers(1971, 2200), st.integers(1, 12))
def test_a_year_or_a_month_is_its_first_local_midnight(year, month):
    assert (
        ItemFilter.parse([f"after:{year}"]).mtime_after_ns
        == int(datetime(year, 1, 1).timestamp() * 10**6) * 1000
    )
    assert (
        ItemFilter.parse([f"before:{year}-{month:02d}"]).mtime_before_ns
        == int(datetime(year, month, 1).timestamp() * 10**6) * 1000
    )


def test_dates_past_the_platform_calendar_bound_everything_or_nothing():
    """Local time cannot reach year 1 here: such a bound is past every stored mtime,
    including those before 1970 (negative), never a bound near the epoch."""
    for text in ("0001", "0001-01-01", "0001-01-01T00:00"):
        assert admits(ItemFilter.parse([f"after:{text}"]), mtime=INT64_MIN)
        assert not admits(ItemFilter.parse([f"before:{text}"]), mtime=INT64_MIN)
    for text in ("9999", "9999-12-31T23:59", "9999-12-31T23:59Z"):
        assert not admits(ItemFilter.parse([f"after:{text}"]), mtime=INT64_MAX)
        assert admits(ItemFilter.parse([f"before:{text}"]), mtime=INT64_MAX)


# -- clauses combine with AND ------------------------------------------------------------------
DAY = 86_400 * 10**9
dates = st.dates(datetime(2000, 1, 1).date(), datetime(2000, 3, 1).date())


@PROPERTY
@given(
    st.lists(st.tuples(st.sampled_from(["after", "before"]), dates), min_size=2, max_size=3),
    st.integers(-2, 70),
)
def test_date_clauses_combine_as_and(clauses, day):
    texts = [f"{key}:{d.isoformat()}T00:00Z" for key, d in clauses]
    mtime = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp()) * 10**9 + day * DAY
    for t in (mtime - 1, mtime, mtime + 1):
        alone = [admits(ItemFilter.parse([c]), mtime=t) for c in texts]
        assert admits(ItemFilter.parse(texts), mtime=t) == all(alone), (texts, t)
    both = ItemFilter.parse(texts)
    lows = [ItemFilter.parse([c]).mtime_after_ns for c in texts if c.startswith("after")]
    highs = [ItemFilter.parse([c]).mtime_before_ns for c in texts if c.startswith("before")]
    assert both.mtime_after_ns == (max(lows) if lows else None)
    assert both.mtime_before_ns == (min(highs) if highs else None)
    assert both.is_unsatisfiable == (bool(lows and highs) and max(lows) >= min(highs))


@PROPERTY
@given(
    st.lists(
        st.tuples(st.sampled_from(["<", "<=", ">", ">=", "="]), st.integers(0, 40)),
        min_size=2,
        max_size=3,
    ),
)
def test_size_clauses_combine_as_and(clauses):
    texts = [f"size{op}{n}" for op, n in clauses]
    both = ItemFilter.parse(texts)
    admitted = [s for s in range(45) if admits(both, size=s)]
    assert admitted == [s for s in range(45) if all(COMPARE[op](s, n) for op, n in clauses)]
    assert both.is_unsatisfiable == (not admitted)


def test_two_clauses_of_one_kind_keep_the_tighter_bound():
    f = ItemFilter.parse(["size<10", "size<5", "size<7"])
    assert (f.size_min, f.size_max) == (None, 4)
    f = ItemFilter.parse(["after:2023", "after:2024", "before:2026", "before:2025"])
    assert f.mtime_after_ns == ItemFilter.parse(["after:2024"]).mtime_after_ns
    assert f.mtime_before_ns == ItemFilter.parse(["before:2025"]).mtime_before_ns
    # after and before on the same instant: an empty range, valid, matches nothing
    assert ItemFilter.parse(["after:2024", "before:2024"]).is_unsatisfiable
    assert not ItemFilter.parse(
        ["after:2024", "before:2024-01-01T00:00:00.000001"]
    ).is_unsatisfiable


def test_every_other_clause_accumulates():
    f = ItemFilter.parse(
        ["path:/a/*", "path:*.jpg", "path:/a/*", "tag:Dog", "tag:dog", "tag:beach", "root:/r"]
    )
    assert f.paths == ("/a/*", "*.jpg")  # each must match; repeats are dropped
    assert f.tags == ("dog", "beach")
    assert f.roots == ("/r",)
    assert (f & ItemFilter(roots=("/s",))).roots == ("/r", "/s")
    kinds = ItemFilter.parse(["kind:image, video", "kind:VIDEO"]).kinds
    assert kinds == frozenset({"video"})
    assert (ItemFilter() & ItemFilter(kinds={"image"})).kinds == frozenset({"image"})
    assert (ItemFilter(kinds={"image"}) & ItemFilter()).kinds == frozenset({"image"})
    assert ItemFilter(kinds=frozenset()).is_unsatisfiable
    assert not ItemFilter(size_min=5, size_max=5).is_unsatisfiable
    assert ItemFilter(size_max=-1).is_unsatisfiable and not ItemFilter(size_max=0).is_unsatisfiable
    assert ItemFilter.parse("kind:image").kinds == frozenset({"image"})  # one clause as a string


# -- path patterns as written -------------------------------------------------------------------
def test_path_patterns_are_made_absolute_against_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", "/home/u")
    assert ItemFilter.parse(["path:photos/*"], cwd="/").paths == ("/photos/*",)
    assert ItemFilter.parse(["path:photos"], cwd="/data/").paths == ("/data/photos",)
    assert ItemFilter.parse(["path:photos"], cwd="/dX/X").paths == ("/dX/X/photos",)
    assert ItemFilter.parse(["path:?x/*", "path:[ab]/*"], cwd="/d").paths == ("?x/*", "[ab]/*")
    assert ItemFilter.parse(["path:~"], cwd="/d").paths == ("/home/u",)
    assert ItemFilter.parse(["root:~/media/../pics/"], cwd="/d").roots == ("/home/u/pics",)
    monkeypatch.chdir(tmp_path)
    assert ItemFilter.parse(["path:a/*", "root:."]) == ItemFilter(
        paths=(f"{tmp_path}/a/*",), roots=(str(tmp_path),)
    )


def glob_selects(pattern: str, path: str) -> bool:
    """Whether the SQL for ``path:pattern`` selects ``path`` (SQLite, no catalog)."""
    sql, params = path_condition(pattern)
    with sqlite3.connect(":memory:") as conn:
        row = conn.execute(f"SELECT 1 FROM (SELECT ? AS path) AS i WHERE {sql}", [path, *params])
        return row.fetchone() is not None


# A pattern is a sequence of tokens: (text, its meaning as an fnmatch pattern, wildcard?).
LITERALS = "abX/.-!]^ "
TOKENS = st.one_of(
    st.sampled_from(LITERALS).map(lambda c: (c, c if c != "]" else "[]]", False)),
    # escaped: a literal (fnmatch has no escape: a wildcard character goes in a class)
    st.sampled_from("*?[!]ab ").map(lambda c: ("\\" + c, f"[{c}]" if c in "*?[" else c, False)),
    st.sampled_from(["*", "?"]).map(lambda c: (c, c, True)),
    st.sampled_from(["[ab]", "[!a]", "[]a]", "[!]a]", "[a-c]", "[!-]", "[/]", "[*?]", "[[]"]).map(
        lambda c: (c, c, True)
    ),
)


@st.composite
def patterns(draw):
    """(pattern, fnmatch equivalent, literal text if it has no wildcard else None)."""
    tokens = draw(st.lists(TOKENS, min_size=1, max_size=6))
    if draw(st.booleans()):  # an unclosed "[" is a literal, and only the last one can be
        # ("]" right after "[" or "[!" belongs to the class, so "[]" and "[!]" are unclosed)
        tail = draw(st.sampled_from(["[", "[!", "[]", "[!]"]))
        tokens.append((tail, "".join(f"[{c}]" if c in "[]" else c for c in tail), False))
        tokens.extend(draw(st.lists(TOKENS.filter(lambda t: "]" not in t[0]), max_size=2)))
    if draw(st.integers(0, 4)) == 0:  # a backslash ending the pattern is a literal one
        tokens.append(("\\", "\\", False))
    pattern = "".join(t for t, _, _ in tokens)
    reference = "".join(r for _, r, _ in tokens)
    if any(wild for _, _, wild in tokens):
        return pattern, reference, None
    return pattern, reference, "".join(t[-1] if t.startswith("\\") else t for t, _, _ in tokens)


PATH_CHARS = "abX/.-!]^[*? c\\"


@PROPERTY
@given(patterns(), st.lists(st.text(PATH_CHARS, max_size=6), min_size=3, max_size=3))
def test_path_globs_select_what_fnmatch_selects(case, others):
    pattern, reference, literal = case
    # Paths that should and should not match: the pattern read literally, with a child
    # and a sibling, plus random ones.
    plain = pattern.replace("\\", "")
    candidates = {plain, plain + "/x", plain + "x", plain[:-1], *others}
    if literal is not None:
        candidates |= {literal, literal + "/", literal + "/c", literal + "c", literal.rstrip("/")}
    for path in candidates:
        if literal is None:
            want = fnmatch.fnmatchcase(path, reference)
        else:  # no wildcard: the folder or file itself, or anything below it
            stem = literal.rstrip("/")
            want = path == stem or path.startswith(stem + "/") if stem else path.startswith("/")
        assert glob_selects(pattern, path) == want, (pattern, reference, path)


@pytest.mark.parametrize(
    ("pattern", "selected"),
    [
        # an escape plus a wildcard: the literal folder name, then anything below it
        (r"/data/we\[ir\]d/*", {"/data/we[ir]d/a.jpg"}),
        ("/data/we[ir]d/*", {"/data/weid/a.jpg", "/data/werd/b.jpg"}),
        # an unclosed "[" is a literal: a prefix, with or without a wildcard after it
        ("/data/a[b", {"/data/a[b/c.jpg"}),
        ("/data/a[b/*", {"/data/a[b/c.jpg"}),
        # the only wildcard is a class
        ("/img[0-9].jpg", {"/img1.jpg"}),
        ("/x/[]]*", {"/x/]a.jpg"}),
        ("/x/[!]]*", {"/x/!a.jpg", "/x/b.jpg"}),
        # a trailing "/" is the folder, on a component boundary
        ("/archive/2023/", {"/archive/2023/a.jpg", "/archive/2023/trip/c.jpg"}),
        ("/archive/2023", {"/archive/2023/a.jpg", "/archive/2023/trip/c.jpg"}),
        ("/archive/2023/a.jpg", {"/archive/2023/a.jpg"}),
        (
            "/archive/2023*",
            {"/archive/2023/a.jpg", "/archive/2023/trip/c.jpg", "/archive/2023-old/a.jpg"},
        ),
        (
            "*/a.jpg",
            {
                "/archive/2023/a.jpg",
                "/archive/2023-old/a.jpg",
                "/data/weid/a.jpg",
                "/data/we[ir]d/a.jpg",
            },
        ),
    ],
)
def test_path_patterns_in_a_catalog(paths_catalog, pattern, selected):
    cat, ids_by_path = paths_catalog
    got = cat.vector_ids_where(ItemFilter.parse([f"path:{pattern}"]))
    assert sorted(got.tolist()) == sorted(ids_by_path[p] for p in selected)


def test_path_root_selects_everything(paths_catalog):
    cat, ids_by_path = paths_catalog
    assert len(cat.vector_ids_where(ItemFilter.parse(["path:/"]))) == len(ids_by_path)


CATALOG_PATHS = [
    "/data/we[ir]d/a.jpg",
    "/data/weid/a.jpg",
    "/data/werd/b.jpg",
    "/data/a[b/c.jpg",
    "/img1.jpg",
    "/img12.jpg",
    "/imgx.jpg",
    "/x/]a.jpg",
    "/x/!a.jpg",
    "/x/b.jpg",
    "/archive/2023/a.jpg",
    "/archive/2023/trip/c.jpg",
    "/archive/2023-old/a.jpg",
]


@pytest.fixture(scope="module")
def paths_catalog(tmp_path_factory):
    cat = Catalog.open(tmp_path_factory.mktemp("paths") / "lib")
    cat.bind_model(ModelBinding("t", "fp", 4))
    root = cat.add_root("/")
    writes = [
        ItemWrite(p, root, "image", 10, 0, None, "ok", vectors=np.ones((1, 4), np.float32))
        for p in CATALOG_PATHS
    ]
    item_ids = cat.write_items(writes)
    table = cat.load_vectors()
    by_item = dict(zip(table.item_ids.tolist(), table.ids.tolist(), strict=True))
    yield cat, {p: by_item[i] for p, i in zip(CATALOG_PATHS, item_ids, strict=True)}
    cat.close()


class _RecordingConnection:
    """A connection that remembers the statements it runs (to explain them afterwards)."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn, self.statements = conn, []

    def execute(self, sql, params=()):
        self.statements.append((sql, list(params)))
        return self.conn.execute(sql, params)


@pytest.mark.parametrize(
    "pattern",
    [
        "/archive/2023/*",
        "/archive/2023",
        "/archive/2023/",
        "/img[0-9].jpg",
        r"/data/we\[ir\]d/*",
        "/data/a[b",
        "/",
    ],
)
def test_prefix_patterns_range_scan_the_path_index(paths_catalog, pattern):
    """A pattern with a literal start is answered from the unique index on items.path, not
    by reading every item (SQLite's GLOB prefix optimisation needs the bound pattern to
    start with that literal text)."""
    cat, _ = paths_catalog
    sql, params = filter_condition(ItemFilter.parse([f"path:{pattern}"]))
    with sqlite3.connect(cat.db_path) as conn:
        rec = _RecordingConnection(conn)
        vector_io.vector_ids(rec, sql, params)  # the query the catalog runs for a filter
        (statement, args), *_ = rec.statements
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}", args)]
    on_path = [p for p in plan if "SEARCH i USING" in p and "INDEX sqlite_autoindex_items_1" in p]
    assert on_path, plan
    assert all(re.search(r"\(path[=>]", p) for p in on_path), plan
    assert not any(p.startswith("SCAN i") for p in plan), plan


def test_a_leading_wildcard_cannot_use_the_path_index(paths_catalog):
    """The contrast that shows the plan check above can fail."""
    cat, _ = paths_catalog
    sql, params = filter_condition(ItemFilter.parse(["path:*.jpg"]))
    with sqlite3.connect(cat.db_path) as conn:
        rec = _RecordingConnection(conn)
        vector_io.vector_ids(rec, sql, params)
        (statement, args), *_ = rec.statements
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}", args)]
    assert not any("(path" in p for p in plan), plan


# -- bounds the catalog cannot hold -------------------------------------------------------------
# when an item was taken: its capture time, or its file time where none was read
TAKEN = "COALESCE((SELECT c.taken_ns FROM capture_times c WHERE c.item_id = i.id), i.mtime_ns)"


@pytest.mark.parametrize(
    ("flt", "condition"),
    [
        (ItemFilter(size_min=INT64_MAX), ("i.size >= ?", [INT64_MAX])),
        (ItemFilter(size_min=INT64_MAX + 1), None),
        (ItemFilter(size_min=INT64_MIN), ("i.size >= ?", [INT64_MIN])),
        (ItemFilter(size_min=INT64_MIN - 1), ("1", [])),
        (ItemFilter(size_max=INT64_MAX - 1), ("i.size <= ?", [INT64_MAX - 1])),
        (ItemFilter(size_max=INT64_MIN), None),  # no size is negative
        (ItemFilter(size_max=INT64_MAX), ("1", [])),  # every int64 is ≤ it
        (ItemFilter(mtime_before_ns=INT64_MAX), ("i.mtime_ns < ?", [INT64_MAX])),
        (ItemFilter(mtime_before_ns=INT64_MAX + 1), ("1", [])),
        (ItemFilter(mtime_before_ns=INT64_MIN + 1), ("i.mtime_ns < ?", [INT64_MIN + 1])),
        (ItemFilter(mtime_before_ns=INT64_MIN), None),  # nothing is below the smallest
        (ItemFilter(mtime_after_ns=INT64_MAX), ("i.mtime_ns >= ?", [INT64_MAX])),
        (ItemFilter(mtime_after_ns=INT64_MIN - 1), ("1", [])),
        (ItemFilter(taken_before_ns=INT64_MIN), None),  # the capture-time bound: exclusive
        (ItemFilter(taken_before_ns=INT64_MAX), (f"{TAKEN} < ?", [INT64_MAX])),
        (ItemFilter(taken_before_ns=INT64_MAX + 1), ("1", [])),
        (ItemFilter(taken_after_ns=INT64_MAX + 1), None),
        (ItemFilter(taken_after_ns=INT64_MIN), (f"{TAKEN} >= ?", [INT64_MIN])),
        (ItemFilter(taken_after_ns=INT64_MIN - 1), ("1", [])),
        (ItemFilter(size_min=3, size_max=2), None),
        (
            ItemFilter(kinds={"video", "image"}, tags=("a",), size_max=2**70),
            (
                "i.kind IN (?, ?) AND EXISTS (SELECT 1 FROM tags g WHERE g.tag = ? "
                "AND g.item_id = i.id)",
                ["image", "video", "a"],
            ),
        ),
    ],
)
def test_bounds_at_the_edges_of_64_bits(flt, condition):
    assert filter_condition(flt) == condition


# -- refusals -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("clause", "why"),
    [
        ("", "the clause is empty"),
        ("path:/a\x00b/*", "the pattern contains a NUL character"),
        ("path:\x00", "the pattern contains a NUL character"),
        ("tag:  ", "tag: needs a value"),
        ("Kind:", "kind: needs a value"),
        ("kind:audio,video", "unknown kind 'audio'; use image or video"),
        ("kind:,", "unknown kind ','; use image or video"),
        ("after:yesterday", "'yesterday' is not a date (Invalid isoformat string"),
        ("before:2023-02-30", "'2023-02-30' is not a date (day is out of range for month)"),
        ("after:2023-13", "'2023-13' is not a date (month must be in 1..12)"),
        ("size>>5", "expected size>N, size>=N, size<N, size<=N or size=N"),
        ("size>5 MB extra", "expected size>N, size>=N, size<N, size<=N or size=N"),
        ("size>-5", "expected size>N"),
        ("size<5parsecs", "unknown size unit 'parsecs'; use B, kB, MB, GB, TB, KiB, MiB, GiB"),
        ("size>" + "9" * 101, "the number has more than 100 digits"),  # not a crash
        ("size<1." + "5" * 5000, "the number has more than 100 digits"),
        ("colour:red", "unknown filter 'colour'"),
        ("red dogs", "expected KEY:VALUE or size>N"),
        (":red", "expected KEY:VALUE or size>N"),
    ],
)
def test_refusals_name_the_clause_say_why_and_list_the_accepted_forms(clause, why):
    with pytest.raises(QueryError) as e:
        ItemFilter.parse(["kind:image", clause])
    msg = str(e.value)
    assert msg.startswith(f"bad --where clause {clause!r}: {why}")
    for form in (
        "Accepted forms: path:GLOB (e.g. path:/archive/2023/*)",
        "kind:image|video",
        "after:DATE, before:DATE",
        "size>N / size<N (N like 500k, 1MB, 1.5GiB)",
        "root:PATH, tag:NAME",
    ):
        assert form in msg


@PROPERTY
@given(st.text(min_size=1, max_size=12))
def test_any_text_is_a_filter_or_a_clear_refusal(text):
    """Whatever a user types after --where, the answer is a filter or a QueryError that
    quotes the clause; never another exception."""
    assume(text.strip())
    try:
        flt = ItemFilter.parse([text], cwd="/d")
    except QueryError as e:
        assert f"bad --where clause {text!r}" in str(e)
    else:
        assert not flt.is_empty


def test_a_folder_ending_in_x_keeps_its_name():
    # a trailing "/" is dropped, and only that: the folder's own last letter stays
    assert glob_selects("/media/BOX/", "/media/BOX/a.jpg")
    assert glob_selects("/media/BOX/", "/media/BOX")
    assert not glob_selects("/media/BOX/", "/media/BO/a.jpg")
    assert shell_to_glob("/media/BOX/a.jpg") == ("/media/BOX/a.jpg", False)
    assert shell_to_glob("/media/*.jpg") == ("/media/*.jpg", True)


def test_dates_beyond_local_time_are_beyond_every_mtime(monkeypatch):
    # west of UTC, 9999-12-31 23:00 local is already year 10000 in UTC: no platform
    # conversion reaches it, and no stored mtime is that late
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert filter_condition(ItemFilter.parse(["after:9999-12-31T23:00"])) is None
        assert filter_condition(ItemFilter.parse(["before:9999-12-31T23:00"])) == ("1", [])
        assert filter_condition(ItemFilter.parse(["before:0001-01-01"])) is None
        assert filter_condition(ItemFilter.parse(["after:0001-01-01"])) == ("1", [])
    finally:
        monkeypatch.undo()
        time.tzset()
