"""Property tests for the query grammar (clipsearch.search.query): any string is a plan
or a QueryError (never another exception, never a non-finite weight), and a query built
from terms parses back to those terms."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from clipsearch.errors import QueryError
from clipsearch.search.query import QueryPlan, parse_query

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def never_a_file(_: str) -> bool:
    return False


@SETTINGS
@given(st.text(max_size=200))
@example('"1e999:dog"')  # a weight that overflows to infinity
@example('"-1e999:dog" + cat')
@example('"nan:dog"')
@example("- -")
@example('""')
@example("+")
@example('"a" "b"')
def test_any_string_is_a_plan_or_a_query_error(query):
    try:
        plan = parse_query(query, is_file=never_a_file)
    except QueryError as e:
        assert str(e)  # a message a user can read
        return
    assert isinstance(plan, QueryPlan) and plan.terms
    assert any(t.weight > 0 for t in plan.terms)
    for t in plan.terms:
        assert math.isfinite(t.weight), t
        assert t.value and t.value == t.value.strip()
        assert t.kind == "text"  # nothing is a file here
    assert isinstance(plan.describe(), str)


# Words without quotes, operators or colons: what a term's text may be in any position.
words = st.text(
    alphabet=st.characters(
        codec="utf-8",
        categories=("L", "N"),
        exclude_characters="\"'+-:",
    ),
    min_size=1,
    max_size=12,
)
# A text right after "weight:" may not start with a digit: "10:30 sunset" is text, not a
# weight (the grammar's rule), so such texts are generated unweighted only.
term_texts = (
    st.lists(words, min_size=1, max_size=4).map(" ".join).filter(lambda t: not t[0].isdecimal())
)
weights = st.one_of(
    st.just(1.0),
    st.floats(min_value=0.01, max_value=1000, allow_nan=False).map(lambda w: round(w, 3)),
)


@SETTINGS
@given(
    st.lists(
        st.tuples(st.sampled_from([1, -1]), weights, term_texts, st.booleans()),
        min_size=1,
        max_size=5,
    ).filter(lambda ts: any(sign > 0 for sign, *_ in ts))
)
def test_a_query_built_from_terms_parses_back_to_them(terms):
    parts = []
    for i, (sign, weight, text, quoted) in enumerate(terms):
        op = ("- " if sign < 0 else "+ ") if i else ("- " if sign < 0 else "")
        if quoted or weight != 1.0:
            body = f'"{weight:g}:{text}"' if weight != 1.0 else f'"{text}"'
        else:
            body = text
        parts.append(op + body)
    query = " ".join(parts)
    plan = parse_query(query, is_file=never_a_file)
    got = [(t.weight, t.value) for t in plan.terms]
    want = [(sign * float(f"{weight:g}"), text) for sign, weight, text, _ in terms]
    assert got == want, query
