"""``/api/items/{id}``: metadata, thumbnail, and the media file itself.

Only item ids are accepted (an int path parameter: ``../etc/passwd`` is not an id); the
file served is the catalog's, checked by `clipsearch.server.files.resolve_item_file`.
"""

from __future__ import annotations

import mimetypes
import os
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from clipsearch.server.files import check_range, item_or_404, resolve_item_file
from clipsearch.server.schemas import ERROR_RESPONSES, MAX_ITEM_ID, ErrorOut, ItemOut
from clipsearch.server.state import ServerState, get_state
from clipsearch.server.thumbs import DEFAULT_SIZE, SIZES

router = APIRouter(tags=["items"])

ItemId = Annotated[
    int, Path(ge=1, le=MAX_ITEM_ID, description="Item id from a search hit.", examples=[42])
]
FILE_RESPONSES = {
    **ERROR_RESPONSES,
    403: {"model": ErrorOut, "description": "The file resolves outside the indexed folders."},
    404: {"model": ErrorOut, "description": "Unknown id, or the file is gone from disk."},
}

# Formats browsers play or show, for files whose suffix mimetypes does not know.
_EXTRA_TYPES = {
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
    ".heic": "image/heic",
    ".avif": "image/avif",
}


@router.get(
    "/api/items/{item_id}",
    response_model=ItemOut,
    responses=FILE_RESPONSES,
    summary="Item metadata",
)
async def item(
    item_id: ItemId, state: Annotated[ServerState, Depends(get_state)]
) -> dict[str, Any]:
    """What the catalog knows about an item (also for items that failed to index)."""
    return await run_in_threadpool(_item_out, state, item_id)


def _item_out(state: ServerState, item_id: int) -> dict[str, Any]:
    catalog = state.library.catalog
    r = item_or_404(catalog, item_id)
    roots = dict(catalog.roots())
    base = f"/api/items/{r.id}"
    return {
        "item_id": r.id,
        "path": r.path,
        "name": os.path.basename(r.path),
        "kind": r.kind,
        "status": r.status,
        "error": r.error,
        "size": r.size,
        "mtime": datetime.fromtimestamp(r.mtime_ns / 1e9, tz=UTC).isoformat(timespec="seconds"),
        "width": r.width,
        "height": r.height,
        "duration": r.duration,
        "frame_count": r.frame_count,
        "root": roots.get(r.root_id) if r.root_id is not None else None,
        "thumb_url": f"{base}/thumb",
        "media_url": f"{base}/media",
    }


@router.get(
    "/api/items/{item_id}/thumb",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "A JPEG, upright."},
        **FILE_RESPONSES,
        413: {
            "model": ErrorOut,
            "description": "The image has more pixels than the decompression-bomb guard allows.",
        },
        422: {"model": ErrorOut, "description": "The file cannot be decoded."},
    },
    summary="Thumbnail (cached on disk)",
)
async def thumb(
    item_id: ItemId,
    state: Annotated[ServerState, Depends(get_state)],
    size: Annotated[
        int,
        Query(ge=16, le=4096, description=f"Shorter side in pixels; snapped up to one of {SIZES}."),
    ] = DEFAULT_SIZE,
    t: Annotated[
        float | None,
        Query(ge=0, le=1e7, description="Videos: the time in seconds (a hit's moment.best_t)."),
    ] = None,
) -> FileResponse:
    """A JPEG thumbnail, generated on first request and then served from
    ``<library>/thumbs/``. ``X-Thumbnail-Cache: hit`` tells a cached one."""

    def find():
        f = resolve_item_file(state.library.catalog, item_id)
        return f, state.thumbs.find(f, size=size, t=t)

    f, th = await run_in_threadpool(find)
    if th is None:
        cost = await run_in_threadpool(state.thumbs.decode_cost, f, size=size)
        async with state.decode_budget.hold(cost):
            th = await run_in_threadpool(state.thumbs.get, f, size=size, t=t)
    return FileResponse(
        th.path,
        media_type="image/jpeg",
        headers={
            "Cache-Control": "private, max-age=86400",
            "X-Thumbnail-Cache": "hit" if th.cached else "miss",
        },
    )


@router.get(
    "/api/items/{item_id}/media",
    response_class=FileResponse,
    responses={
        200: {"description": "The whole file."},
        206: {"description": "Partial content for a Range request (video seeking)."},
        **FILE_RESPONSES,
        416: {"model": ErrorOut, "description": "The range starts past the end of the file."},
    },
    summary="The original file, with HTTP Range support",
)
async def media(
    item_id: ItemId, request: Request, state: Annotated[ServerState, Depends(get_state)]
) -> FileResponse:
    """The indexed file as it is on disk, for the page's viewer and video player.
    Supports ``Range: bytes=START-END`` (206) so browsers can seek in videos."""
    f = await run_in_threadpool(resolve_item_file, state.library.catalog, item_id)
    check_range(request.headers.get("range"), f.stat.st_size)
    suffix = f.real_path.suffix.lower()
    media_type = _EXTRA_TYPES.get(suffix) or mimetypes.guess_type(f.real_path.name)[0]
    return FileResponse(
        f.real_path,
        stat_result=f.stat,
        media_type=media_type or "application/octet-stream",
        headers={"Cache-Control": "private, max-age=3600", "Content-Disposition": "inline"},
    )
