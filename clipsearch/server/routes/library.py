"""``/api/status`` and ``/api/index``: what the library holds, and indexing from the page.

Indexing names folders on the server's disk, so it is the one place a client sends a
path. The path is only ever handed to the indexer (which walks media files under it);
when the server is exposed without a token, only folders the library already indexes
may be re-indexed (``allow_new_roots=False``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from clipsearch.errors import NotFoundError
from clipsearch.ingest import IndexOptions
from clipsearch.server.errors import ApiError
from clipsearch.server.jobs import JobConflict
from clipsearch.server.schemas import (
    ERROR_RESPONSES,
    ErrorOut,
    IndexProgressOut,
    IndexRequest,
    StatusOut,
)
from clipsearch.server.state import ServerState, get_state

router = APIRouter(tags=["library"])


@router.get(
    "/api/status", response_model=StatusOut, responses=ERROR_RESPONSES, summary="Library status"
)
async def status(state: Annotated[ServerState, Depends(get_state)]) -> dict[str, Any]:
    """Counts by kind and status, failed files with reasons, the model, indexed folders,
    and whether an indexing job runs."""

    def collect() -> dict[str, Any]:
        library = state.library
        st = library.status(failures=20).to_dict()
        model = st.get("model")  # the catalog's stats put the binding here as a dict
        st["model"] = model.get("spec") if isinstance(model, dict) else model or library.model_spec
        st["roots"] = [path for _, path in library.catalog.roots()]
        return st

    st = await run_in_threadpool(collect)
    st.update(
        model_loaded=state.model_loaded,
        model_loading=state.model_loading and not state.model_loaded,
        model_error=state.model_error,
        indexing=state.jobs.running,
        can_index_new_folders=state.allow_new_roots,
    )
    return st


@router.get("/api/index", response_model=IndexProgressOut, summary="Indexing progress")
async def index_progress(state: Annotated[ServerState, Depends(get_state)]) -> dict[str, Any]:
    """The running (or last) indexing job: found, to encode, done, failed, files/s."""
    return state.jobs.snapshot()


@router.post(
    "/api/index",
    response_model=IndexProgressOut,
    status_code=202,
    responses={
        **ERROR_RESPONSES,
        403: {"model": ErrorOut, "description": "New folders may not be indexed from this client."},
        404: {"model": ErrorOut, "description": "A folder does not exist on the server."},
        409: {"model": ErrorOut, "description": "An indexing job is already running."},
    },
    summary="Start indexing folders in the background",
)
async def index_start(
    req: Annotated[IndexRequest, Body()],
    state: Annotated[ServerState, Depends(get_state)],
) -> JSONResponse:
    """Start indexing (incremental: unchanged files cost a stat). One job at a time;
    poll GET /api/index for progress. Searches keep working meanwhile."""
    state.require_model()
    roots = await run_in_threadpool(_check_roots, state, req.roots)
    options = IndexOptions(
        include=tuple(req.include),
        exclude=tuple(req.exclude),
        hidden=req.hidden,
        video_sampler=req.video_sampler,
        retry_failed=req.retry_failed,
        ocr=req.ocr,
        ocr_frames=req.ocr_frames,
    )
    if req.video_sampler != "auto":
        from clipsearch.media.sampling import FrameSampler

        FrameSampler.parse(req.video_sampler)  # UsageError -> 400 now, not in the job
    try:
        progress = state.jobs.start(roots, options)
    except JobConflict:
        raise ApiError(
            409,
            "index_running",
            "an indexing job is already running; wait for it to finish or stop it (DELETE /api/index)",
        ) from None
    return JSONResponse(progress, status_code=202)


@router.delete("/api/index", response_model=IndexProgressOut, summary="Stop indexing")
async def index_stop(state: Annotated[ServerState, Depends(get_state)]) -> dict[str, Any]:
    """Ask the running job to stop after the batch in flight; indexing again resumes."""
    return state.jobs.stop()


def _check_roots(state: ServerState, requested: list[str]) -> list[str]:
    known = [path for _, path in state.library.catalog.roots()]
    if not requested:
        if not known:
            raise ApiError(400, "bad_request", "this library has no folders yet: name one to index")
        return known
    known_real = {os.path.realpath(p) for p in known}
    roots = []
    for raw in requested:
        if not raw.strip() or "\0" in raw:
            raise ApiError(400, "bad_request", "a folder name is empty or malformed")
        expanded = os.path.expanduser(raw.strip())
        if not os.path.isabs(expanded):
            # It would resolve against the server's working directory, which the client
            # neither knows nor should learn.
            raise ApiError(
                400,
                "bad_request",
                f"give the folder as an absolute path (from / or ~), not {_shown(raw)}",
            )
        path = Path(os.path.normpath(expanded))
        if not state.allow_new_roots and os.path.realpath(path) not in known_real:
            raise ApiError(
                403,
                "forbidden",
                "this server only re-indexes the folders it already knows (start it with a "
                "--token to index new folders from the page)",
            )
        try:
            path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"folder not found on the server: {path}") from None
        except OSError as e:  # ENAMETOOLONG, ELOOP, EACCES...
            reason = (e.strerror or type(e).__name__).lower()
            raise ApiError(
                400, "bad_request", f"cannot use the folder {_shown(raw)}: {reason}"
            ) from None
        roots.append(str(path))
    return roots


def _shown(raw: str, limit: int = 80) -> str:
    """A client's path for an error message, cut short."""
    text = raw.strip()
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")
