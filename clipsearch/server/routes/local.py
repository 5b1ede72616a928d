"""``POST /api/local/search``: the search a `clipsearch search` command hands to a running
server of its library (the warm path, `clipsearch.server.discovery`).

It takes the command's own options (``--exact``, ``--rerank``, ``--tau``... which the public
``/api/search`` does not offer) and runs the very call the command would run in its own
process (`Library.search` with the query text), so the answer is the same; only the
model and the index are already in memory. It needs the discovery file's token (the
server's ``--token`` when it has one, else one made for the file), is left out of the
OpenAPI schema, and never reads files named in the query.

With ``render`` (the command's terminal, `clipsearch.cli.terminal.describe`) and a server
started by ``clipsearch serve``, the answer is what the command prints,
``{"stdout": ..., "stderr": ...}``, so the command need not import Rich to draw the table;
otherwise ``{"hits": [...], "min_score": ...}``.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from clipsearch.errors import QueryError, QueryFileRefusedError
from clipsearch.media.scan import MediaKind
from clipsearch.search.choices import MAX_K, MAX_MOMENTS, Pooling, RerankMethod, SortOrder
from clipsearch.server.errors import ApiError
from clipsearch.server.state import ServerState, get_state

router = APIRouter(include_in_schema=False)


TerminalSide = Annotated[int, Field(ge=0, le=10_000)]


class RenderRequest(BaseModel):
    """How the command prints and on what terminal (`clipsearch.cli.terminal.describe`)."""

    model_config = ConfigDict(extra="forbid")

    json_: bool = Field(False, alias="json")
    dates: bool = False
    duplicates: bool = False
    stdout_tty: bool = False
    stderr_tty: bool = False
    stdout_encoding: str = Field("utf-8", max_length=64)
    stderr_encoding: str = Field("utf-8", max_length=64)
    size: tuple[TerminalSide, TerminalSide] | None = None  # columns, rows (0: unknown)
    environ: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=256)]] = (
        Field(default_factory=dict, max_length=32)
    )


class LocalSearchRequest(BaseModel):
    """The options of ``clipsearch search QUERY`` (see `clipsearch.cli.app.search`)."""

    model_config = ConfigDict(extra="forbid")

    q: str = Field(min_length=1, max_length=4000)
    k: int = Field(20, ge=1, le=MAX_K)
    offset: int = Field(0, ge=0)
    kind: MediaKind | None = None
    where: list[str] = Field(default_factory=list, max_length=64)
    pooling: Pooling = "peak"
    tau: float | None = None
    moments: int = Field(1, ge=1, le=MAX_MOMENTS)
    exact: bool = False
    rerank: RerankMethod = "none"
    gap_correction: Literal["shift", "center"] | None = None
    text_match: bool | None = None
    phrases: bool | None = None
    min_score: str = Field("auto", max_length=64)
    sort: SortOrder = "relevance"
    collapse: bool = False
    taken_after: str | None = Field(None, max_length=64)
    taken_before: str | None = Field(None, max_length=64)
    render: RenderRequest | None = None


@router.post("/api/local/search")
async def local_search(
    req: Annotated[LocalSearchRequest, Body()],
    request: Request,
    state: Annotated[ServerState, Depends(get_state)],
) -> dict[str, Any]:
    expected = state.local_token
    given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if not expected or not secrets.compare_digest(given.encode(), expected.encode()):
        raise ApiError(403, "forbidden", "this route takes the token of the discovery file")
    library = state.library

    def check() -> None:
        from clipsearch.search.query import parse_query

        try:
            parse_query(req.q, files=False)
        except QueryFileRefusedError:
            raise QueryError("the server does not read query files by path") from None

    await run_in_threadpool(check)
    state.require_model()
    render = state.render_search if req.render is not None else None

    def search() -> dict[str, Any]:
        # the request's fields are Library.search's keyword arguments, by name
        hits = library.search(req.q, **req.model_dump(exclude={"q", "render"}))
        if render is not None:
            return render(hits, req.render.model_dump(by_alias=True))
        # to_dict carries every field Hit.from_dict needs (moments with their scores included)
        return {"hits": [h.to_dict() for h in hits], "min_score": hits.min_score}

    return await state.run_search(search)
