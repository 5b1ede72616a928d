"""Property tests for the --where parser (clipsearch.store.filters) and its SQL: any
clause is a filter or a QueryError; size bounds are exact rational arithmetic; and any
parsed filter runs against a real catalog and selects exactly what a plain-Python
reference selects, however far out of range its bounds are."""

from __future__ import annotations

from datetime import datetime
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clipsearch.errors import QueryError
from clipsearch.store import Catalog, ItemFilter, ItemWrite, ModelBinding
from clipsearch.store.filters import _UNITS

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT64_MAX = 2**63 - 1


@SETTINGS
@given(st.text(max_size=120))
@example("size>99999999999999999999999999")
@example("after:2263")
@example("after:1000")
@example("before:0001-01-01")
@example("after:9999-12-31T23:59:59+14:00")
@example("size=")
@example("size<=.5KiB")
@example("kind:")
@example("path:\x00")
@example("tag:" + "x" * 100)
def test_any_clause_is_a_filter_or_a_query_error_naming_it(clause):
    try:
        flt = ItemFilter.parse([clause], cwd="/base")
    except QueryError as e:
        assert repr(clause) in str(e) or "empty" in str(e)
        return
    assert isinstance(flt, ItemFilter)


ops = st.sampled_from([">", ">=", "<", "<=", "="])
units = st.sampled_from(sorted(_UNITS))
numbers = st.one_of(
    st.integers(min_value=0, max_value=10**22).map(str),
    st.tuples(st.integers(0, 10**9), st.integers(0, 10**6)).map(lambda p: f"{p[0]}.{p[1]}"),
)


@SETTINGS
@given(ops, numbers, units, st.sampled_from(["", " "]))
def test_size_bounds_are_exact(op, number, unit, space):
    flt = ItemFilter.parse([f"size{op}{space}{number}{unit}"])
    value = Fraction(number) * _UNITS[unit]  # bytes, exactly

    def holds(size: int) -> bool:
        return {
            ">": size > value,
            ">=": size >= value,
            "<": size < value,
            "<=": size <= value,
            "=": size == value,
        }[op]

    def selected(size: int) -> bool:
        return (flt.size_min is None or size >= flt.size_min) and (
            flt.size_max is None or size <= flt.size_max
        )

    edges = {0, 1, int(value) - 1, int(value), int(value) + 1}
    for bound in (flt.size_min, flt.size_max):
        if bound is not None:
            edges |= {bound - 1, bound, bound + 1}
    for size in edges:
        if size >= 0:
            assert selected(size) == holds(size), (size, flt)


# -- parsed filters against a real catalog ------------------------------------------------------
SIZES = [0, 1, 999, 10**6, 5 * 10**9, INT64_MAX]
MTIMES = [-(2**62), 0, 1_600_000_000 * 10**9, 1_700_000_000 * 10**9, 2**62]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    cat = Catalog.open(tmp_path_factory.mktemp("where") / "lib")
    cat.bind_model(ModelBinding("t", "fp", 4))
    rng = np.random.default_rng(0)
    writes, meta = [], []
    for i, (size, mtime) in enumerate((s, m) for s in SIZES for m in MTIMES):
        kind = "video" if i % 3 == 0 else "image"
        vec = rng.standard_normal((1, 4)).astype(np.float32)
        writes.append(ItemWrite(f"/d/{i}.jpg", None, kind, size, mtime, None, "ok", vectors=vec))
        meta.append((size, mtime, kind))
    ids = cat.write_items(writes)
    yield cat, dict(zip(ids, meta, strict=True))
    cat.close()


def dates():
    years = st.integers(min_value=1, max_value=9999)
    return st.one_of(
        years.map(lambda y: f"{y:04d}"),
        st.tuples(years, st.integers(1, 12)).map(lambda p: f"{p[0]:04d}-{p[1]:02d}"),
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(
            lambda d: d.isoformat(timespec="seconds")
        ),
    )


clauses = st.one_of(
    st.tuples(ops.filter(lambda o: o != "="), numbers, units).map(
        lambda t: f"size{t[0]}{t[1]}{t[2]}"
    ),
    dates().map(lambda d: f"after:{d}"),
    dates().map(lambda d: f"before:{d}"),
    st.sampled_from(["kind:image", "kind:video", "kind:image,video"]),
)


@SETTINGS
@given(st.lists(clauses, min_size=1, max_size=4))
def test_any_parsed_filter_selects_what_the_reference_selects(catalog, where):
    cat, meta = catalog
    flt = ItemFilter.parse(where)
    got = {int(i) for i in cat.items_for_vectors(cat.vector_ids_where(flt))[0]}

    def keep(size: int, mtime: int, kind: str) -> bool:
        return (
            (flt.size_min is None or size >= flt.size_min)
            and (flt.size_max is None or size <= flt.size_max)
            and (flt.mtime_after_ns is None or mtime >= flt.mtime_after_ns)
            and (flt.mtime_before_ns is None or mtime < flt.mtime_before_ns)
            and (flt.kinds is None or kind in flt.kinds)
        )

    want = {i for i, (size, mtime, kind) in meta.items() if keep(size, mtime, kind)}
    assert got == want, (where, flt)
