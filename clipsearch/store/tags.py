"""The ``tags`` table: zero-shot labels and user tags per item, from named sources.

Small SQL helpers that `Catalog` runs inside its own transactions; each takes the open
connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence

from clipsearch.store import vector_io


def replace(conn: sqlite3.Connection, tags: Mapping[int, Mapping[str, float]], source: str) -> None:
    """Replace the tags from ``source`` of the given items (item id -> {tag: score}),
    lower-cased (`Catalog.set_tags`)."""
    for item_id, scores in tags.items():
        conn.execute("DELETE FROM tags WHERE item_id = ? AND source = ?", (int(item_id), source))
        conn.executemany(
            "INSERT OR REPLACE INTO tags (item_id, tag, score, source) VALUES (?, ?, ?, ?)",
            [(int(item_id), tag.lower(), float(s), source) for tag, s in scores.items()],
        )


def read(conn: sqlite3.Connection, item_ids: Sequence[int]) -> dict[int, dict[str, float]]:
    """item id -> {tag: best score over sources}; items without tags are absent."""
    sql = "SELECT item_id, tag, max(score) FROM tags WHERE item_id IN ({ids}) GROUP BY item_id, tag"
    out: dict[int, dict[str, float]] = {}
    for item, tag, score in vector_io.select_in(conn, sql, item_ids):
        out.setdefault(item, {})[tag] = float(score)
    return out


def tagged(conn: sqlite3.Connection) -> dict[int, tuple[str, ...]]:
    """item id -> its tags (sorted, over all sources) for every item that has any."""
    out: dict[int, list[str]] = {}
    for item, tag in conn.execute("SELECT DISTINCT item_id, tag FROM tags ORDER BY item_id, tag"):
        out.setdefault(int(item), []).append(tag)
    return {item: tuple(tags) for item, tags in out.items()}
