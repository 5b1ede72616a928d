"""The catalog's ``meta`` table (model binding, generation counter) and file identity.

Small SQL helpers that `Catalog` runs inside its own transactions; each takes the open
connection.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from clipsearch.errors import LibraryError
from clipsearch.store.migrations import APPLICATION_ID
from clipsearch.store.records import ModelBinding


def check_identity(conn: sqlite3.Connection, db_path: Path) -> None:
    """Refuse an SQLite file that belongs to another program."""
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    if app_id == APPLICATION_ID:
        return
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if app_id != 0 or tables:
        raise LibraryError(
            f"{db_path} is an SQLite database of another program, not a clipsearch catalog. "
            "Point --library at another folder (or move that file away)."
        )


def read_binding(conn: sqlite3.Connection) -> ModelBinding | None:
    """The model the catalog is bound to, or None before the first index."""
    meta = dict(
        conn.execute(
            "SELECT key, value FROM meta WHERE key IN ('model_spec', 'model_fingerprint', 'model_dim')"
        ).fetchall()
    )
    if "model_fingerprint" not in meta:
        return None
    return ModelBinding(
        spec=str(meta["model_spec"]),
        fingerprint=str(meta["model_fingerprint"]),
        dim=int(meta["model_dim"]),
    )


def read_chosen_model(conn: sqlite3.Connection) -> str | None:
    """The model spec chosen for an unbound catalog's first index (see
    `Catalog.choose_model`), or None."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'model_chosen'").fetchone()
    return None if row is None else str(row[0])


def stored_dim(conn: sqlite3.Connection) -> int | None:
    """The width of the stored vectors (fp16: 2 bytes each), or None when there are none."""
    row = conn.execute("SELECT length(vector) FROM vectors LIMIT 1").fetchone()
    return None if row is None else int(row[0]) // 2


def generation(conn: sqlite3.Connection) -> int:
    """The change counter that derived caches are stamped with."""
    return int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])


def bump_generation(conn: sqlite3.Connection) -> None:
    """Count one committed change to items, vectors, tags or texts (inside the write)."""
    conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
