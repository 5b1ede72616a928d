"""Text of items (read by OCR, written by a captioner), full-text indexed: writing it, finding items by it, coverage.

Every text is stored twice: as read (``texts.text``, for display) and *squashed*
(``texts.body``: letters and digits only, case-folded, accents dropped, no spaces), which
FTS5's trigram tokenizer indexes (schema: ``m003_item_texts``). Matching works on squashed
strings, so it does not care where the reader put spaces or line breaks:

    "HAPPY BIRTHDAYANNA"  -> "happybirthdayanna"  contains "birthday", "anna",
                                                   and the phrase "happybirthday"
    "Fresh\\nStrawberries" -> "freshstrawberries"  contains "strawberries"

The price is substring matching: "art" is found in "party". A query word shorter than
three characters cannot use the trigram index and is not matched (``MIN_TERM``).

A term's *coverage* of a text row is the share of the query's term characters found in it:
coverage = Σ len(matched terms) / Σ len(all terms); an item's is its best row's.
"""

from __future__ import annotations

import json
import sqlite3
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clipsearch.errors import LibraryError
from clipsearch.store import vector_io
from clipsearch.store.meta import bump_generation
from clipsearch.store.records import TextRead

if TYPE_CHECKING:
    from clipsearch.store.catalog import Catalog

OCR = "ocr"  # the source name of text read from the picture
CAPTION = "caption"  # the source name of captions written by a captioning model
MIN_TERM = 3  # trigram tokenizer: shorter substrings cannot be looked up
_SETTINGS_KEY = "text_reading"  # meta: what `index` reads (remembered between runs)


def squash(text: str) -> str:
    """Letters and digits of ``text``, case-folded, accents dropped, nothing else:
    ``squash("Café  Müller-2!") == "cafemuller2"``. Any script: CJK characters are kept."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if c.isalnum())


@dataclass(frozen=True)
class ReadingSettings:
    """What `index` reads besides pixels; remembered by the library (``meta``)."""

    ocr: bool = False  # read the text in images
    ocr_frames: bool = False  # also read the text in every sampled video frame

    def to_dict(self) -> dict[str, bool]:
        return {"ocr": self.ocr, "ocr_frames": self.ocr_frames}


@dataclass(frozen=True)
class TextMatch:
    """An item's best text row for a set of terms."""

    item_id: int
    coverage: float  # share of the terms' characters found in the row, in (0, 1]
    terms: tuple[str, ...]  # the (squashed) terms found, in the order they were given
    text: str  # the row's text as read
    t: float | None  # the video frame's time in seconds; None for an image
    source: str  # e.g. "ocr"


class TextStore:
    """The texts of a catalog (``Catalog.texts``). Thread-safe like the catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    # -- settings -------------------------------------------------------------------------------
    def settings(self) -> ReadingSettings:
        """What `index` reads (defaults until ``save_settings``)."""
        with self._catalog._reading("reading the text settings") as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (_SETTINGS_KEY,)).fetchone()
        if row is None:
            return ReadingSettings()
        try:
            data = json.loads(row[0])
            return ReadingSettings(ocr=bool(data["ocr"]), ocr_frames=bool(data["ocr_frames"]))
        except (ValueError, KeyError, TypeError):
            return ReadingSettings()

    def save_settings(self, settings: ReadingSettings) -> None:
        """Remember ``settings``. Raises LibraryError when text cannot be indexed here."""
        if settings.ocr:
            self.require_index()
        with self._catalog._writing("saving the text settings") as conn:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (_SETTINGS_KEY, json.dumps(settings.to_dict())),
            )

    def require_index(self) -> None:
        """Raise LibraryError unless this catalog has its full-text index (SQLite ≥ 3.34)."""
        with self._catalog._reading("checking the text index") as conn:
            found = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'texts_fts'"
            ).fetchone()
        if found is None:
            raise LibraryError(
                f"this catalog has no full-text index: it was created with SQLite "
                f"{sqlite3.sqlite_version}, which lacks FTS5's trigram tokenizer (3.34+). "
                "Use a Python built with a newer SQLite and a new --library."
            )

    # -- writes ---------------------------------------------------------------------------------
    def write(self, reads: Mapping[int, TextRead]) -> None:
        """Store what was read from already indexed items (item id -> read), replacing what
        the same source read before, in one transaction (the generation grows). Unknown
        item ids are skipped."""
        if not reads:
            return
        with self._catalog._writing("writing text") as conn:
            known = {
                i
                for (i,) in vector_io.select_in(
                    conn, "SELECT id FROM items WHERE id IN ({ids})", reads
                )
            }
            replace_texts(conn, {i: r for i, r in reads.items() if i in known})
            if known:
                bump_generation(conn)

    # -- reads ----------------------------------------------------------------------------------
    def unread(self, source: str, reader: str, *, frames: bool) -> set[int]:
        """Ids of ok items that ``reader`` has not read for ``source``: images never read
        by it, and — when ``frames`` — videos whose frames it has not read."""
        kinds = "('image', 'video')" if frames else "('image')"
        sql = f"""SELECT i.id FROM items i
            LEFT JOIN text_runs r ON r.item_id = i.id AND r.source = ?
            WHERE i.status = 'ok' AND i.kind IN {kinds}
              AND (r.item_id IS NULL OR r.reader != ?
                   OR (i.kind = 'video' AND r.frames = 0))"""
        with self._catalog._reading("listing unread items") as conn:
            return {i for (i,) in conn.execute(sql, (source, reader))}

    def pending(
        self, source: str, reader: str, *, frames: bool, redo: bool = False
    ) -> tuple[list[int], int]:
        """(ids of the ok items ``reader`` still has to read for ``source``, in id order;
        the number of ok items of the kinds it reads). ``redo``: all of them."""
        kinds = "('image', 'video')" if frames else "('image')"
        with self._catalog._reading("listing items") as conn:
            every = [
                i
                for (i,) in conn.execute(
                    f"SELECT id FROM items WHERE status = 'ok' AND kind IN {kinds} ORDER BY id"
                )
            ]
        if redo:
            return every, len(every)
        unread = self.unread(source, reader, frames=frames)
        return [i for i in every if i in unread], len(every)

    def matches(
        self, terms: Sequence[str], *, limit: int = 1000, sources: Sequence[str] = ()
    ) -> list[TextMatch]:
        """Items whose text contains any of ``terms`` (squashed, ≥ MIN_TERM characters), best
        first: by coverage, then FTS5's bm25 rank of their best row, then item id. At most
        ``limit`` text rows are considered (the bm25-best ones). ``sources``: only these."""
        terms = _usable(terms)
        if not terms:
            return []
        expression = " OR ".join(f'"{t}"' for t in terms)
        sql = """SELECT x.item_id, x.t, x.source, x.text, x.body FROM texts_fts f
            JOIN texts x ON x.id = f.rowid WHERE texts_fts MATCH ?"""
        params: list[Any] = [expression]
        if sources:
            sql += f" AND x.source IN ({', '.join('?' * len(sources))})"
            params.extend(sources)
        sql += " ORDER BY f.rank LIMIT ?"
        params.append(int(limit))
        with self._catalog._reading("searching text") as conn:
            try:
                rows = conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as e:
                if "no such table" in str(e):
                    return []  # a catalog without the full-text index has no text either
                raise
        best: dict[int, tuple[float, int, TextMatch]] = {}
        for order, (item_id, t, source, text, body) in enumerate(rows):
            match = _match(item_id, terms, t, source, text, body)
            if match is not None and (item_id not in best or match.coverage > best[item_id][0]):
                best[item_id] = (match.coverage, order, match)
        ranked = sorted(best.values(), key=lambda b: (-b[0], b[1], b[2].item_id))
        return [m for _, _, m in ranked]

    def best_rows(
        self, item_ids: Iterable[int], terms: Sequence[str], *, sources: Sequence[str] = ()
    ) -> dict[int, TextMatch]:
        """For each of ``item_ids`` whose text contains one of ``terms``: its best row."""
        terms = _usable(terms)
        if not terms:
            return {}
        sql = "SELECT item_id, t, source, text, body FROM texts WHERE item_id IN ({ids})"
        out: dict[int, TextMatch] = {}
        with self._catalog._reading("reading text") as conn:
            for item_id, t, source, text, body in vector_io.select_in(conn, sql, item_ids):
                if sources and source not in sources:
                    continue
                m = _match(item_id, terms, t, source, text, body)
                if m is not None and (item_id not in out or m.coverage > out[item_id].coverage):
                    out[item_id] = m
        return out

    def texts(self, item_id: int) -> list[tuple[str, float | None, str]]:
        """(source, t, text) rows of one item, by source then time."""
        with self._catalog._reading("reading text") as conn:
            return conn.execute(
                "SELECT source, t, text FROM texts WHERE item_id = ? ORDER BY source, t, id",
                (int(item_id),),
            ).fetchall()

    def has_text(self, source: str = OCR) -> bool:
        """True when any item has been read by ``source`` (text found or not)."""
        with self._catalog._reading("reading text coverage") as conn:
            row = conn.execute("SELECT 1 FROM text_runs WHERE source = ? LIMIT 1", (source,))
            return row.fetchone() is not None

    def coverage(self, source: str = OCR) -> dict[str, Any]:
        """For ``status``: per kind, ok items, items read by ``source`` and items with text."""
        sql = """SELECT i.kind, count(*), count(r.item_id), count(w.item_id)
            FROM items i
            LEFT JOIN text_runs r ON r.item_id = i.id AND r.source = ?
            LEFT JOIN (SELECT DISTINCT item_id FROM texts WHERE source = ?) w
                   ON w.item_id = i.id
            WHERE i.status = 'ok' GROUP BY i.kind"""
        with self._catalog._snapshot("reading text coverage") as conn:
            rows = conn.execute(sql, (source, source)).fetchall()
            (lines,) = conn.execute(
                "SELECT count(*) FROM texts WHERE source = ?", (source,)
            ).fetchone()
        by_kind = {
            kind: {"items": int(n), "read": int(read), "with_text": int(found)}
            for kind, n, read, found in rows
        }
        return {"by_kind": by_kind, "texts": int(lines)}


# -- SQL the catalog runs inside its own write transactions -------------------------------------
def replace_texts(conn: sqlite3.Connection, reads: Mapping[int, TextRead | None]) -> None:
    """Drop the texts and runs of these items (every source when the read is None, else the
    read's source) and store the new reads. Runs inside the caller's transaction."""
    for item_id, read in reads.items():
        if read is None:
            conn.execute("DELETE FROM texts WHERE item_id = ?", (item_id,))
            conn.execute("DELETE FROM text_runs WHERE item_id = ?", (item_id,))
            continue
        conn.execute("DELETE FROM texts WHERE item_id = ? AND source = ?", (item_id, read.source))
        conn.executemany(
            "INSERT INTO texts (item_id, source, t, text, body) VALUES (?, ?, ?, ?, ?)",
            [
                (item_id, read.source, None if t is None else float(t), text, squash(text))
                for t, text in read.rows
                if text.strip()
            ],
        )
        conn.execute(
            "INSERT INTO text_runs (item_id, source, reader, frames) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(item_id, source) DO UPDATE SET reader = excluded.reader, "
            "frames = excluded.frames",
            (item_id, read.source, read.reader, int(read.frames)),
        )


def copy_texts(conn: sqlite3.Connection, src: int, dst: int) -> None:
    """Give item ``dst`` the texts and runs of ``src`` (a moved or copied file)."""
    conn.execute("DELETE FROM texts WHERE item_id = ?", (dst,))
    conn.execute("DELETE FROM text_runs WHERE item_id = ?", (dst,))
    conn.execute(
        "INSERT INTO texts (item_id, source, t, text, body) "
        "SELECT ?, source, t, text, body FROM texts WHERE item_id = ? ORDER BY id",
        (dst, src),
    )
    conn.execute(
        "INSERT INTO text_runs (item_id, source, reader, frames) "
        "SELECT ?, source, reader, frames FROM text_runs WHERE item_id = ?",
        (dst, src),
    )


def _usable(terms: Sequence[str]) -> list[str]:
    """Squashed, distinct, long enough for the trigram index, in the given order."""
    return list(dict.fromkeys(s for s in (squash(t) for t in terms) if len(s) >= MIN_TERM))


def _match(
    item_id: int, terms: list[str], t: float | None, source: str, text: str, body: str
) -> TextMatch | None:
    found = tuple(term for term in terms if term in body)
    if not found:
        return None
    coverage = sum(map(len, found)) / sum(map(len, terms))
    return TextMatch(int(item_id), coverage, found, text, t, source)
