"""Item writes: validating an ``ItemWrite`` and encoding its vectors before any
transaction opens (so the write lock is held only for the SQL), and the upsert SQL that
`Catalog` runs inside its transaction."""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass

import numpy as np

from clipsearch.errors import ModelMismatchError, UsageError
from clipsearch.media.capture_time import CaptureTime
from clipsearch.media.scan import MEDIA_KINDS
from clipsearch.store import vector_io
from clipsearch.store.records import STATUSES, ItemWrite, encode_vectors


@dataclass(frozen=True)
class PreparedWrite:
    """An ItemWrite checked and encoded, ready for the catalog's upsert."""

    path: str
    row: tuple  # items columns path..frame_count (all but indexed_at), in upsert order
    vectors: list[tuple[float | None, bytes]]  # (t or None, fp16 blob), item-level first
    cuts: bytes | None  # videos: cut times, little-endian float64 (None: not known)
    taken: CaptureTime | None = None  # the item's capture time (None: none known)

    @property
    def dim(self) -> int | None:
        return len(self.vectors[0][1]) // 2 if self.vectors else None


def prepare(w: ItemWrite, dim: int | None) -> PreparedWrite:
    """Check ``w`` and encode its vectors to fp16 blobs (``dim``: the bound model's
    width, or None when unbound). Raises UsageError for a malformed write and
    ModelMismatchError for vectors of the wrong width."""
    check_item(w)
    vectors, frame_count = _vector_rows(w, dim)
    return PreparedWrite(
        path=str(w.path),
        row=item_row(w, frame_count),
        vectors=vectors,
        cuts=_cut_blob(w),
        taken=w.taken,
    )


def _cut_blob(w: ItemWrite) -> bytes | None:
    """The shot cuts of an ok video as a blob; UsageError for cuts on anything else."""
    if w.cuts is None:
        return None
    if w.kind != "video" or w.status != "ok":
        raise UsageError(f"item {w.path!r}: only an indexed video has shot cuts")
    cuts = np.asarray(w.cuts, dtype=np.float64).reshape(-1)
    if not np.isfinite(cuts).all() or (cuts < 0).any():
        raise UsageError(f"item {w.path!r}: shot cuts must be finite times >= 0")
    return np.sort(cuts).astype("<f8").tobytes()


def check_item(w: ItemWrite) -> None:
    """The metadata part of the checks. Raises UsageError."""
    where = f"item {w.path!r}"
    if not w.path:
        raise UsageError("an item write needs a path")
    if w.kind not in MEDIA_KINDS:
        raise UsageError(f"{where}: kind must be one of {MEDIA_KINDS}, got {w.kind!r}")
    if w.status not in STATUSES:
        raise UsageError(f"{where}: status must be one of {STATUSES}, got {w.status!r}")
    if int(w.size) < 0:
        raise UsageError(f"{where}: negative size {w.size}")


def item_row(w: ItemWrite, frame_count: int | None) -> tuple:
    """The ``items`` columns path..frame_count of ``w``, as SQLite-ready Python values."""
    return (
        str(w.path),
        None if w.root_id is None else int(w.root_id),
        w.kind,
        int(w.size),
        int(w.mtime_ns),
        w.content_hash,
        w.status,
        w.error,
        None if w.width is None else int(w.width),
        None if w.height is None else int(w.height),
        None if w.duration is None else float(w.duration),
        frame_count,
    )


def _vector_rows(
    w: ItemWrite, dim: int | None
) -> tuple[list[tuple[float | None, bytes]], int | None]:
    """(rows, frame_count): the item-level row first, then frames by time, so vector
    ids ascend with t within an item. frame_count is None except for ok videos."""
    where = f"item {w.path!r}"
    if w.status == "failed":
        if w.vectors is not None:
            raise UsageError(f"{where}: a failed item cannot carry vectors")
        return [], None
    if w.vectors is None:
        raise UsageError(f"{where}: an ok item needs vectors")
    vecs = np.asarray(w.vectors)
    if vecs.ndim == 1:
        vecs = vecs[None, :]  # (1, D)
    if vecs.ndim != 2 or vecs.shape[0] == 0 or vecs.shape[1] == 0:
        raise UsageError(
            f"{where}: vectors must be a non-empty (n, D) array, got shape {vecs.shape}"
        )
    if dim is not None and vecs.shape[1] != dim:
        raise ModelMismatchError(
            f"{where}: {vecs.shape[1]}-d vectors, but the library's model makes {dim}-d ones"
        )
    half = vecs.astype(np.float16)  # (n, D)
    if not np.isfinite(half).all():
        raise UsageError(f"{where}: vectors contain NaN or values beyond the float16 range")
    if w.timestamps is None:  # the common case (an image): one item-level vector
        if len(half) != 1:
            raise UsageError(f"{where}: {len(half)} vectors need timestamps (NaN = item-level)")
        return [(None, encode_vectors(half)[0])], (0 if w.kind == "video" else None)
    ts = np.asarray(w.timestamps, dtype=np.float64).reshape(-1)
    if ts.shape != (len(half),):
        raise UsageError(f"{where}: {len(ts)} timestamps for {len(half)} vectors")
    item_level = np.isnan(ts)
    if item_level.sum() > 1:
        raise UsageError(f"{where}: more than one item-level vector (NaN timestamp)")
    if np.isinf(ts).any():
        raise UsageError(f"{where}: infinite frame timestamp")
    order = np.lexsort((ts, ~item_level))  # item-level first, then ascending t
    blobs = encode_vectors(half[order])
    rows = [
        (None if math.isnan(t) else t, b) for t, b in zip(ts[order].tolist(), blobs, strict=True)
    ]
    frame_count = int((~item_level).sum()) if w.kind == "video" else None
    return rows, frame_count


UPSERT_ITEM = """
INSERT INTO items (path, root_id, kind, size, mtime_ns, content_hash, status, error,
                   width, height, duration, frame_count, indexed_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (path) DO UPDATE SET
    root_id = excluded.root_id, kind = excluded.kind, size = excluded.size,
    mtime_ns = excluded.mtime_ns, content_hash = excluded.content_hash,
    status = excluded.status, error = excluded.error, width = excluded.width,
    height = excluded.height, duration = excluded.duration,
    frame_count = excluded.frame_count, indexed_at = excluded.indexed_at
"""
INSERT_VECTOR = "INSERT INTO vectors (item_id, t, vector) VALUES (?, ?, ?)"
INSERT_SHOTS = "INSERT OR REPLACE INTO shots (item_id, cuts) VALUES (?, ?)"


def upsert_items(conn: sqlite3.Connection, rows: list[tuple], now: float) -> list[int]:
    """Upsert item rows (path first); returns their ids in order (an existing path keeps
    its id). Two statements per chunk, whatever the batch size."""
    conn.executemany(UPSERT_ITEM, ((*row, now) for row in rows))
    paths = [row[0] for row in rows]
    ids: dict[str, int] = {}
    for chunk in vector_io.chunks(list(dict.fromkeys(paths))):
        marks = ", ".join("?" * len(chunk))
        ids.update(
            conn.execute(f"SELECT path, id FROM items WHERE path IN ({marks})", chunk).fetchall()
        )
    return [int(ids[p]) for p in paths]


def upsert_item(conn: sqlite3.Connection, row: tuple, path: str, now: float) -> int:
    """Upsert one item row; its id."""
    conn.execute(UPSERT_ITEM, (*row, now))
    return int(conn.execute("SELECT id FROM items WHERE path = ?", (path,)).fetchone()[0])
