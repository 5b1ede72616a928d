"""ItemFilter -> Milvus expression: the text of the translation (its meaning is checked
against SQLite on real Milvus Lite in tests/integration/test_milvus.py)."""

from __future__ import annotations

from clipsearch.store.filter_milvus import like_escape, milvus_expression, quote
from clipsearch.store.filters import ItemFilter


def test_strings_are_quoted_and_escaped():
    assert quote('a"b\\c') == '"a\\"b\\\\c"'
    assert like_escape("50%_off\\x") == "50\\%\\_off\\\\x"


def test_every_clause_kind_becomes_a_condition():
    flt = ItemFilter(
        paths=("/photos/*.jpg",),
        kinds=frozenset({"video", "image"}),
        mtime_after_ns=10,
        mtime_before_ns=20,
        size_min=1,
        size_max=99,
        roots=("/photos",),
        tags=("Beach",),
    )
    assert milvus_expression(flt) == (
        '(path like "/photos/%.jpg") and (kind in ["image", "video"]) and (mtime_ns >= 10) '
        'and (mtime_ns < 20) and (size >= 1) and (size <= 99) and (root == "/photos") '
        'and (array_contains(tags, "beach"))'
    )


def test_prefix_without_wildcards_is_the_folder_or_below_it():
    assert milvus_expression(ItemFilter(paths=("/a_b/",))) == (
        '(path == "/a_b" or path like "/a\\\\_b/%")'
    )


def test_empty_unsatisfiable_and_inexpressible_filters():
    assert milvus_expression(ItemFilter()) == ""
    assert milvus_expression(ItemFilter(size_min=5, size_max=4)) == "id < 0"
    assert milvus_expression(ItemFilter(paths=("/a/[xy]*.jpg",))) is None
    # An unclosed "[" is a literal, as in the shell: still expressible.
    assert milvus_expression(ItemFilter(paths=("/a/[x*",))) == '(path like "/a/[x%")'


def test_bounds_beyond_int64_are_clamped_not_written():
    """Milvus's INT64 fields cannot compare with a larger literal (the query fails), and
    no stored size or mtime lies beyond them: such a bound keeps everything or nothing."""
    assert milvus_expression(ItemFilter.parse(["after:2263"])) == "id < 0"
    assert milvus_expression(ItemFilter.parse(["size>=9223372036854775808"])) == "id < 0"
    assert milvus_expression(ItemFilter.parse(["after:1000", "kind:image"])) == (
        '(kind in ["image"])'
    )
    assert milvus_expression(ItemFilter.parse(["size<99999999999999999999999999"])) == ""


def test_text_phrases_are_left_to_the_catalog():
    """The text read in pictures is not in the collection: a filter with text: must not
    become an expression that silently drops it (the caller filters by catalog ids)."""
    assert milvus_expression(ItemFilter.parse(["text:pizza", "kind:image"])) is None


def test_capture_time_bounds_are_left_to_the_catalog():
    """Capture times live in the catalog (read again for older items after their vectors
    were written): a taken bound must not become an expression, nor be dropped."""
    assert milvus_expression(ItemFilter.parse(["taken>2021", "kind:image"])) is None
    assert milvus_expression(ItemFilter.parse(["taken<2021-06-30"])) is None
    # A bound past the catalog's integers still matches nothing, without the catalog.
    assert milvus_expression(ItemFilter.parse(["taken>=2263"])) == "id < 0"
