"""Opening the catalog's SQLite file, and turning SQLite failures into clipsearch errors.

Settings and why:
- WAL journal: readers (the server) never block the writer (the indexer) and see the
  last committed state; a writer's transaction is invisible until COMMIT.
- ``synchronous = FULL`` (in WAL mode: one fsync of the WAL per COMMIT). A crash — kill -9
  *or power loss* — must lose at most the batch in flight
  (docs/architecture.md#crash-safety-and-concurrency).
  ``NORMAL`` would meet that for a killed process (a committed transaction is already
  in the OS page cache) but not for a power cut or OS crash: the commits since the
  last checkpoint (up to ~16 MB of WAL, thousands of vectors) could roll back, and with
  them the generation counter and the AUTOINCREMENT sequence, so a derived ANN cache
  saved in between could later meet a catalog that reuses its vector ids and its
  generation number for different vectors. FULL closes that hole for one fsync per
  batch: measured 2–3 ms per 64-item batch on the dev VM, under 1% of an indexing run
  that encodes 60–160 images/s. Either way the file itself is never corrupted (WAL
  frames carry checksums; a torn tail is ignored on recovery).
- ``foreign_keys = ON``: deleting an item cascades to its vectors and tags.
- ``busy_timeout``: a second writer, or a reader during WAL recovery, waits instead of
  failing at once.
- 16 KiB pages: a 512-d fp16 row is ~1.05 KB; 4 KiB pages fit 3 rows (25% slack),
  16 KiB pages fit 15 (4%). Only takes effect when the file is created.

Opening also refuses a 0-byte catalog, runs SQLite's quick_check on catalogs up to 64 MiB
(larger ones are checked by SQLite as pages are read: a damaged page then raises
SQLITE_CORRUPT, which `translate` maps), and falls back to read-only for a catalog the
user may not write (see `connect`).
"""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

from clipsearch.errors import ClipsearchError, DiskFullError, LibraryError, UsageError

CATALOG_FILE = "catalog.sqlite"
PAGE_SIZE = 16384
BUSY_TIMEOUT_MS = 15_000
CACHE_KIB = 64 * 1024  # page cache per connection
WAL_LIMIT_BYTES = 64 * 1024 * 1024  # truncate the -wal file back to this after checkpoints
SYNCHRONOUS = "FULL"  # see the module docstring for why not NORMAL
MIN_SQLITE = (3, 24, 0)  # UPSERT (INSERT ... ON CONFLICT DO UPDATE)
QUICK_CHECK_MAX_BYTES = 64 << 20  # quick_check on open up to this size (~0.2 s)


def connect(db_path: Path, *, readonly: bool) -> sqlite3.Connection:
    """Open ``db_path`` in autocommit mode (transactions are explicit) with our pragmas.

    - A catalog the user may not write (no write permission on the file or its folder, a
      read-only mount) is opened read-only even when ``readonly`` is False, so it can
      still be searched; a write then fails with the "read-only" LibraryError of
      `translate`. When SQLite cannot even create its WAL index (``-shm``) next to it,
      the file is opened as immutable: nobody can be writing it then.
    - An existing 0-byte file is refused (LibraryError): it is a catalog that lost its
      contents, not a new library.
    - A catalog up to ``QUICK_CHECK_MAX_BYTES`` is checked with SQLite's quick_check
      (`check_integrity`), so damage is reported by whichever command opens it first.

    The connection may be shared between threads; ``Catalog`` serialises access with a
    lock. Raises LibraryError as above, else sqlite3.Error (callers translate it with
    ``translate``).
    """
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise LibraryError(
            f"clipsearch needs SQLite >= {'.'.join(map(str, MIN_SQLITE))}, but Python is "
            f"linked against {sqlite3.sqlite_version}. Use a newer Python build."
        )
    size = _existing_size(db_path)
    if size == 0 and not _has_wal(db_path):
        raise LibraryError(
            f"the catalog {db_path} is empty (0 bytes): its contents were lost (an "
            "interrupted copy, a damaged disk?). Restore it from a backup, or delete the "
            "file and index your folders again to rebuild it."
        )
    if not readonly and size is not None and not _writable(db_path):
        readonly = True  # only reading is possible: open for that, writes fail typed
    try:
        conn = _open(db_path, readonly=readonly, immutable=False)
    except sqlite3.OperationalError:
        if not readonly or _writable(db_path.parent):
            raise
        # Read-only folder without a -shm file: SQLite cannot set up WAL reading.
        conn = _open(db_path, readonly=True, immutable=True)
    try:
        if size is not None and size <= QUICK_CHECK_MAX_BYTES:
            check_integrity(conn, db_path)
    except BaseException:
        conn.close()
        raise
    return conn


def _open(db_path: Path, *, readonly: bool, immutable: bool) -> sqlite3.Connection:
    mode = "?mode=ro" if readonly else "?mode=rwc"
    uri = db_path.absolute().as_uri() + mode + ("&immutable=1" if immutable else "")
    conn = sqlite3.connect(
        uri,
        uri=True,
        isolation_level=None,
        check_same_thread=False,
        timeout=BUSY_TIMEOUT_MS / 1000,
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        if not readonly:
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise LibraryError(
                    f"could not switch the catalog {db_path} to WAL mode (got {mode!r}); "
                    "is it on a network filesystem? Keep the library on a local disk."
                )
            conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
            conn.execute(f"PRAGMA synchronous = {SYNCHRONOUS}")
        # Forces the header to be read now, so a garbage file fails here, not later.
        conn.execute("PRAGMA user_version").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn


def check_integrity(conn: sqlite3.Connection, db_path: Path) -> None:
    """SQLite's ``quick_check`` (every page and b-tree structure, not index contents:
    about 0.36 s for a 117 MB catalog on a loaded 2-core machine). Raises LibraryError
    naming the first problem found."""
    rows = conn.execute("PRAGMA quick_check(20)").fetchall()
    problems = [
        str(r[0])
        for r in rows
        if str(r[0]).lower() != "ok" and not _false_null_report(conn, str(r[0]))
    ]
    if problems:
        first = problems[0].replace("*** in database main ***", "").strip().splitlines()
        detail = (first[0] if first else problems[0])[:200]
        raise LibraryError(
            f"the catalog {db_path} is damaged (SQLite's integrity check: {detail}). Move "
            "it aside (keep a copy) and index your folders again to rebuild it, or restore "
            "it from a backup."
        )


_NULL_REPORT = re.compile(r"NULL value in (\w+)\.(\w+)")


def _false_null_report(conn: sqlite3.Connection, problem: str) -> bool:
    """True for a "NULL value in T.C" report that the table's rows contradict.

    SQLite 3.40's quick_check reports NULLs in the NOT NULL columns of WITHOUT ROWID
    tables (our ``tags``) that hold none; such a report is checked with a query before it
    counts as damage. Names come from SQLite's message and must be the schema's own."""
    m = _NULL_REPORT.fullmatch(problem.strip())
    if m is None:
        return False
    table, column = m.groups()
    known = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if table not in known:
        return False
    columns = {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}
    if column not in columns:
        return False
    try:
        # typeof(), not IS NULL, which SQLite folds to false on a NOT NULL column.
        hit = conn.execute(
            f'SELECT 1 FROM "{table}" WHERE typeof("{column}") = \'null\' LIMIT 1'
        ).fetchone()
    except sqlite3.DatabaseError:
        return False  # the table cannot even be read: damage
    return hit is None


def _existing_size(db_path: Path) -> int | None:
    try:
        return db_path.stat().st_size
    except FileNotFoundError:
        return None


def _has_wal(db_path: Path) -> bool:
    try:
        return db_path.with_name(db_path.name + "-wal").stat().st_size > 0
    except OSError:
        return False


def _writable(path: Path) -> bool:
    """May this process write ``path`` (and, for a file, create files next to it)?"""
    if path.is_dir():
        return os.access(path, os.W_OK | os.X_OK)
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)


def translate(error: sqlite3.Error, db_path: Path, *, action: str) -> ClipsearchError:
    """Map an SQLite failure during ``action`` (e.g. "writing a batch") to a typed error
    whose message says what to do. Unknown failures become LibraryError."""
    code = getattr(error, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(error)
    low = text.lower()
    if primary == sqlite3.SQLITE_FULL or "disk is full" in low:
        return DiskFullError(
            f"the disk is full: could not finish {action} in {db_path}. Nothing committed "
            "before was lost and the unfinished batch was rolled back. Free some disk space "
            "and run the same command again: it resumes where it stopped."
        )
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in low:
        return LibraryError(
            f"the catalog {db_path} is locked by another process (another `clipsearch index` "
            f"running?) and stayed locked for {BUSY_TIMEOUT_MS // 1000} s while {action}. "
            "Wait for it to finish, then try again."
        )
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or (
        "malformed" in low or "not a database" in low
    ):
        return LibraryError(
            f"the catalog {db_path} is damaged or is not a clipsearch catalog ({text}). "
            "Move it aside (keep a copy) and index your folders again to rebuild it, "
            "or restore it from a backup."
        )
    if primary == sqlite3.SQLITE_READONLY or "readonly" in low:
        return LibraryError(
            f"cannot write to the catalog {db_path} while {action}: it is read-only "
            "(opened read-only, or no write permission on the file or its folder)."
        )
    if primary in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH):
        return LibraryError(
            f"cannot open the catalog {db_path} ({text}). Check that the library folder "
            "exists and that you may read and write it."
        )
    if primary == sqlite3.SQLITE_IOERR:
        return LibraryError(
            f"I/O error on the catalog {db_path} while {action} ({text}). Check the disk; "
            "the last committed state is kept."
        )
    if isinstance(error, sqlite3.IntegrityError):
        return UsageError(f"the catalog rejected {action}: {text}")
    return LibraryError(f"catalog error while {action} in {db_path}: {text}")
