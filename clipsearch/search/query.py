"""Query parsing: a search string becomes a `QueryPlan`, a weighted sum of terms.

Grammar (the user's view: docs/index.md#searching)::

    query  := [sign] term (sign term)*
    sign   := "+" | "-"                 (standing alone, between spaces, or first)
    term   := quoted | words
    quoted := '"' [weight ":"] text '"'  |  "'" [weight ":"] text "'"
    weight := a number (2, 0.5, 1e-1); "10:30 sunset" is text, not a weight

A term whose text is an existing media file (image or video extension) is an example
query; everything else is text. The plan's vector is

    q = normalise(Σᵢ wᵢ · eᵢ)        eᵢ the L2-normalised embedding of term i,

with wᵢ negative for terms after "-". Example::

    '"2:golden retriever" + ./pool.jpg - "blurry"'
    -> text("golden retriever", 2) + image("./pool.jpg", 1) + text("blurry", -1)
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from clipsearch.errors import QueryError, QueryFileRefusedError
from clipsearch.media import kind_of

TermKind = Literal["text", "image", "video"]

_WEIGHT = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*:(?!\d)\s*(.*)$", re.S)


@dataclass(frozen=True)
class Term:
    """One weighted part of a query: a text, or a path to an example image/video."""

    kind: TermKind
    value: str
    weight: float = 1.0


@dataclass(frozen=True)
class QueryPlan:
    """What to encode and how to combine it: q = normalise(Σ weight · embedding)."""

    terms: tuple[Term, ...]

    @property
    def texts(self) -> list[Term]:
        return [t for t in self.terms if t.kind == "text"]

    def describe(self) -> str:
        """A short human-readable rendering, e.g. `2×"golden retriever" + image:pool.jpg`."""
        parts = []
        for i, t in enumerate(self.terms):
            sign = "-" if t.weight < 0 else ("+" if i else "")
            w = abs(t.weight)
            label = f'"{t.value}"' if t.kind == "text" else f"{t.kind}:{Path(t.value).name}"
            parts.append(f"{sign} {'' if w == 1 else f'{w:g}×'}{label}".strip())
        return " ".join(parts)


def _split(query: str) -> list[tuple[int, str, bool]]:
    """Split into (sign, raw text, was_quoted) at top-level standalone +/- operators."""
    out: list[tuple[int, str, bool]] = []
    sign, buf, i, n = 1, [], 0, len(query)

    def flush(quoted: bool = False) -> None:
        text = "".join(buf).strip()
        if text or quoted:
            out.append((sign, text, quoted))
        buf.clear()

    while i < n:
        c = query[i]
        if c in "\"'":
            end = query.find(c, i + 1)
            if end < 0:
                raise QueryError(f"unclosed quote {c} in query: {query!r}")
            if "".join(buf).strip():
                raise QueryError(
                    f"put + or - between terms: {''.join(buf).strip()!r} is followed by a quote"
                )
            buf.clear()
            buf.append(query[i + 1 : end])
            text = "".join(buf)
            buf.clear()
            out.append((sign, text, True))
            sign = 1
            i = end + 1
            # After a quoted term only spaces or an operator may follow.
            while i < n and query[i].isspace():
                i += 1
            if i < n and query[i] not in "+-":
                raise QueryError(f"put + or - after the quoted term {text!r}")
            continue
        standalone = (i == 0 or query[i - 1].isspace()) and (i + 1 == n or query[i + 1].isspace())
        if c in "+-" and (standalone or not "".join(buf).strip()):
            flush()
            sign = -1 if c == "-" else 1
            i += 1
            continue
        buf.append(c)
        i += 1
    flush()
    return out


def parse_query(
    query: str,
    *,
    is_file: Callable[[str], bool] = os.path.isfile,
    files: bool = True,
) -> QueryPlan:
    """Parse a query string into a plan. Raises QueryError on empty or malformed input.

    files: False reads every term as text, never as a path (a remote client's query must
        not open files on this machine); an unquoted term that looks like a media file's
        path (``/home/me/a.jpg``) then raises QueryFileRefusedError instead.
    """
    if not files:
        is_file = _never_a_file
    if not query or not query.strip():
        raise QueryError("the query is empty: give some text, --image or --video")
    terms: list[Term] = []
    for sign, raw, quoted in _split(query):
        weight = 1.0
        m = _WEIGHT.match(raw)
        if m:
            weight = float(m.group(1))
            if not math.isfinite(weight):
                raise QueryError(f"the weight {m.group(1)} in the query is too large: {query!r}")
            raw = m.group(2)
        value = raw.strip()
        if not value:
            raise QueryError(f"a term of the query is empty: {query!r}")
        expanded = os.path.expanduser(value)
        kind: TermKind = "text"
        media_kind = kind_of(Path(expanded))
        if media_kind is not None and is_file(expanded):
            kind = media_kind
            value = expanded
        elif not quoted and media_kind is not None and ("/" in value or "\\" in value):
            if not files:
                raise QueryFileRefusedError(
                    f"query files are not read by path here: {value}; give the image itself, "
                    "or put the text in quotes"
                )
            raise QueryError(f"query file not found: {value}")
        terms.append(Term(kind, value, sign * weight))
    if not terms:
        raise QueryError("the query is empty: give some text, --image or --video")
    if all(t.weight <= 0 for t in terms):
        raise QueryError("a query needs at least one positive term (only negatives were given)")
    return QueryPlan(tuple(terms))


def _never_a_file(_: str) -> bool:
    return False


def plan_from_parts(
    *,
    text: str | None = None,
    images: tuple[str, ...] = (),
    videos: tuple[str, ...] = (),
) -> QueryPlan:
    """Build a plan from separate options (``--image``, ``--video``, a query string)."""
    terms: list[Term] = []
    if text:
        terms.extend(parse_query(text).terms)
    for kind, paths in (("image", images), ("video", videos)):
        for p in paths:
            expanded = os.path.expanduser(str(p))
            if not os.path.isfile(expanded):
                raise QueryError(f"query {kind} not found: {p}")
            terms.append(Term(kind, expanded, 1.0))  # type: ignore[arg-type]
    if not terms:
        raise QueryError("the query is empty: give some text, --image or --video")
    return QueryPlan(tuple(terms))
