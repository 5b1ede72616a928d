"""Every failure leaves the server as ``{"error": {"code": ..., "message": ...}}``.

The library raises typed `ClipsearchError`s; this module maps each to an HTTP status and
a stable machine-readable ``code`` (the page and scripts switch on it), keeps the
library's message (written for users), and turns anything unexpected into a 500 whose
body says to look at the server log, never a traceback.

| error                                    | status | code                  |
|------------------------------------------|--------|-----------------------|
| QueryError (bad query, filter clause)    | 400    | invalid_query         |
| UsageError (bad option value)            | 400    | bad_request           |
| request validation (pydantic)            | 422    | validation_error      |
| NotFoundError, unknown id or route       | 404    | not_found             |
| ModelMismatchError                       | 409    | model_mismatch        |
| ModelError, MissingDependencyError       | 503    | model_unavailable / missing_dependency |
| MediaTooLargeError                       | 413    | payload_too_large     |
| MediaError                               | 422    | media_error           |
| DiskFullError                            | 507    | disk_full             |
| LibraryError                             | 503    | library_unavailable   |
| EngineError (Milvus server, Ray cluster) | 503    | engine_unavailable    |
| anything else                            | 500    | internal_error        |
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from clipsearch.errors import (
    ClipsearchError,
    DiskFullError,
    EngineError,
    LibraryError,
    MediaError,
    MediaTooLargeError,
    MissingDependencyError,
    ModelError,
    ModelMismatchError,
    NotFoundError,
    QueryError,
    UsageError,
)

log = logging.getLogger("clipsearch.server")

# Status -> default code for HTTP errors raised without one (unknown route, wrong method).
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "validation_error",
    500: "internal_error",
    503: "unavailable",
}

# Most specific first: the first isinstance match wins.
_CLIPSEARCH_MAP: tuple[tuple[type[ClipsearchError], int, str], ...] = (
    (QueryError, 400, "invalid_query"),
    (UsageError, 400, "bad_request"),
    (NotFoundError, 404, "not_found"),
    (ModelMismatchError, 409, "model_mismatch"),
    (MissingDependencyError, 503, "missing_dependency"),
    (ModelError, 503, "model_unavailable"),
    (MediaTooLargeError, 413, "payload_too_large"),
    (MediaError, 422, "media_error"),
    (DiskFullError, 507, "disk_full"),
    (LibraryError, 503, "library_unavailable"),
    (EngineError, 503, "engine_unavailable"),
)


class ApiError(Exception):
    """An error the server itself raises with a chosen status and code."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(
    status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)


def status_for(error: ClipsearchError) -> tuple[int, str]:
    """The (HTTP status, code) a library error is answered with."""
    for cls, status, code in _CLIPSEARCH_MAP:
        if isinstance(error, cls):
            return status, code
    return 500, "clipsearch_error"


def _validation_message(errors: list[dict[str, Any]]) -> str:
    """One readable line from pydantic errors: ``k: Input should be ≤ 10000; q: ...``."""
    parts = []
    for e in errors[:5]:
        loc = [str(x) for x in e.get("loc", ()) if x not in ("query", "body", "path", "form")]
        where = ".".join(loc)
        msg = e.get("msg", "invalid value")
        if e.get("type") == "json_invalid":
            msg = f"the request body is not valid JSON ({e.get('ctx', {}).get('error', msg)})"
            where = ""
        parts.append(f"{where}: {msg}" if where else msg)
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the JSON shape above."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, headers=exc.headers)

    @app.exception_handler(ClipsearchError)
    async def _lib(request: Request, exc: ClipsearchError) -> JSONResponse:
        status, code = status_for(exc)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        return error_response(status, code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        details = [
            {"loc": [str(x) for x in e.get("loc", ())], "msg": e.get("msg"), "type": e.get("type")}
            for e in errors
        ]
        return error_response(422, "validation_error", _validation_message(errors), details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this response is sent, so the server logs the traceback.
        return error_response(
            500, "internal_error", "internal server error; the details are in the server log"
        )
