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
"""

from __future__ import annotations

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


def connect(db_path: Path, *, readonly: bool) -> sqlite3.Connection:
    """Open ``db_path`` in autocommit mode (transactions are explicit) with our pragmas.

    The connection may be shared between threads; ``Catalog`` serialises access with a
    lock. Raises sqlite3.Error (callers translate it with ``translate``).
    """
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        raise LibraryError(
            f"clipsearch needs SQLite >= {'.'.join(map(str, MIN_SQLITE))}, but Python is "
            f"linked against {sqlite3.sqlite_version}. Use a newer Python build."
        )
    uri = db_path.absolute().as_uri() + ("?mode=ro" if readonly else "?mode=rwc")
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
