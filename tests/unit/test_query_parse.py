"""Query grammar: what a user types becomes the right weighted terms."""

import pytest

from clipsearch.errors import QueryError
from clipsearch.search.query import Term, parse_query, plan_from_parts


def test_plain_text_is_one_term():
    plan = parse_query("a dog on a beach")
    assert plan.terms == (Term("text", "a dog on a beach", 1.0),)


def test_hyphenated_words_stay_text():
    assert parse_query("a t-shirt with well-known logo").terms == (
        Term("text", "a t-shirt with well-known logo", 1.0),
    )


def test_weighted_negative_and_image_terms(tmp_path):
    img = tmp_path / "pool.jpg"
    img.write_bytes(b"x")
    plan = parse_query(f'"2:golden retriever" + {img} - "blurry"')
    assert plan.terms == (
        Term("text", "golden retriever", 2.0),
        Term("image", str(img), 1.0),
        Term("text", "blurry", -1.0),
    )


def test_time_like_text_is_not_a_weight():
    assert parse_query('"10:30 sunset"').terms == (Term("text", "10:30 sunset", 1.0),)


def test_fractional_weight_and_leading_minus_needs_positive():
    plan = parse_query('"0.5:snow" + "mountain"')
    assert plan.terms[0] == Term("text", "snow", 0.5)
    with pytest.raises(QueryError, match="positive"):
        parse_query('- "blurry"')


def test_unquoted_words_between_operators(tmp_path):
    plan = parse_query("red car - night")
    assert plan.terms == (Term("text", "red car", 1.0), Term("text", "night", -1.0))


@pytest.mark.parametrize("bad", ["", "   ", '"unclosed', '"" + "x"', "'a + b"])
def test_malformed_queries_raise(bad):
    with pytest.raises(QueryError):
        parse_query(bad)


def test_missing_query_file_with_path_is_an_error():
    with pytest.raises(QueryError, match="not found"):
        parse_query("./does/not/exist.jpg")


def test_filename_without_path_is_text_when_missing():
    # "sunset.jpg" that does not exist is just words, not a missing file.
    assert parse_query("sunset.jpg").terms[0].kind == "text"


def test_plan_from_parts(tmp_path):
    img = tmp_path / "a.png"
    img.write_bytes(b"x")
    plan = plan_from_parts(text="in red", images=(str(img),))
    assert [t.kind for t in plan.terms] == ["text", "image"]
    with pytest.raises(QueryError, match="not found"):
        plan_from_parts(images=(str(tmp_path / "nope.png"),))
    with pytest.raises(QueryError, match="empty"):
        plan_from_parts()


def test_a_plan_of_example_files_only_has_no_phrases(tmp_path):
    img = tmp_path / "a.png"
    img.write_bytes(b"not really a png")
    plan = plan_from_parts(images=(str(img),))
    assert plan.phrases == () and plan.terms == (Term("image", str(img), 1.0),)


# -- quoted phrases: what a picture's text must contain (docs/ocr.md) -------------------------
def test_a_quoted_term_is_also_a_phrase():
    plan = parse_query('"happy birthday"')
    assert plan.terms == (Term("text", "happy birthday", 1.0),)
    assert plan.phrases == ("happy birthday",)


def test_quotes_inside_free_text_mark_phrases_and_the_model_reads_it_all():
    plan = parse_query('birthday cake "happy birthday" - blurry')
    assert plan.terms == (
        Term("text", "birthday cake happy birthday", 1.0),
        Term("text", "blurry", -1.0),
    )
    assert plan.phrases == ("happy birthday",)
    plan = parse_query('"happy birthday" "anna" cake')
    assert plan.terms == (Term("text", "happy birthday anna cake", 1.0),)
    assert plan.phrases == ("happy birthday", "anna")


def test_weighted_and_negative_quoted_terms_are_model_terms_only():
    plan = parse_query('"2:golden retriever" + "dog" - "blurry"')
    assert plan.phrases == ("dog",)
    assert [t.weight for t in plan.terms] == [2.0, 1.0, -1.0]
    assert parse_query('red - "watermark"').phrases == ()


def test_queries_without_quotes_have_no_phrases():
    assert parse_query("a dog on a beach").phrases == ()
    assert parse_query("red car - night").phrases == ()


def test_an_apostrophe_inside_a_word_is_not_a_quote():
    plan = parse_query("dog's toy")
    assert plan.terms == (Term("text", "dog's toy", 1.0),)
    assert plan.phrases == ()
    assert parse_query("'sunset' + beach").terms[0] == Term("text", "sunset", 1.0)


def test_plan_from_parts_keeps_the_phrases(tmp_path):
    img = tmp_path / "a.png"
    img.write_bytes(b"x")
    assert plan_from_parts(text='cake "happy"', images=(str(img),)).phrases == ("happy",)


def test_a_nul_character_is_text_never_a_crash():
    # "~\x00" once reached expanduser("~<NUL>"), which raises ValueError (embedded null byte)
    plan = parse_query("~\x00")
    assert [(t.kind, t.value) for t in plan.terms] == [("text", "~\x00")]
    with pytest.raises(QueryError, match="not found"):
        parse_query("~\x00/a.jpg")


def test_an_apostrophe_inside_a_word_is_no_quote():
    # French elision at the start of the query: the apostrophe follows a letter
    assert parse_query("l'eau.").terms == (Term("text", "l'eau.", 1.0),)
    assert parse_query("l'eau claire").terms == (Term("text", "l'eau claire", 1.0),)
    with pytest.raises(QueryError, match="""unclosed quote " in query: 'cat -"'"""):
        parse_query('cat -"')
