"""Item writes: validating an ``ItemWrite`` and encoding its vectors before any
transaction opens (so the write lock is held only for the SQL), and the SQL of a batch
write, a reused copy and a deletion that `Catalog` runs inside its transaction."""

from __future__ import annotations

import dataclasses
import math
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

from clipsearch.errors import ModelMismatchError, NotFoundError, UsageError
from clipsearch.media.capture_time import CaptureTime
from clipsearch.media.scan import MEDIA_KINDS
from clipsearch.store import capture_times, meta, vector_io
from clipsearch.store.records import (
    ITEM_COLUMNS,
    STATUSES,
    ItemRecord,
    ItemWrite,
    encode_vectors,
)
from clipsearch.store.texts import copy_texts, replace_texts

# numpy is imported by the functions that check vectors: opening the catalog (an index run
# over unchanged files) does not import it.


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
    import numpy as np

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
    import numpy as np

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


# -- the SQL of a write, run inside the catalog's transaction ------------------------------------
def write_batch(
    conn: sqlite3.Connection,
    writes: Sequence[ItemWrite],
    prepared: Sequence[PreparedWrite],
    *,
    bound_dim: int | None,
) -> list[int]:
    """Upsert a prepared batch: items, their vectors, texts, shot cuts and capture times,
    and bump the generation (`Catalog.write_items`). ``bound_dim``: the bound model's
    width, None when unbound (then the batch must agree with the stored vectors)."""
    dims = {p.dim for p in prepared if p.dim is not None}
    if bound_dim is None and dims:  # unbound library: the batch must agree with what is stored
        stored = meta.stored_dim(conn)
        if stored is not None and stored not in dims:
            raise ModelMismatchError(
                f"the catalog holds {stored}-d vectors; this batch has {dims.pop()}-d ones"
            )
    ids = upsert_items(conn, [p.row for p in prepared], time.time())
    for table in ("vectors", "shots"):
        old = f"DELETE FROM {table} WHERE item_id IN ({{ids}})"
        for chunk in vector_io.chunks(sorted(set(ids))):
            conn.execute(old.format(ids=", ".join("?" * len(chunk))), chunk)
    conn.executemany(
        INSERT_VECTOR,
        (
            (item_id, t, blob)
            for item_id, p in zip(ids, prepared, strict=True)
            for t, blob in p.vectors
        ),
    )
    # The file changed: what was read from it before is stale, whatever its source.
    replace_texts(conn, dict.fromkeys(ids))
    replace_texts(conn, {i: w.text for i, w in zip(ids, writes, strict=True) if w.text})
    conn.executemany(
        INSERT_SHOTS,
        ((item_id, p.cuts) for item_id, p in zip(ids, prepared, strict=True) if p.cuts is not None),
    )
    capture_times.write(conn, zip(ids, (p.taken for p in prepared), strict=True))
    meta.bump_generation(conn)
    return ids


def copy_item(conn: sqlite3.Connection, src_item_id: int, write: ItemWrite) -> int:
    """Store ``write.path`` with the vectors, texts and cuts of ``src_item_id`` copied in
    SQL (`Catalog.copy_item`, which checks ``write`` first); its item id."""
    row = conn.execute(
        f"SELECT {ITEM_COLUMNS} FROM items WHERE id = ?", (int(src_item_id),)
    ).fetchone()
    if row is None or row[7] != "ok":
        raise NotFoundError(f"item {src_item_id} is not an indexed item; cannot reuse its vectors")
    src = ItemRecord.from_row(row)
    if write.kind != src.kind:
        raise UsageError(f"cannot reuse the vectors of a {src.kind} for a {write.kind}")
    filled = dataclasses.replace(
        write,
        width=src.width if write.width is None else write.width,
        height=src.height if write.height is None else write.height,
        duration=src.duration if write.duration is None else write.duration,
    )
    item_id = upsert_item(conn, item_row(filled, src.frame_count), write.path, time.time())
    if item_id != src.id:
        conn.execute("DELETE FROM vectors WHERE item_id = ?", (item_id,))
        conn.execute(
            "INSERT INTO vectors (item_id, t, vector) "
            "SELECT ?, t, vector FROM vectors WHERE item_id = ? ORDER BY id",
            (item_id, src.id),
        )
        copy_texts(conn, src.id, item_id)
        conn.execute("DELETE FROM shots WHERE item_id = ?", (item_id,))
        conn.execute(
            "INSERT INTO shots (item_id, cuts) SELECT ?, cuts FROM shots WHERE item_id = ?",
            (item_id, src.id),
        )
    capture_times.write(conn, [(item_id, write.taken)])
    meta.bump_generation(conn)
    return item_id


def delete_items(conn: sqlite3.Connection, ids: Sequence[int]) -> int:
    """Delete items by id (their rows in other tables cascade); how many existed. The
    generation is bumped only if that is > 0."""
    deleted = 0
    for chunk in vector_io.chunks(list(ids)):
        cur = conn.execute(f"DELETE FROM items WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
        deleted += cur.rowcount
    if deleted:
        meta.bump_generation(conn)
    return deleted
