"""SQL for the ``capture_times`` table (migration m004_capture_time): when each item was taken.

One row per item: ``taken_ns`` (unix ns, UTC), ``offset_min`` (the local UTC offset where
it was taken, when the file says) and ``source`` (exif | container | mtime). A missing row
means "not read yet" (an item indexed before the table existed): readers fall back to
the item's mtime, and ``index`` fills the row without encoding the file again.

`TAKEN_SQL` is the item's capture time in ns for SQL over ``items AS i`` (filters, date
order): the stored one, else the mtime.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence

from clipsearch.media.capture_time import TAKEN_SOURCES, CaptureTime
from clipsearch.store import vector_io

TAKEN_SQL = "COALESCE((SELECT c.taken_ns FROM capture_times c WHERE c.item_id = i.id), i.mtime_ns)"
_UPSERT = (
    "INSERT OR REPLACE INTO capture_times (item_id, taken_ns, offset_min, source) "
    "VALUES (?, ?, ?, ?)"
)


def write(conn: sqlite3.Connection, rows: Iterable[tuple[int, CaptureTime | None]]) -> None:
    """Store each item's capture time; None deletes a stale one (inside the caller's
    transaction)."""
    keep: list[tuple[int, int, int | None, str]] = []
    drop: list[int] = []
    for item_id, taken in rows:
        if taken is None:
            drop.append(int(item_id))
        else:
            keep.append((int(item_id), int(taken.ns), taken.offset_min, taken.source))
    if keep:
        conn.executemany(_UPSERT, keep)
    for chunk in vector_io.chunks(drop):
        conn.execute(
            f"DELETE FROM capture_times WHERE item_id IN ({', '.join('?' * len(chunk))})", chunk
        )


def read(conn: sqlite3.Connection, item_ids: Sequence[int]) -> dict[int, CaptureTime]:
    """item id -> its stored capture time; items without a row are absent."""
    sql = "SELECT item_id, taken_ns, offset_min, source FROM capture_times WHERE item_id IN ({ids})"
    return {
        int(i): CaptureTime(int(ns), None if off is None else int(off), src)
        for i, ns, off, src in vector_io.select_in(conn, sql, item_ids)
    }


def undated(conn: sqlite3.Connection, root_id: int) -> set[int]:
    """Ids of the ok items under a root that have no capture time yet."""
    return {
        int(i)
        for (i,) in conn.execute(
            "SELECT i.id FROM items i WHERE i.root_id = ? AND i.status = 'ok' "
            "AND NOT EXISTS (SELECT 1 FROM capture_times c WHERE c.item_id = i.id)",
            (int(root_id),),
        )
    }


def coverage(conn: sqlite3.Connection) -> dict[str, int]:
    """How many ok items have their capture time from each source, and how many have none
    read yet ("unread": indexed before capture times were recorded)."""
    counts = dict.fromkeys((*TAKEN_SOURCES, "unread"), 0)
    for source, n in conn.execute(
        "SELECT COALESCE(c.source, 'unread'), count(*) FROM items i "
        "LEFT JOIN capture_times c ON c.item_id = i.id WHERE i.status = 'ok' GROUP BY 1"
    ):
        counts[str(source)] = int(n)
    return counts


def existing(conn: sqlite3.Connection, times: Mapping[int, CaptureTime]) -> list[int]:
    """The ids of ``times`` that are still items (a file may go between read and write)."""
    sql = "SELECT id FROM items WHERE id IN ({ids})"
    return [int(i) for (i,) in vector_io.select_in(conn, sql, list(times))]
