"""Translate an ``ItemFilter`` into a parameterised SQL condition on ``items AS i``.

User text only ever travels as bound parameters; the SQL text is built from constant
fragments. Path globs become SQLite ``GLOB`` patterns (case-sensitive, ``*`` matches
"/", like ``find -path``); a literal prefix such as ``/archive/2023/*`` lets SQLite
range-scan the unique index on ``items.path`` instead of scanning every item.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Literal

from clipsearch.store.capture_times import TAKEN_SQL
from clipsearch.store.filters import ItemFilter

_GLOB_SPECIAL = "*?["
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # SQLite INTEGER: what mtime_ns and size hold


def filter_condition(flt: ItemFilter) -> tuple[str, list[object]] | None:
    """SQL boolean expression over ``items AS i`` and its parameters, or None when the
    filter can match nothing (the caller returns an empty result without querying)."""
    clamped = clamp_to_int64(flt)
    if clamped is None or clamped.is_unsatisfiable:
        return None
    flt = clamped
    conds: list[str] = []
    params: list[object] = []
    for pattern in flt.paths:
        sql, args = path_condition(pattern)
        conds.append(sql)
        params.extend(args)
    if flt.kinds is not None:
        kinds = sorted(flt.kinds)
        conds.append(f"i.kind IN ({', '.join('?' * len(kinds))})")
        params.extend(kinds)
    if flt.mtime_after_ns is not None:
        conds.append("i.mtime_ns >= ?")
        params.append(flt.mtime_after_ns)
    if flt.mtime_before_ns is not None:
        conds.append("i.mtime_ns < ?")
        params.append(flt.mtime_before_ns)
    if flt.taken_after_ns is not None:
        conds.append(f"{TAKEN_SQL} >= ?")
        params.append(flt.taken_after_ns)
    if flt.taken_before_ns is not None:
        conds.append(f"{TAKEN_SQL} < ?")
        params.append(flt.taken_before_ns)
    if flt.size_min is not None:
        conds.append("i.size >= ?")
        params.append(flt.size_min)
    if flt.size_max is not None:
        conds.append("i.size <= ?")
        params.append(flt.size_max)
    for root in flt.roots:
        conds.append("i.root_id IN (SELECT r.id FROM roots r WHERE r.path = ?)")
        params.append(root)
    for tag in flt.tags:
        conds.append("EXISTS (SELECT 1 FROM tags g WHERE g.tag = ? AND g.item_id = i.id)")
        params.append(tag)
    for phrase in flt.texts:  # squashed: letters and digits only, so no LIKE wildcards
        conds.append("i.id IN (SELECT x.item_id FROM texts x WHERE x.body LIKE ?)")
        params.append(f"%{phrase}%")
    return (" AND ".join(conds) or "1", params)


def clamp_to_int64(flt: ItemFilter) -> ItemFilter | None:
    """The same filter with its time and size bounds inside SQLite's 64-bit integers
    (which cannot bind a larger Python int), or None when it can match nothing.

    Exact, not an approximation: every stored mtime_ns and size is an int64, so a lower
    bound above INT64_MAX excludes everything and one below INT64_MIN excludes nothing
    (likewise for upper bounds). ``after:1000`` or ``size<10000000TiB`` thus match everything,
    ``after:2263`` (past the last instant an int64 of nanoseconds holds) nothing."""
    changes: dict[str, int | None] = {}
    for name in ("mtime_after_ns", "taken_after_ns", "size_min"):  # inclusive lower bounds
        value = getattr(flt, name)
        if value is not None and value > INT64_MAX:
            return None
        if value is not None and value < INT64_MIN:
            changes[name] = None
    uppers = (("mtime_before_ns", True), ("taken_before_ns", True), ("size_max", False))
    for name, exclusive in uppers:
        value = getattr(flt, name)
        if value is None:
            continue
        if value < INT64_MIN or (exclusive and value == INT64_MIN):
            return None
        if value > INT64_MAX or (not exclusive and value == INT64_MAX):
            changes[name] = None
    return dataclasses.replace(flt, **changes) if changes else flt


def path_condition(pattern: str) -> tuple[str, list[object]]:
    """Condition for one ``path:`` pattern (see filters.py for its meaning)."""
    glob, has_wildcard = shell_to_glob(pattern)
    if has_wildcard:
        return "i.path GLOB ?", [glob]
    literal = unescape(pattern)
    stripped = literal.rstrip("/")
    if not stripped:  # "/" itself: every absolute path
        return "i.path GLOB ?", ["/*"]
    # The folder (or file) itself, or anything below it on a component boundary.
    return "(i.path = ? OR i.path GLOB ?)", [stripped, glob_escape(stripped) + "/*"]


def shell_to_glob(pattern: str) -> tuple[str, bool]:
    """Shell glob -> SQLite GLOB pattern, and whether it has any wildcard.

    ``\\c`` is a literal c; ``[!...]`` becomes ``[^...]``; an unclosed ``[`` is a literal
    "[" (as in bash and Python's fnmatch)."""
    out: list[str] = []
    wildcard = False
    for part, text in glob_parts(pattern):
        if part == "text":
            out.append(glob_escape(text))
            continue
        wildcard = True
        if part == "class":
            out.append("[^" + text[1:] + "]" if text.startswith("!") else f"[{text}]")
        else:
            out.append(text)
    return "".join(out), wildcard


GlobPart = Literal["text", "any", "one", "class"]


def glob_parts(pattern: str) -> Iterator[tuple[GlobPart, str]]:
    """The parts of a shell glob, in order: ("text", c) for one literal character (``\\c``,
    or a "[" that no "]" closes), ("any", "*"), ("one", "?"), and ("class", body) for
    ``[body]`` (body as written, a leading ``!`` included). The one reading of ``path:``
    patterns that every filter translation (SQLite GLOB, Milvus LIKE) starts from."""
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            yield "text", pattern[i + 1]
            i += 1
        elif c == "*":
            yield "any", c
        elif c == "?":
            yield "one", c
        elif c == "[" and (end := class_end(pattern, i)) >= 0:
            yield "class", pattern[i + 1 : end]
            i = end
        else:
            yield "text", c
        i += 1


def class_end(pattern: str, start: int) -> int:
    """Index of the "]" closing the class opened at ``start``, or -1. A "]" right after
    "[" or "[!" belongs to the class."""
    j = start + 1
    if j < len(pattern) and pattern[j] in "!^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    end = pattern.find("]", j)
    return end


def unescape(pattern: str) -> str:
    """Drop shell backslash escapes: ``a\\*b`` -> ``a*b``."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            i += 1
        out.append(pattern[i])
        i += 1
    return "".join(out)


def glob_escape(text: str) -> str:
    """Literal text -> a GLOB pattern matching exactly it (SQLite GLOB has no escape
    character; a special character is wrapped in a one-character class)."""
    return "".join(f"[{c}]" if c in _GLOB_SPECIAL else c for c in text)
