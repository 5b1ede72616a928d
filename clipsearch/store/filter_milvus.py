"""Translate an ``ItemFilter`` into a Milvus boolean expression on scalar fields.

The Milvus collection (`clipsearch.index.milvus_backend`) carries, per vector row, the
item's ``path``, ``kind``, ``size``, ``mtime_ns``, ``root`` (the root folder's path) and
``tags``; a filter becomes an expression over them, evaluated inside Milvus during the
search (no id list leaves the catalog).

Strings are double-quoted with ``\\`` and ``"`` escaped. A path glob becomes ``LIKE``
(``*`` → ``%``, ``?`` → ``_``, literal ``%``/``_``/``\\`` escaped with a backslash); a
pattern without wildcards is the folder or file itself or anything below it, as in SQL
(filter_sql.py). ``LIKE`` has no character classes, so a glob with ``[...]`` cannot be
expressed: `milvus_expression` returns None and the caller filters by catalog ids
instead. So do ``text:`` phrases and ``taken`` bounds: the text read in pictures and the
capture times live in the catalog only (a capture time is read, and may be read again,
after the item's vectors were written: a copy in the collection could go stale).
"""

from __future__ import annotations

from clipsearch.store.filter_sql import clamp_to_int64, glob_parts, unescape
from clipsearch.store.filters import ItemFilter


def milvus_expression(flt: ItemFilter) -> str | None:
    """The expression for ``flt`` ("" when it lets everything through), or None when it
    cannot be written in Milvus's expression language (a glob with a character class) or
    needs what only the catalog holds (a ``text:`` phrase, a ``taken`` bound).
    An unsatisfiable filter gives an expression that matches nothing. Date and size
    bounds beyond 64-bit integers (Milvus's INT64 fields, like the catalog's) are clamped
    exactly, as in SQL (`filter_sql.clamp_to_int64`)."""
    clamped = clamp_to_int64(flt)
    if clamped is None or clamped.is_unsatisfiable:
        return "id < 0"
    flt = clamped
    if flt.texts:  # text read in pictures lives in the catalog's full-text index only
        return None
    if flt.taken_after_ns is not None or flt.taken_before_ns is not None:
        return None  # capture times live in the catalog's capture_times table only
    conds: list[str] = []
    for pattern in flt.paths:
        cond = path_expression(pattern)
        if cond is None:
            return None
        conds.append(cond)
    if flt.kinds is not None:
        conds.append(f"kind in [{', '.join(quote(k) for k in sorted(flt.kinds))}]")
    if flt.mtime_after_ns is not None:
        conds.append(f"mtime_ns >= {int(flt.mtime_after_ns)}")
    if flt.mtime_before_ns is not None:
        conds.append(f"mtime_ns < {int(flt.mtime_before_ns)}")
    if flt.size_min is not None:
        conds.append(f"size >= {int(flt.size_min)}")
    if flt.size_max is not None:
        conds.append(f"size <= {int(flt.size_max)}")
    for root in flt.roots:
        conds.append(f"root == {quote(root)}")
    for tag in flt.tags:
        conds.append(f"array_contains(tags, {quote(tag)})")
    return " and ".join(f"({c})" for c in conds)


def path_expression(pattern: str) -> str | None:
    """Expression for one ``path:`` pattern (see filters.py), or None if LIKE cannot say it."""
    like, wildcard = _glob_to_like(pattern)
    if like is None:
        return None
    if wildcard:
        return f"path like {quote(like)}"
    literal = unescape(pattern).rstrip("/")
    if not literal:  # "/": every absolute path
        return f"path like {quote('/%')}"
    return f"path == {quote(literal)} or path like {quote(like_escape(literal) + '/%')}"


def quote(text: str) -> str:
    """A Milvus string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def like_escape(text: str) -> str:
    """Literal text -> a LIKE pattern matching exactly it."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _glob_to_like(pattern: str) -> tuple[str | None, bool]:
    """Shell glob -> (LIKE pattern or None when it has a character class, has wildcard)."""
    like = {"any": "%", "one": "_"}
    out: list[str] = []
    wildcard = False
    for part, text in glob_parts(pattern):
        if part == "class":
            return None, True
        wildcard = wildcard or part != "text"
        out.append(like_escape(text) if part == "text" else like[part])
    return "".join(out), wildcard
