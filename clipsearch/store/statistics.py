"""What ``clipsearch status`` counts in a catalog: items by kind and status, vectors,
frames, roots, model binding, generation, schema version, capture-time coverage."""

from __future__ import annotations

import sqlite3
from typing import Any

from clipsearch.media.scan import MEDIA_KINDS
from clipsearch.store import capture_times, meta
from clipsearch.store.migrations import schema_version
from clipsearch.store.records import STATUSES


def count(conn: sqlite3.Connection) -> dict[str, Any]:
    """The counts and facts of `Catalog.stats` read from ``conn`` (call inside one read
    transaction, so they agree); the file's path and size are the catalog's to add."""
    by_kind = {k: {s: 0 for s in STATUSES} for k in MEDIA_KINDS}
    for kind, status, n in conn.execute(
        "SELECT kind, status, count(*) FROM items GROUP BY kind, status"
    ):
        by_kind[kind][status] = int(n)
    vectors, frames = conn.execute("SELECT count(*), count(t) FROM vectors").fetchone()
    binding = meta.read_binding(conn)
    roots = [p for (p,) in conn.execute("SELECT path FROM roots ORDER BY id")]
    gen = meta.generation(conn)
    version = schema_version(conn)
    (catalog_id,) = conn.execute("SELECT value FROM meta WHERE key = 'catalog_id'").fetchone()
    dates = capture_times.coverage(conn)
    ok = sum(c["ok"] for c in by_kind.values())
    failed = sum(c["failed"] for c in by_kind.values())
    return {
        "schema_version": version,
        "model": None
        if binding is None
        else {"spec": binding.spec, "fingerprint": binding.fingerprint, "dim": binding.dim},
        "items": {"total": ok + failed, "ok": ok, "failed": failed, "by_kind": by_kind},
        "vectors": int(vectors),
        "frames": int(frames),
        "roots": roots,
        "generation": gen,
        "catalog_id": catalog_id,
        "capture_times": dates,
    }
