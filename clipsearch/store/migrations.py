"""Catalog schema and its numbered migrations.

The schema version lives in ``PRAGMA user_version`` (a field of the database header,
written in the same transaction as the schema change), and ``PRAGMA application_id``
marks the file as a clipsearch catalog. Migration N is the function ``mNNN_<name>`` at
position N-1 of ``MIGRATIONS``; adding one is: write the function, append it.

All pending migrations run in ONE ``BEGIN IMMEDIATE`` transaction (SQLite DDL is
transactional), so a failure or a crash half-way leaves the catalog at its old version,
and two processes opening a fresh library at once cannot both create the schema.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from clipsearch.errors import LibraryError

APPLICATION_ID = 0x436C5331  # "ClS1": marks a clipsearch catalog in the SQLite header

Migration = Callable[[sqlite3.Connection], None]


def m001_initial(conn: sqlite3.Connection) -> None:
    """Roots, items, vectors and meta (model binding, generation counter, catalog id)."""
    statements = (
        # value is untyped on purpose: integers (generation, dim) stay integers.
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
        """CREATE TABLE roots (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            added_at REAL NOT NULL
        )""",
        """CREATE TABLE items (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            root_id INTEGER REFERENCES roots(id) ON DELETE SET NULL,
            kind TEXT NOT NULL CHECK (kind IN ('image', 'video')),
            size INTEGER NOT NULL CHECK (size >= 0),
            mtime_ns INTEGER NOT NULL,
            content_hash TEXT,
            status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
            error TEXT,
            width INTEGER,
            height INTEGER,
            duration REAL,
            frame_count INTEGER,
            indexed_at REAL NOT NULL
        )""",
        # find_reusable looks items up by (content_hash, size).
        "CREATE INDEX items_content ON items(content_hash, size)",
        "CREATE INDEX items_root ON items(root_id)",
        # AUTOINCREMENT: vector ids are never reused, even after deleting the newest rows,
        # so a derived ANN cache can trust that an id it holds still means the same vector.
        # t NULL = the item-level vector (image, or a video's meanP vector); t = a frame's
        # timestamp in seconds.
        """CREATE TABLE vectors (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
            t REAL,
            vector BLOB NOT NULL
        )""",
        # Covers (id, item_id, t): frame lookups, cascading deletes, and id-only scans
        # (vector_ids, items_for_vectors) that never touch the 1 KiB blobs.
        "CREATE INDEX vectors_item ON vectors(item_id, t)",
    )
    for sql in statements:
        conn.execute(sql)
    # catalog_id tells two catalogs apart when one replaced the other at the same path
    # (both start at generation 0 and vector id 1): a derived cache stamps it too.
    conn.executemany(
        "INSERT INTO meta(key, value) VALUES (?, ?)",
        [("generation", 0), ("created_at", time.time()), ("catalog_id", uuid.uuid4().hex)],
    )


def m002_tags(conn: sqlite3.Connection) -> None:
    """Per-item tags (zero-shot classification labels, user tags), filterable with tag:NAME."""
    conn.execute(
        """CREATE TABLE tags (
            item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
            tag TEXT NOT NULL,
            score REAL NOT NULL,
            source TEXT NOT NULL,
            PRIMARY KEY (item_id, source, tag)
        ) WITHOUT ROWID"""
    )
    conn.execute("CREATE INDEX tags_tag ON tags(tag, item_id)")


def m003_item_texts(conn: sqlite3.Connection) -> None:
    """Text found in or written about items (text read from the picture by OCR; later other
    sources such as captions), full-text indexed for search, and which items were read.

    ``texts.body`` is the squashed form of ``text`` (letters and digits, case-folded, no
    spaces: store/texts.py) and ``texts_fts`` indexes it with FTS5's trigram tokenizer, so
    any substring of three or more characters is found, glued words included ("HAPPY
    BIRTHDAYANNA" contains "birthday"). The FTS table mirrors ``texts`` through triggers
    (deleting an item cascades to its texts, and the cascade fires them). An SQLite without
    FTS5's trigram tokenizer (before 3.34) gets the tables without the full-text index;
    reading text is then refused with a message (store/texts.py).
    """
    conn.execute(
        """CREATE TABLE texts (
            id INTEGER PRIMARY KEY,
            item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
            source TEXT NOT NULL,
            t REAL,
            text TEXT NOT NULL,
            body TEXT NOT NULL
        )"""
    )
    conn.execute("CREATE INDEX texts_item ON texts(item_id, source)")
    # One row per item and source that was read, text found or not: coverage, and the
    # items a reader still has to visit. frames = 1 when a video's frames were read.
    conn.execute(
        """CREATE TABLE text_runs (
            item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
            source TEXT NOT NULL,
            reader TEXT NOT NULL,
            frames INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (item_id, source)
        ) WITHOUT ROWID"""
    )
    try:
        conn.execute(
            "CREATE VIRTUAL TABLE texts_fts USING fts5("
            "body, content='texts', content_rowid='id', tokenize='trigram')"
        )
    except sqlite3.OperationalError:
        return  # no FTS5 or no trigram tokenizer: see the docstring
    conn.execute(
        """CREATE TRIGGER texts_fts_insert AFTER INSERT ON texts BEGIN
            INSERT INTO texts_fts(rowid, body) VALUES (new.id, new.body);
        END"""
    )
    conn.execute(
        """CREATE TRIGGER texts_fts_delete AFTER DELETE ON texts BEGIN
            INSERT INTO texts_fts(texts_fts, rowid, body) VALUES ('delete', old.id, old.body);
        END"""
    )


def m004_capture_time(conn: sqlite3.Connection) -> None:
    """When each item was taken (clipsearch.media.capture_time): the instant in unix ns,
    the UTC offset where it was taken when known, and the source (exif, container, mtime).

    A table of its own rather than columns on ``items``: rows written before this
    migration have none, and ``index`` fills them for unchanged files without encoding
    them again (a missing row means "not read yet"; until then the file's mtime stands in).
    """
    conn.execute(
        """CREATE TABLE capture_times (
            item_id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
            taken_ns INTEGER NOT NULL,
            offset_min INTEGER CHECK (offset_min BETWEEN -1440 AND 1440),
            source TEXT NOT NULL CHECK (source IN ('exif', 'container', 'mtime'))
        )"""
    )
    conn.execute("CREATE INDEX capture_times_taken ON capture_times(taken_ns)")


def m005_shots(conn: sqlite3.Connection) -> None:
    """Shot boundaries of videos, found while decoding: the cut times inside the video
    (seconds, little-endian float64; empty when the video is one shot). No row: not
    known (indexed before this table existed); re-indexing fills it."""
    conn.execute(
        """CREATE TABLE shots (
            item_id INTEGER PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,
            cuts BLOB NOT NULL
        )"""
    )


MIGRATIONS: tuple[Migration, ...] = (
    m001_initial,
    m002_tags,
    m003_item_texts,
    m004_capture_time,
    m005_shots,
)
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    """The version recorded in the database header (0 for a new, empty file)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_version(version: int, db_path: Path, *, readonly: bool) -> None:
    """Refuse a schema this code cannot use. Raises LibraryError."""
    if version > SCHEMA_VERSION:
        raise LibraryError(
            f"the catalog {db_path} uses schema version {version}, but this clipsearch only "
            f"knows up to version {SCHEMA_VERSION}: it was written by a newer clipsearch. "
            "Upgrade clipsearch (pip install -U clipsearch) to open it."
        )
    if readonly and version < SCHEMA_VERSION:
        raise LibraryError(
            f"the catalog {db_path} uses schema version {version} and needs an upgrade to "
            f"{SCHEMA_VERSION}, which a read-only open cannot do. Open it once for writing "
            "(e.g. run `clipsearch status` or `clipsearch index`) and try again."
        )


def migrate(conn: sqlite3.Connection, db_path: Path, *, target: int | None = None) -> int:
    """Bring the catalog up to ``target`` (default: the newest schema). Returns the version.

    ``conn`` must be in autocommit mode (isolation_level=None) with no open transaction.
    Raises LibraryError for a newer schema; sqlite3.Error from a failing migration
    propagates after the rollback (the catalog is left at its previous version).
    """
    target = SCHEMA_VERSION if target is None else target
    if not 0 <= target <= SCHEMA_VERSION:
        raise ValueError(f"target schema version must be in 0..{SCHEMA_VERSION}, got {target}")
    version = schema_version(conn)
    check_version(version, db_path, readonly=False)
    if version >= target:
        return version
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(conn)  # another process may have migrated meanwhile
        for number in range(version + 1, target + 1):
            MIGRATIONS[number - 1](conn)
        if version < target:
            conn.execute(f"PRAGMA user_version = {int(target)}")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return max(version, target)
