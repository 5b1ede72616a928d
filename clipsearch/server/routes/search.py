"""``/api/search``: text, uploaded images, "more like this", filters, paging.

GET takes the query string (``?q=a+dog&k=20&where=after:2023``); POST takes the same
fields as JSON, or as multipart form fields with one or more ``image`` files. Encoding
runs on the model worker; the search itself in the threadpool; the event loop only
parses and serialises.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from PIL import Image
from pydantic import ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from clipsearch.errors import MediaError, MediaTooLargeError, QueryError, QueryFileRefusedError
from clipsearch.search.choices import POOL_METHODS
from clipsearch.search.engine import decode_side
from clipsearch.server.errors import ApiError
from clipsearch.server.schemas import ERROR_RESPONSES, ErrorOut, SearchRequest, SearchResponse
from clipsearch.server.state import ServerState, get_state

router = APIRouter(tags=["search"])

SEARCH_RESPONSES = {
    **ERROR_RESPONSES,
    404: {"model": ErrorOut, "description": "An item named in `like` is not in the catalog."},
}

MAX_UPLOADS = 4
MAX_FORM_FIELDS = 64


class SearchQueryParams(SearchRequest):
    """SearchRequest read from the query string; unknown parameters (``token``) are ignored."""

    model_config = ConfigDict(extra="ignore")


@router.get(
    "/api/search",
    response_model=SearchResponse,
    responses=SEARCH_RESPONSES,
    summary="Search by text or by example items",
)
async def search_get(
    params: Annotated[SearchQueryParams, Query()],
    state: Annotated[ServerState, Depends(get_state)],
) -> dict[str, Any]:
    """Search with query-string parameters, e.g.
    ``/api/search?q=a+red+car&kind=video&pooling=softmax&where=after:2023-01-01&k=20&offset=0``.
    ``like`` and ``where`` repeat: ``?like=42&like=7``."""
    return await run_search(state, SearchRequest.model_validate(params.model_dump()), [])


_POST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/SearchRequest"},
                "examples": {
                    "text": {"value": {"q": "a dog on a beach", "k": 20}},
                    "composed": {"value": {"q": "in red", "like": [42], "text_weight": 0.5}},
                },
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": f"Up to {MAX_UPLOADS} example images (content-checked).",
                        },
                        "q": {"type": "string"},
                        "text_weight": {"type": "number"},
                        "image_weight": {"type": "number"},
                        "like": {"type": "array", "items": {"type": "integer"}},
                        "k": {"type": "integer"},
                        "offset": {"type": "integer"},
                        "kind": {"type": "string", "enum": ["image", "video"]},
                        "where": {"type": "array", "items": {"type": "string"}},
                        "pooling": {"type": "string", "enum": list(POOL_METHODS)},
                        "moments": {"type": "integer"},
                        "min_score": {"type": "string", "description": "auto, none or a cosine"},
                        "sort": {"type": "string", "enum": ["relevance", "date", "-date"]},
                        "collapse": {"type": "boolean"},
                        "taken_after": {"type": "string"},
                        "taken_before": {"type": "string"},
                        "rerank": {"type": "string", "enum": ["none", "itm"]},
                        "rerank_k": {"type": "integer"},
                        "rerank_score": {"type": "string", "enum": ["fusion", "itm"]},
                        "captions": {"type": "boolean"},
                    },
                },
                "encoding": {"image": {"contentType": "image/*"}},
            },
        },
    }
}


@router.post(
    "/api/search",
    response_model=SearchResponse,
    responses={
        **SEARCH_RESPONSES,
        413: {
            "model": ErrorOut,
            "description": "An upload is larger than the limit, or would take more memory "
            "to decode than the server allows.",
        },
        415: {
            "model": ErrorOut,
            "description": "An upload is not an image, or the body is neither JSON nor multipart.",
        },
    },
    openapi_extra=_POST_BODY,
    summary="Search by text, uploaded images and items (JSON or multipart)",
)
async def search_post(
    request: Request, state: Annotated[ServerState, Depends(get_state)]
) -> dict[str, Any]:
    """The same search as GET, with a JSON body, or a multipart form carrying images.
    A composed query such as "this photo, but in red" is an upload plus ``q``."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        body = await request.body()
        try:
            req = SearchRequest.model_validate_json(body or b"null")
        except ValidationError as e:
            raise RequestValidationError(_with_loc(e, "body")) from None
        return await run_search(state, req, [])
    if ctype == "multipart/form-data":
        form = await request.form(max_files=MAX_UPLOADS, max_fields=MAX_FORM_FIELDS)
        try:
            fields: dict[str, Any] = {}
            uploads: list[UploadFile] = []
            for key in set(form.keys()):
                values = form.getlist(key)
                if key == "image":
                    uploads.extend(v for v in values if isinstance(v, UploadFile))
                    continue
                texts = [v for v in values if isinstance(v, str)]
                if key in ("where", "like"):
                    fields[key] = [v for v in texts if v.strip()]
                elif texts:
                    fields[key] = texts[-1]
            try:
                req = SearchRequest.model_validate(fields)
            except ValidationError as e:
                raise RequestValidationError(_with_loc(e, "form")) from None
            images = [await _read_upload(u, state.max_upload_bytes) for u in uploads]
        finally:
            await form.close()
        return await run_search(state, req, images)
    raise ApiError(
        415,
        "unsupported_media_type",
        "send the search as application/json, or as multipart/form-data with image files",
    )


def _with_loc(error: ValidationError, where: str) -> list[dict[str, Any]]:
    return [{**e, "loc": (where, *e.get("loc", ()))} for e in error.errors(include_url=False)]


async def _read_upload(upload: UploadFile, limit: int) -> tuple[str, bytes]:
    data = await upload.read(limit + 1)
    name = os.path.basename(upload.filename or "upload")
    if len(data) > limit:
        raise ApiError(
            413,
            "payload_too_large",
            f"the uploaded image {name} is larger than the limit of {limit / 2**20:.1f} MiB",
        )
    return name, data


def _upload_decode_cost(name: str, data: bytes, library, limit: int) -> tuple[int, int]:
    """(decode side for the model, bytes decoding the upload will cost), from the
    upload's header; 413 above ``limit``."""
    from clipsearch.media import decode_cost

    min_side = decode_side(library.encoder)
    with _upload_errors(name):
        return min_side, decode_cost(data, min_side=min_side, max_decode_bytes=limit)


def _decode_upload(name: str, data: bytes, min_side: int, limit: int):
    from clipsearch.media import load_image

    with _upload_errors(name):
        return load_image(data, min_side=min_side, max_decode_bytes=limit).image


@contextmanager
def _upload_errors(name: str) -> Iterator[None]:
    try:
        yield
    except MediaTooLargeError as e:
        raise ApiError(
            413, "payload_too_large", f"the uploaded image {name} is too large: {e}"
        ) from None
    except MediaError as e:
        raise ApiError(
            415, "unsupported_media_type", f"the upload {name} is not an image we can read: {e}"
        ) from None


async def decode_uploads(state: ServerState, uploads: list[tuple[str, bytes]]) -> list[Image.Image]:
    """Decode uploads one after another, each within the server's decode budget."""
    budget = state.decode_budget
    images = []
    for name, data in uploads:
        # In the threadpool: library.encoder takes the library's lock, which a search may
        # hold, and the event loop must never wait on it.
        min_side, cost = await run_in_threadpool(
            _upload_decode_cost, name, data, state.library, budget.per_decode_bytes
        )
        async with budget.hold(cost):
            images.append(
                await run_in_threadpool(
                    _decode_upload, name, data, min_side, budget.per_decode_bytes
                )
            )
    return images


async def run_search(
    state: ServerState, req: SearchRequest, uploads: list[tuple[str, bytes]]
) -> dict[str, Any]:
    """Check the request's parts, encode them, combine them (`Library.query_parts`), search,
    and shape the response."""
    t0 = time.perf_counter()
    library = state.library
    images = []
    if uploads:
        state.require_model()
        images = await decode_uploads(state, uploads)
    try:
        parts = await run_in_threadpool(
            lambda: library.query_parts(
                req.q,
                images=images,
                like=req.like,
                text_weight=req.text_weight,
                image_weight=req.image_weight,
                like_weight=req.like_weight,
                files=False,  # a remote client's string is never read as a path on this disk
            )
        )
    except QueryFileRefusedError:
        raise QueryError(
            "the server does not read query files by path: upload the image instead, "
            "or put the text in quotes"
        ) from None
    state.require_model()
    term_vectors = image_vectors = None
    if parts.plan is not None:  # batched with other requests' texts on the model thread
        term_vectors = await state.worker.encode_texts([t.value for t in parts.plan.terms])
    if parts.images:
        # Not library.encoder on the event loop: the property takes the library's lock,
        # which a search may hold, and the event loop must never wait on it.
        image_vectors = await state.worker.call(
            lambda: library.encoder.encode_images(list(parts.images))
        )  # (U, D)
    q = parts.combine(term_vectors, image_vectors)
    hits = await state.run_search(
        lambda: library.search(
            vector=q,
            k=req.k,
            offset=req.offset,
            kind=req.kind,
            where=list(req.where),
            pooling=req.pooling,
            tau=req.tau,
            with_curve=req.with_curve,
            plan=parts.plan,
            text_match=req.text_match,
            phrases=req.phrases,
            moments=req.moments,
            min_score=req.min_score,
            sort=req.sort,
            collapse=req.collapse,
            taken_after=req.taken_after,
            taken_before=req.taken_before,
            rerank=req.rerank,
            rerank_k=req.rerank_k,
            rerank_score=req.rerank_score,
            with_captions=req.captions,
        )
    )
    out = [hit_out(h) for h in hits]
    return {
        "hits": out,
        "count": len(out),
        "k": req.k,
        "offset": req.offset,
        "next_offset": req.offset + len(out) if len(out) == req.k else None,
        "took_ms": round((time.perf_counter() - t0) * 1000, 2),
        "min_score": None if hits.min_score is None else round(float(hits.min_score), 6),
    }


def hit_out(hit) -> dict[str, Any]:
    d = hit.to_dict()
    if hit.members is not None:
        for member, out in zip(hit.members, d["members"], strict=True):
            _links(member.hit, out)
    return _links(hit, d)


def _links(hit, d: dict[str, Any]) -> dict[str, Any]:
    """Add the file name, thumbnail and media URLs to a hit's (or member's) JSON."""
    d["name"] = os.path.basename(hit.path)
    base = f"/api/items/{hit.item_id}"
    for m in [d["moment"], *d["moments"]] if d.get("moments") else []:
        m["thumb_url"] = f"{base}/thumb?t={m['best_t']}"
    moment = d.get("moment")
    d["thumb_url"] = moment["thumb_url"] if moment else f"{base}/thumb"
    d["media_url"] = f"{base}/media"
    return d
