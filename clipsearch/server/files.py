"""Which file an item id may serve, and HTTP byte ranges (docs/server.md#safety).

The server never opens a path a client sends. A media or thumbnail request names an item
id; the file is served only if

1. the catalog knows the id (a deleted or swept item is 404),
2. the item's path, with every symlink resolved, lies inside one of the library's
   indexed roots (each root resolved too): a symlink that points out of the roots is
   refused (403) even though the indexer may have followed it,
3. the resolved file still exists and is a regular file (404 otherwise).

Between this check and the open, a local user could still swap a path component for a
symlink; the server protects against remote clients, not against the machine's own users.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from clipsearch.server.errors import ApiError
from clipsearch.store.records import ItemRecord


@dataclass(frozen=True)
class ItemFile:
    """An item and the real file it may serve."""

    record: ItemRecord
    real_path: Path  # symlinks resolved, inside an indexed root
    stat: os.stat_result


def item_or_404(catalog, item_id: int) -> ItemRecord:
    record = catalog.item(item_id)
    if record is None:
        raise ApiError(404, "not_found", f"no item with id {item_id} in this library")
    return record


def _inside(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives (Windows)
        return False


def resolve_item_file(catalog, item_id: int) -> ItemFile:
    """The servable file of ``item_id``, or an ApiError (404 unknown/gone, 403 outside roots)."""
    record = item_or_404(catalog, item_id)
    real = os.path.realpath(record.path)
    roots = [os.path.realpath(path) for _, path in catalog.roots()]
    if not any(_inside(real, root) for root in roots):
        raise ApiError(
            403,
            "outside_roots",
            f"item {item_id} resolves to a file outside the library's indexed folders "
            "(a symlink pointing elsewhere?); it is not served",
        )
    try:
        st = os.stat(real)
    except OSError:
        raise ApiError(
            404,
            "file_gone",
            f"the file of item {item_id} is no longer on disk ({record.path}); "
            "index the folder again to sweep it",
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise ApiError(404, "file_gone", f"the path of item {item_id} is no longer a regular file")
    return ItemFile(record=record, real_path=Path(real), stat=st)


def check_range(header: str | None, size: int) -> None:
    """Refuse a ``Range`` header Starlette's FileResponse would refuse, with a JSON body.

    Mirrors RFC 9110 §14 as FileResponse implements it: ``bytes=a-b``, ``bytes=a-``,
    ``bytes=-n`` and comma-separated lists. Malformed -> 400 ``bad_range``; a first byte at
    or past the end -> 416 with ``Content-Range: bytes */size``. A valid header passes and
    FileResponse answers 206 with the partial content (verified in the tests).
    """
    if header is None:
        return
    units, sep, spec = header.partition("=")
    if not sep or units.strip().lower() != "bytes":
        raise ApiError(400, "bad_range", f"malformed Range header {header!r}: use bytes=START-END")
    parts = [p.strip() for p in spec.split(",")]
    if len(parts) > 100:
        return  # FileResponse ignores the header and sends the whole file
    ranges: list[tuple[int, int]] = []
    for part in parts:
        if not part or part == "-" or "-" not in part:
            continue
        a, _, b = (s.strip() for s in part.partition("-"))
        try:
            start = int(a) if a else max(size - int(b), 0)
            end = int(b) + 1 if a and b and int(b) < size else size
        except ValueError:
            continue
        ranges.append((start, end))
    if not ranges:
        raise ApiError(400, "bad_range", f"malformed Range header {header!r}: no byte range in it")
    if any(not 0 <= start < size for start, _ in ranges):
        raise ApiError(
            416,
            "range_not_satisfiable",
            f"the requested range starts past the end of the file ({size} bytes)",
            headers={"Content-Range": f"bytes */{size}"},
        )
    if any(start >= end for start, end in ranges):
        raise ApiError(400, "bad_range", f"malformed Range header {header!r}: start after end")
