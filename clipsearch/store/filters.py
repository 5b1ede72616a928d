"""Metadata filters for search: ``--where`` clauses parsed into an ``ItemFilter``.

Accepted clauses (one per ``--where``; every clause must hold, i.e. clauses are ANDed):

    path:GLOB        shell glob against the absolute path, as in ``find -path``: ``*`` matches
                     any characters including "/", ``?`` one character, ``[abc]``/``[!abc]``
                     a class, ``\\*`` a literal "*". Case-sensitive.
                     ``path:/archive/2023/*``: everything under /archive/2023.
                     ``path:*.png``: every PNG. A pattern without wildcards is a folder or
                     file prefix on a path-component boundary: ``path:/archive/2023``
                     matches /archive/2023/a.jpg but not /archive/2023-old/a.jpg.
                     A relative pattern is taken relative to the current folder, unless it
                     starts with a wildcard; ``~`` is expanded.
    kind:image|video (or kind:image,video)
    after:DATE       modified at or after DATE (inclusive)
    before:DATE      modified before DATE (exclusive): after:2023 before:2024 = all of 2023
                     DATE: 2023, 2023-06, 2023-06-30, 2023-06-30T14:00[:SS][+02:00|Z];
                     without a zone, local time.
    size>N, size>=N, size<N, size<=N, size=N     N: a number with an optional unit:
                     B, kB|k, MB|M, GB|G, TB|T (powers of 1000) or KiB, MiB, GiB, TiB
                     (powers of 1024); e.g. size>1MB, size<500k, size>=1.5GiB
    taken>DATE, taken>=DATE, taken<DATE, taken<=DATE, taken:DATE
                     when it was taken (EXIF / the video container, else its mtime). A
                     DATE is a period — a year, a month, a day, a minute, a second —
                     and the operators compare with it as a whole: taken>2023 is 2024 on,
                     taken<=2023-06 is up to the end of June, taken:2023-06-30 is that
                     day, taken>=2023 taken<2024 is all of 2023
    tag:NAME         carries the tag NAME (case-insensitive)
    text:PHRASE      the item's text (read by OCR, or its BLIP caption) contains PHRASE,
                     compared squashed: letters and digits only, case and spaces ignored
                     (store/texts.py), so ``text:happy birthday`` matches "HAPPY
                     BIRTHDAYANNA"

A filter that no item can satisfy (``after:2024 before:2023``) is valid and matches
nothing; a clause that cannot be parsed raises ``QueryError`` naming the clause. Dates
and sizes beyond what the catalog's 64-bit integers hold (``after:1000``, ``after:2263``,
``size>10000000TiB``) are valid too: they are past every stored value, so they match
everything or nothing (see `filter_sql.clamp_to_int64`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clipsearch.errors import QueryError
from clipsearch.media.scan import MEDIA_KINDS, MediaKind
from clipsearch.store.texts import squash

ACCEPTED_FORMS = (
    "path:GLOB (e.g. path:/archive/2023/*), kind:image|video, after:DATE, before:DATE "
    "(DATE like 2023, 2023-06, 2023-06-30 or 2023-06-30T14:00), taken>DATE / taken<DATE / "
    "taken:DATE (when it was taken), size>N / size<N (N like 500k, 1MB, 1.5GiB), "
    "root:PATH, tag:NAME, text:PHRASE"
)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(
    r"size\s*(?:(<=|>=|<|>|=)|:\s*(<=|>=|<|>|=)?)\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-z]*)", re.I
)
_MAX_SIZE_DIGITS = 100  # far past the 64-bit sizes a catalog holds (20 digits)
_KEYED = re.compile(r"([a-z]+)\s*:(.*)", re.I | re.S)
_YEAR = re.compile(r"[0-9]{4}")
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_TAKEN = re.compile(r"taken\s*(<=|>=|<|>|=|:)\s*(.*)", re.I | re.S)
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# the time part of an ISO date-time, by how precise it is: hour:minute, :second, .fraction
_TIME = re.compile(r"[T ]([0-9]{2}):([0-9]{2})(:[0-9]{2})?([.,][0-9]+)?(Z|[+-][0-9:]+)?", re.I)


@dataclass(frozen=True)
class ItemFilter:
    """Which items a search may return. Every set field must hold (AND).

    Ranges are stored as bounds; a contradictory pair (min > max) matches nothing.
    Build one with ``ItemFilter.parse`` or directly; combine two with ``a & b``.
    """

    paths: tuple[str, ...] = ()  # shell globs (path:...), each must match
    kinds: frozenset[MediaKind] | None = None  # allowed kinds; None = any, empty = none
    mtime_after_ns: int | None = None  # inclusive lower bound on mtime_ns
    mtime_before_ns: int | None = None  # exclusive upper bound on mtime_ns
    size_min: int | None = None  # inclusive, bytes
    size_max: int | None = None  # inclusive, bytes
    roots: tuple[str, ...] = ()  # root folders (root:...), each must match
    tags: tuple[str, ...] = ()  # lower-cased tags, each must be present
    texts: tuple[str, ...] = ()  # squashed phrases the item's text (OCR, caption) must contain
    taken_after_ns: int | None = None  # inclusive lower bound on the capture time
    taken_before_ns: int | None = None  # exclusive upper bound on the capture time

    def __post_init__(self) -> None:
        # Accept lists, sets or a single string where tuples/frozensets are expected, so
        # ItemFilter(kinds={"video"}) or ItemFilter(paths="/a/*") mean what they say.
        normalise = {"tags": str.lower, "texts": squash}
        for name in ("paths", "roots", "tags", "texts"):
            value = getattr(self, name)
            value = (value,) if isinstance(value, str) else tuple(value)
            if name in normalise:
                value = tuple(normalise[name](v) for v in value)
            object.__setattr__(self, name, value)
        if self.kinds is not None:
            kinds = (self.kinds,) if isinstance(self.kinds, str) else self.kinds
            object.__setattr__(self, "kinds", frozenset(kinds))

    @property
    def is_empty(self) -> bool:
        """True when the filter lets every item through."""
        return self == ItemFilter()

    @property
    def is_unsatisfiable(self) -> bool:
        """True when no item can match, whatever the catalog holds (cheap, no SQL)."""
        if self.kinds is not None and not self.kinds:
            return True
        if (
            self.mtime_after_ns is not None
            and self.mtime_before_ns is not None
            and self.mtime_after_ns >= self.mtime_before_ns
        ):
            return True
        if (
            self.taken_after_ns is not None
            and self.taken_before_ns is not None
            and self.taken_after_ns >= self.taken_before_ns
        ):
            return True
        if self.size_max is not None and self.size_max < 0:
            return True
        return (
            self.size_min is not None
            and self.size_max is not None
            and self.size_min > self.size_max
        )

    def __and__(self, other: ItemFilter) -> ItemFilter:
        """Both filters must hold (e.g. ``--where`` clauses plus a ``--kind`` option)."""
        if self.kinds is None:
            kinds = other.kinds
        elif other.kinds is None:
            kinds = self.kinds
        else:
            kinds = self.kinds & other.kinds
        return ItemFilter(
            paths=_unique(self.paths + other.paths),
            kinds=kinds,
            mtime_after_ns=_bound(max, self.mtime_after_ns, other.mtime_after_ns),
            mtime_before_ns=_bound(min, self.mtime_before_ns, other.mtime_before_ns),
            size_min=_bound(max, self.size_min, other.size_min),
            size_max=_bound(min, self.size_max, other.size_max),
            roots=_unique(self.roots + other.roots),
            tags=_unique(self.tags + other.tags),
            texts=_unique(self.texts + other.texts),
            taken_after_ns=_bound(max, self.taken_after_ns, other.taken_after_ns),
            taken_before_ns=_bound(min, self.taken_before_ns, other.taken_before_ns),
        )

    @classmethod
    def parse(cls, where: Sequence[str], *, cwd: Path | str | None = None) -> ItemFilter:
        """Parse ``--where`` clauses (see the module docstring). ``cwd`` resolves relative
        paths (default: the current folder). Raises QueryError naming the bad clause."""
        if isinstance(where, str):
            where = [where]
        base = Path(cwd) if cwd is not None else Path.cwd()
        flt = cls()
        for clause in where:
            flt = flt & _parse_clause(clause, base)
        return flt


def _parse_clause(clause: str, base: Path) -> ItemFilter:
    text = clause.strip()
    if not text:
        raise _bad(clause, "the clause is empty")
    if text[:4].lower() == "size":
        return _parse_size(clause, text)
    if text[:5].lower() == "taken":
        return _parse_taken(clause, text)
    m = _KEYED.fullmatch(text)
    if m is None:
        raise _bad(clause, "expected KEY:VALUE or size>N")
    key, value = m.group(1).lower(), m.group(2).strip()
    if not value:
        raise _bad(clause, f"{key}: needs a value")
    if key == "path":
        _check_glob(clause, value)
        return ItemFilter(paths=(_absolute_pattern(value, base),))
    if key == "kind":
        kinds = {k.strip().lower() for k in value.split(",") if k.strip()}
        unknown = kinds - set(MEDIA_KINDS)
        if unknown or not kinds:
            raise _bad(
                clause, f"unknown kind {', '.join(sorted(unknown)) or value!r}; use image or video"
            )
        return ItemFilter(kinds=frozenset(kinds))
    if key in ("after", "before"):
        ns = _parse_date(clause, value)
        return ItemFilter(mtime_after_ns=ns) if key == "after" else ItemFilter(mtime_before_ns=ns)
    if key == "root":
        return ItemFilter(roots=(os.path.normpath(base / os.path.expanduser(value)),))
    if key == "tag":
        return ItemFilter(tags=(value.lower(),))
    if key == "text":
        phrase = value[1:-1] if len(value) > 1 and value[0] == value[-1] in "\"'" else value
        if not squash(phrase):
            raise _bad(clause, "text: needs letters or digits to look for")
        return ItemFilter(texts=(phrase,))
    raise _bad(clause, f"unknown filter {key!r}")


def _parse_size(clause: str, text: str) -> ItemFilter:
    m = _SIZE.fullmatch(text)
    if m is None:
        raise _bad(clause, "expected size>N, size>=N, size<N, size<=N or size=N")
    op = m.group(1) or m.group(2) or "="
    number, unit = m.group(3), m.group(4).lower()
    if unit not in _UNITS:
        raise _bad(
            clause, f"unknown size unit {m.group(4)!r}; use B, kB, MB, GB, TB, KiB, MiB, GiB"
        )
    if len(number) > _MAX_SIZE_DIGITS:  # int() refuses thousands of digits; none are needed
        raise _bad(clause, f"the number has more than {_MAX_SIZE_DIGITS} digits")
    # Exact rational arithmetic: size>1.5k means size >= 1501 bytes, no float rounding.
    whole, _, frac = number.partition(".")
    scale = 10 ** len(frac)
    num = int(whole or "0") * scale + int(frac or "0")  # value = num / scale bytes·unit
    num *= _UNITS[unit]
    floor, ceil = num // scale, -(-num // scale)
    if op == ">":
        return ItemFilter(size_min=floor + 1)
    if op == ">=":
        return ItemFilter(size_min=ceil)
    if op == "<":
        return ItemFilter(size_max=ceil - 1)
    if op == "<=":
        return ItemFilter(size_max=floor)
    if num % scale:  # size=1.5 bytes: nothing has a fractional size
        return ItemFilter(size_min=ceil, size_max=floor)
    return ItemFilter(size_min=floor, size_max=floor)


def taken_bounds(op: str, value: str, *, clause: str | None = None) -> ItemFilter:
    """The filter for ``taken OP DATE`` (OP one of > >= < <= = :), DATE a period (module
    docstring). Raises QueryError naming ``clause`` (default: the comparison itself)."""
    start, end = _parse_period(clause or f"taken{op}{value}", value.strip())
    if op == ">":
        return ItemFilter(taken_after_ns=end)
    if op == ">=":
        return ItemFilter(taken_after_ns=start)
    if op == "<":
        return ItemFilter(taken_before_ns=start)
    if op == "<=":
        return ItemFilter(taken_before_ns=end)
    return ItemFilter(taken_after_ns=start, taken_before_ns=end)


def _parse_taken(clause: str, text: str) -> ItemFilter:
    m = _TAKEN.fullmatch(text)
    if m is None or not m.group(2).strip():
        raise _bad(
            clause, "expected taken>DATE, taken>=DATE, taken<DATE, taken<=DATE or taken:DATE"
        )
    return taken_bounds(m.group(1), m.group(2), clause=clause)


def _parse_period(clause: str, value: str) -> tuple[int, int]:
    """DATE -> the [start, end) of the period it names, in unix ns (naive: local time)."""
    try:
        if _YEAR.fullmatch(value):
            y = int(value)
            start, end = datetime(y, 1, 1), datetime(y + 1, 1, 1)
        elif m := _MONTH.fullmatch(value):
            y, mo = int(m.group(1)), int(m.group(2))
            start = datetime(y, mo, 1)
            end = datetime(y + mo // 12, mo % 12 + 1, 1)
        else:
            start = datetime.fromisoformat(value)
            end = start + _period_length(value)
        return _ns(start.timestamp()), _ns(end.timestamp())
    except (ValueError, OverflowError, OSError) as e:
        raise _bad(clause, f"{value!r} is not a date ({e})") from None


def _period_length(value: str) -> timedelta:
    """How long the period named by an ISO date or date-time is: a day, a minute, ..."""
    if _DAY.fullmatch(value):
        return timedelta(days=1)
    m = _TIME.search(value)
    if m is None:
        return timedelta(days=1)
    if m.group(4):
        return timedelta(microseconds=1)
    return timedelta(seconds=1) if m.group(3) else timedelta(minutes=1)


def _ns(seconds: float) -> int:
    return round(seconds * 1_000_000) * 1000


def _parse_date(clause: str, value: str) -> int:
    """DATE -> unix time in ns. Naive dates and times are local time.

    The result may lie outside the 64-bit range the catalog stores mtimes in (years
    before 1678 or after 2262): the SQL layer clamps such bounds, exactly."""
    try:
        if _YEAR.fullmatch(value):
            dt = datetime(int(value), 1, 1)
        elif m := _MONTH.fullmatch(value):
            dt = datetime(int(m.group(1)), int(m.group(2)), 1)
        else:
            dt = datetime.fromisoformat(value)
    except ValueError as e:
        raise _bad(clause, f"{value!r} is not a date ({e})") from None
    try:
        aware = dt if dt.tzinfo is not None else dt.astimezone()  # naive: local time
    except (OverflowError, OSError, ValueError):
        # The platform's local-time conversion cannot reach year 1 or 9999; a date that
        # far out is beyond every mtime the catalog can hold anyway.
        return -(2**64) if dt.year < 1970 else 2**64
    # Integer arithmetic: a float timestamp loses microseconds after 2106.
    return (aware - _EPOCH) // _MICROSECOND * 1000


def _check_glob(clause: str, pattern: str) -> None:
    if "\x00" in pattern:
        raise _bad(clause, "the pattern contains a NUL character")


def _absolute_pattern(pattern: str, base: Path) -> str:
    pattern = os.path.expanduser(pattern)
    if pattern.startswith(("/", "*", "?", "[")):
        return pattern
    return f"{str(base).rstrip('/')}/{pattern}"


def _bad(clause: str, why: str) -> QueryError:
    return QueryError(f"bad --where clause {clause!r}: {why}. Accepted forms: {ACCEPTED_FORMS}")


def _bound(pick, a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return pick(a, b)


def _unique(items: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))
