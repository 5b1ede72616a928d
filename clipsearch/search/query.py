"""Query parsing: a search string becomes a `QueryPlan`, a weighted sum of terms.

Grammar (the user's view: docs/index.md#searching)::

    query  := [sign] term (sign term)*
    sign   := "+" | "-"                 (standing alone, between spaces, first, or before a quote)
    term   := quoted | (words | quoted)+
    quoted := '"' [weight ":"] text '"'  |  "'" [weight ":"] text "'"
    weight := a number (2, 0.5, 1e-1); "10:30 sunset" is text, not a weight

A single quote inside a word (``dog's toy``) is an apostrophe, not a quote.

Quoted text is also a *phrase* (`QueryPlan.phrases`): the words a picture's text (OCR)
must contain when the search requires phrases (`clipsearch.Library.search`). Phrases come
from quotes inside a term (``birthday cake "happy birthday"``: the model reads the whole
term, quotes removed) and from a positive text term that is entirely quoted and carries no
weight (``"happy birthday"``). A weighted term (``"2:golden retriever"``) and a term after
"-" are model terms only.

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
    """What to encode and how to combine it: q = normalise(Σ weight · embedding).

    phrases: the quoted text of the positive text terms (module docstring), in order.
    """

    terms: tuple[Term, ...]
    phrases: tuple[str, ...] = ()

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


@dataclass
class _RawTerm:
    """A term as split: its sign, its pieces of text (quoted or not), in order."""

    sign: int
    pieces: list[tuple[str, bool]]  # (text, quoted)

    @property
    def whole_quote(self) -> bool:
        """The term is one quoted span and nothing else (the original quoted form)."""
        return len(self.pieces) == 1 and self.pieces[0][1]

    @property
    def text(self) -> str:
        if self.whole_quote:
            return self.pieces[0][0]
        return " ".join(" ".join(p.split()) for p, _ in self.pieces if p.strip())

    @property
    def quoted(self) -> list[str]:
        return [p for p, q in self.pieces if q]


def _split(query: str) -> list[_RawTerm]:
    """Split into terms at top-level standalone +/- operators."""
    out: list[_RawTerm] = []
    sign, buf, pieces, i, n = 1, [], [], 0, len(query)

    def flush_words() -> None:
        if "".join(buf).strip():
            pieces.append(("".join(buf), False))
        buf.clear()

    def flush_term() -> None:
        nonlocal sign
        flush_words()
        if pieces:
            out.append(_RawTerm(sign, list(pieces)))
        pieces.clear()
        sign = 1

    while i < n:
        c = query[i]
        apostrophe = c == "'" and i > 0 and query[i - 1].isalnum()
        if c in "\"'" and not apostrophe:
            end = query.find(c, i + 1)
            if end < 0:
                raise QueryError(f"unclosed quote {c} in query: {query!r}")
            flush_words()
            pieces.append((query[i + 1 : end], True))
            i = end + 1
            continue
        standalone = (i == 0 or query[i - 1].isspace()) and (i + 1 == n or query[i + 1].isspace())
        before_quote = i + 1 < n and query[i + 1] in "\"'"  # cat -"dog": no word is cut
        if c in "+-" and (standalone or before_quote or not ("".join(buf).strip() or pieces)):
            flush_term()
            sign = -1 if c == "-" else 1
            i += 1
            continue
        buf.append(c)
        i += 1
    flush_term()
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
    phrases: list[str] = []
    for part in _split(query):
        sign, raw, quoted = part.sign, part.text, part.whole_quote
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
        # a NUL never names a file (and expanduser refuses it for "~user" forms)
        expanded = value if "\x00" in value else os.path.expanduser(value)
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
        if kind == "text" and sign > 0 and not (quoted and m):
            phrases.extend(" ".join(p.split()) for p in part.quoted if p.strip())
    if not terms:
        raise QueryError("the query is empty: give some text, --image or --video")
    if all(t.weight <= 0 for t in terms):
        raise QueryError("a query needs at least one positive term (only negatives were given)")
    return QueryPlan(tuple(terms), tuple(dict.fromkeys(phrases)))


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
    phrases: tuple[str, ...] = ()
    if text:
        parsed = parse_query(text)
        terms.extend(parsed.terms)
        phrases = parsed.phrases
    for kind, paths in (("image", images), ("video", videos)):
        for p in paths:
            expanded = os.path.expanduser(str(p))
            if not os.path.isfile(expanded):
                raise QueryError(f"query {kind} not found: {p}")
            terms.append(Term(kind, expanded, 1.0))  # type: ignore[arg-type]
    if not terms:
        raise QueryError("the query is empty: give some text, --image or --video")
    return QueryPlan(tuple(terms), phrases)
