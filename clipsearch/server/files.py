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
import re
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


_RANGE_SPEC = re.compile(r"([0-9]+)-([0-9]*)|-([0-9]+)")
_MALFORMED_RANGE = "malformed Range header: use bytes=START-END, bytes=START- or bytes=-LENGTH"


def check_range(header: str | None, size: int) -> None:
    """Refuse a ``Range`` header that is not exactly RFC 9110 §14.1.2, with a JSON body.

    Accepted: ``bytes=`` then a comma-separated list (spaces around the commas allowed) of
    ``a-b``, ``a-`` and ``-n``, where a, b and n are ASCII digits only — not ``1_0`` or
    ``+1``, which Python's int() would take. Anything else is 400 ``bad_range`` (the
    message never repeats the header); a first byte at or past the end, or an empty
    suffix, is 416 with ``Content-Range: bytes */size``. A valid header passes and
    Starlette's FileResponse answers 206 with the partial content (verified in the tests).
    """
    if header is None:
        return
    units, sep, spec = header.partition("=")
    if not sep or units.strip().lower() != "bytes":
        raise ApiError(400, "bad_range", _MALFORMED_RANGE)
    parts = [p.strip(" \t") for p in spec.split(",")]
    parts = [p for p in parts if p]  # the list syntax allows empty elements
    if not parts:
        raise ApiError(400, "bad_range", _MALFORMED_RANGE)
    if len(parts) > 100:
        return  # FileResponse ignores the header and sends the whole file
    ranges: list[tuple[int, int]] = []
    for part in parts:
        m = _RANGE_SPEC.fullmatch(part)
        if m is None:
            raise ApiError(400, "bad_range", _MALFORMED_RANGE)
        first, last, suffix = m.groups()
        if suffix is not None:
            ranges.append((max(size - int(suffix), 0), size) if int(suffix) else (size, size))
            continue
        start = int(first)
        if last and int(last) < start:
            raise ApiError(400, "bad_range", f"{_MALFORMED_RANGE} (a range ends before it starts)")
        ranges.append((start, min(int(last) + 1, size) if last else size))
    if any(not 0 <= start < size for start, _ in ranges):
        raise ApiError(
            416,
            "range_not_satisfiable",
            f"the requested range starts past the end of the file ({size} bytes)",
            headers={"Content-Range": f"bytes */{size}"},
        )
