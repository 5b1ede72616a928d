"""The query grammar (docs/index.md#searching) as rules that hold for any query, plus the
cases a user types that the rules single out: operators stuck to quotes and words, paths in
quotes, zero weights, ``--video`` parts, the rendering of a plan, and the error wording."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clipsearch.errors import QueryError, QueryFileRefusedError
from clipsearch.search.query import QueryPlan, Term, parse_query, plan_from_parts

PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None)


def never_a_file(_: str) -> bool:
    return False


# -- rules for any query built from terms ---------------------------------------------------
# A word: letters and digits (hyphens inside are text, see below), never a digit first so
# that "W:word" cannot read as a time such as "10:30".
word = st.text(alphabet="abcdefghijklmnopqrstuvwxyzé0123456789", min_size=1, max_size=6).filter(
    lambda w: not w[0].isdigit()
)
words = st.lists(word, min_size=1, max_size=3).map(" ".join)
space = st.sampled_from([" ", "  ", "\t", " \n "])
weight = st.sampled_from([1.0, 2.0, 0.5, 0.25, 3.0, 10.0, 0.1])


@st.composite
def queries(draw):
    """(query text, expected (weight, text) pairs): each term quoted or bare, with or
    without a weight, joined by + and - written standalone or against a quote."""
    n = draw(st.integers(1, 4))
    text_parts, want = [], []
    for i in range(n):
        sign = draw(st.sampled_from([1, -1])) if i else draw(st.sampled_from([1, 1, -1]))
        text, w = draw(words), draw(weight)
        quote = draw(st.sampled_from(['"', "'"]))
        quoted = w != 1.0 or draw(st.booleans())
        body = (
            f"{quote}{w:g}:{text}{quote}"
            if w != 1.0
            else (f"{quote}{text}{quote}" if quoted else text)
        )
        op = "-" if sign < 0 else "+"
        if i == 0:
            prefix = (
                ""
                if sign > 0 and draw(st.booleans())
                else op + (draw(space) if not quoted or draw(st.booleans()) else "")
            )
        elif quoted and draw(st.booleans()):
            prefix = draw(space) + op  # against the quote: cat -"dog"
        else:
            prefix = draw(space) + op + draw(space)
        text_parts.append(prefix + body)
        want.append((sign * w, text))
    return "".join(text_parts), want


@PROPERTY
@given(queries())
def test_a_query_reads_as_the_terms_it_was_written_with(case):
    query, want = case
    if all(w <= 0 for w, _ in want):
        with pytest.raises(QueryError, match="at least one positive term"):
            parse_query(query, is_file=never_a_file)
        return
    plan = parse_query(query, is_file=never_a_file)
    assert [(t.weight, t.value) for t in plan.terms] == want, query
    assert all(t.kind == "text" for t in plan.terms)
    assert plan.texts == list(plan.terms)


@PROPERTY
@given(st.lists(word, min_size=2, max_size=4), st.sampled_from(["-", "+"]))
def test_a_sign_inside_or_against_a_word_is_text(parts, sign):
    """t-shirt, well-known, beach -crowded, C++: a sign that is not standalone and not
    against a quote is part of the words, never an operator."""
    joined = sign.join(parts)  # t-shirt
    stuck = f"{parts[0]} {sign}{' '.join(parts[1:])}"  # beach -crowded
    trailing = f"{' '.join(parts)}{sign}"  # c+
    for query in (joined, stuck, trailing):
        assert parse_query(query, is_file=never_a_file).terms == (Term("text", query, 1.0),)


@PROPERTY
@given(words, st.floats(0.01, 100).map(lambda w: round(w, 2)), st.sampled_from(["", " "]))
def test_a_leading_number_and_colon_is_the_weight(text, w, pad):
    plan = parse_query(f'"{w!r}:{pad}{text}"', is_file=never_a_file)
    assert plan.terms == (Term("text", text, w),)


@PROPERTY
@given(st.integers(0, 23), st.integers(0, 59), words)
def test_a_time_of_day_is_text_not_a_weight(h, m, text):
    query = f"{h}:{m:02d} {text}"
    for q in (query, f'"{query}"'):
        assert parse_query(q, is_file=never_a_file).terms == (Term("text", query, 1.0),)


# -- the cases the rules single out ---------------------------------------------------------
@pytest.mark.parametrize(
    ("query", "terms"),
    [
        ('cat -"dog"', [("cat", 1.0), ("dog", -1.0)]),
        ("cat -'dog'", [("cat", 1.0), ("dog", -1.0)]),
        ('"cat" -"dog"', [("cat", 1.0), ("dog", -1.0)]),
        ('cat +"2:dog"', [("cat", 1.0), ("dog", 2.0)]),
        ('"a"-"b"', [("a", 1.0), ("b", -1.0)]),
        ('"a"+"b"', [("a", 1.0), ("b", 1.0)]),
        ('"a" - "b"', [("a", 1.0), ("b", -1.0)]),
        ('"a" +  "b"', [("a", 1.0), ("b", 1.0)]),
        ("+cat", [("cat", 1.0)]),
        ("+ cat - dog", [("cat", 1.0), ("dog", -1.0)]),
        ("beach -crowded", [("beach -crowded", 1.0)]),
        ("beach - crowded", [("beach", 1.0), ("crowded", -1.0)]),
        ("a -", [("a", 1.0)]),
        (
            '"0.5:snow" + "2:mountain" - "0.25:fog"',
            [("snow", 0.5), ("mountain", 2.0), ("fog", -0.25)],
        ),
        ('"1e-1:haze" + sky', [("haze", 0.1), ("sky", 1.0)]),
        ("'it is 10:30'", [("it is 10:30", 1.0)]),
        ("  -cat + dog", [("cat", -1.0), ("dog", 1.0)]),  # spaces before a leading sign
        ("a- b", [("a- b", 1.0)]),  # a sign stuck to the word before it is text
        ("X-ray +Xmas", [("X-ray +Xmas", 1.0)]),
    ],
)
def test_operators_against_quotes_and_words(query, terms):
    plan = parse_query(query, is_file=never_a_file)
    assert [(t.value, t.weight) for t in plan.terms] == terms


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("", "the query is empty: give some text, --image or --video"),
        (" \t ", "the query is empty: give some text, --image or --video"),
        ("+", "the query is empty: give some text, --image or --video"),
        ('"unclosed', "unclosed quote \" in query: '\"unclosed'"),
        ("'unclosed", "unclosed quote ' in query"),
        ('"" + "x"', 'a term of the query is empty: \'"" + "x"\''),
        ('"" + cat', "a term of the query is empty"),
        ('"2:" + cat', "a term of the query is empty"),
        ('"0:cat"', "a query needs at least one positive term (only negatives were given)"),
        ('"0:cat" + "0:dog"', "a query needs at least one positive term"),
        ('- "blurry"', "a query needs at least one positive term"),
        ('-"blurry"', "a query needs at least one positive term"),
        ("-cat", "a query needs at least one positive term"),
        ('cat -"', 'unclosed quote " in query'),  # the sign is read, then the quote
    ],
)
def test_malformed_queries_are_refused_with_what_to_fix(query, words):
    with pytest.raises(QueryError) as e:
        parse_query(query, is_file=never_a_file)
    assert words in str(e.value)


@pytest.mark.parametrize(
    ("query", "terms", "phrases"),
    [
        # quotes inside a term: one model term, the quoted words a required phrase
        ('"a" "b"', [("a b", 1.0)], ("a", "b")),
        ('"a"X', [("a X", 1.0)], ("a",)),
        ('cat "dog"', [("cat dog", 1.0)], ("dog",)),
        # a sign against the quote splits the term instead: nothing is required
        ('cat -"dog"', [("cat", 1.0), ("dog", -1.0)], ()),
        ('cat +"dog"', [("cat", 1.0), ("dog", 1.0)], ("dog",)),
        ('cake "happy day" -"blurry"', [("cake happy day", 1.0), ("blurry", -1.0)], ("happy day",)),
    ],
)
def test_quotes_inside_a_term_and_signs_against_quotes(query, terms, phrases):
    plan = parse_query(query, is_file=never_a_file)
    assert [(t.value, t.weight) for t in plan.terms] == terms
    assert plan.phrases == phrases


def test_a_quoted_path_like_string_that_is_no_file_stays_text(tmp_path):
    assert parse_query('"./notes/a.jpg"').terms == (Term("text", "./notes/a.jpg", 1.0),)
    assert parse_query("'C:\\notes\\a.jpg'").terms[0].kind == "text"
    # Unquoted, a path to a missing media file is a mistake to report, not words.
    with pytest.raises(QueryError, match=r"query file not found: \./notes/a\.jpg"):
        parse_query("./notes/a.jpg")
    with pytest.raises(QueryError, match=r"query file not found: notes\\a\.jpg"):
        parse_query("notes\\a.jpg")
    # Quoted or not, an existing file is an example of that file.
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x")
    for q in (str(clip), f'"{clip}"', f"sunset + {clip}"):
        assert Term("video", str(clip), 1.0) in parse_query(q).terms
    # A file that is no media file stays text.
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    assert parse_query(str(notes)).terms == (Term("text", str(notes), 1.0),)


def test_a_home_relative_query_file_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "pool.jpg").write_bytes(b"x")
    assert parse_query("~/pool.jpg").terms == (Term("image", str(tmp_path / "pool.jpg"), 1.0),)
    plan = plan_from_parts(images=("~/pool.jpg",))
    assert plan.terms == (Term("image", str(tmp_path / "pool.jpg"), 1.0),)


def test_a_remote_query_never_reads_a_path(tmp_path):
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"x")
    with pytest.raises(QueryFileRefusedError) as e:
        parse_query(f"sunset + {photo}", files=False)
    assert f"query files are not read by path here: {photo}" in str(e.value)
    assert "give the image itself, or put the text in quotes" in str(e.value)
    assert parse_query(f"'{photo}'", files=False).terms == (Term("text", str(photo), 1.0),)


def test_video_and_image_parts_with_text(tmp_path):
    clip, pool = tmp_path / "clip.mp4", tmp_path / "pool.png"
    clip.write_bytes(b"x")
    pool.write_bytes(b"x")
    plan = plan_from_parts(text='"2:red" - car', images=(str(pool),), videos=(str(clip),))
    assert plan.terms == (
        Term("text", "red", 2.0),
        Term("text", "car", -1.0),
        Term("image", str(pool), 1.0),
        Term("video", str(clip), 1.0),
    )
    assert plan_from_parts(videos=(clip,)).terms == (Term("video", str(clip), 1.0),)
    with pytest.raises(QueryError) as e:
        plan_from_parts(videos=(str(tmp_path / "gone.mp4"),))
    assert str(e.value) == f"query video not found: {tmp_path / 'gone.mp4'}"
    with pytest.raises(QueryError) as e:
        plan_from_parts(images=(str(tmp_path / "gone.png"),))
    assert str(e.value) == f"query image not found: {tmp_path / 'gone.png'}"
    with pytest.raises(QueryError) as e:
        plan_from_parts(text="")
    assert str(e.value) == "the query is empty: give some text, --image or --video"


@pytest.mark.parametrize(
    ("terms", "rendered"),
    [
        ([Term("text", "golden retriever", 2.0)], '2×"golden retriever"'),
        ([Term("text", "a", 1.0), Term("text", "b", 1.0)], '"a" + "b"'),
        (
            [
                Term("text", "dog", 1.0),
                Term("image", "/x/pool.jpg", 0.5),
                Term("text", "fog", -1.0),
            ],
            '"dog" + 0.5×image:pool.jpg - "fog"',
        ),
        (
            [Term("text", "fog", -2.5), Term("video", "/v/clip.mp4", 1.0)],
            '- 2.5×"fog" + video:clip.mp4',
        ),
        ([Term("text", "a", 1.0), Term("text", "b", 0.0)], '"a" + 0×"b"'),  # zero: no sign
    ],
)
def test_describe_renders_signs_weights_and_file_names(terms, rendered):
    assert QueryPlan(tuple(terms)).describe() == rendered


def test_describe_of_a_parsed_query():
    plan = parse_query('"2:golden retriever" + beach - "0.5:blurry"', is_file=never_a_file)
    assert plan.describe() == '2×"golden retriever" + "beach" - 0.5×"blurry"'
