"""`create_app`: the FastAPI application over one `Library`.

    >>> from clipsearch import Library                       # doctest: +SKIP
    >>> from clipsearch.server import create_app             # doctest: +SKIP
    >>> app = create_app(Library("~/lib"), token="s3cret")   # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)        # doctest: +SKIP

Layout: `routes.search` (``/api/search``), `routes.items` (metadata, thumbnails, media),
`routes.library` (status, indexing), the page at ``/`` with its files under
``/static``, and the OpenAPI schema at ``/api/openapi.json``. The interactive docs pages
are off: they load scripts from a CDN, which the page's CSP forbids (docs/server.md#safety).

Concurrency: the model is loaded once, at startup, on the model worker thread
(`worker.ModelWorker`), which then runs every encoder call; catalog reads, searches,
thumbnails and uploads' decoding run in the threadpool (decodes within a server-wide
memory budget, `decode_budget`); indexing runs in its own thread
(`jobs.IndexJobs`). The event loop only routes and serialises.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipsearch.errors import ClipsearchError, MissingDependencyError

try:
    from fastapi import FastAPI
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles
except ImportError as e:  # pragma: no cover - the [server] extra is missing
    raise MissingDependencyError(e.name or "fastapi", "server") from e

from clipsearch.server.decode_budget import (
    DEFAULT_PER_DECODE_BYTES,
    DEFAULT_TOTAL_BYTES,
    DecodeBudget,
)
from clipsearch.server.errors import install_error_handlers
from clipsearch.server.jobs import IndexJobs
from clipsearch.server.methods import HttpMethods
from clipsearch.server.routes import items as items_routes
from clipsearch.server.routes import library as library_routes
from clipsearch.server.routes import local as local_routes
from clipsearch.server.routes import search as search_routes
from clipsearch.server.security import LOOPBACK_HOSTS, HttpGuard
from clipsearch.server.state import ServerState
from clipsearch.server.thumbs import ThumbnailCache
from clipsearch.server.worker import ModelWorker

if TYPE_CHECKING:
    from clipsearch.library import Library
    from clipsearch.search.hits import SearchResults

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = 20 * 2**20
FORM_OVERHEAD_BYTES = 256 * 1024  # multipart boundaries and the other form fields

API_DESCRIPTION = """\
Search your own images and videos by text or by example (CLIP).

Every error is `{"error": {"code": "...", "message": "..."}}` with a fitting status.
Every GET endpoint also answers HEAD (headers only); OPTIONS lists a path's methods.
When the server runs with a token, send `Authorization: Bearer <token>` (or `?token=`
on GET requests, e.g. in `<img>` URLs).
"""


def _document_search_body(app: FastAPI) -> None:
    """POST /api/search parses its body itself (JSON or multipart), so FastAPI does not see
    the SearchRequest model; add it to the schema's components for the $ref to resolve."""
    from clipsearch.server.schemas import SearchRequest

    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.setdefault(
                "SearchRequest",
                SearchRequest.model_json_schema(ref_template="#/components/schemas/{model}"),
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(
    library: Library,
    *,
    token: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_decode_bytes: int = DEFAULT_PER_DECODE_BYTES,
    decode_budget_bytes: int = DEFAULT_TOTAL_BYTES,
    allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS,
    allow_new_roots: bool = True,
    thumbs_dir: Path | str | None = None,
    batch_text_queries: bool = True,
    search_threads: int = 1,
    preload_model: bool = True,
    load_in_background: bool = False,
    local_token: str | None = None,
    render_search: Callable[[SearchResults, dict[str, Any]], dict[str, str]] | None = None,
) -> FastAPI:
    """Build the app. The caller owns ``library`` (and closes it after the server stops).

    token: when set, required on every request (see `security.HttpGuard`).
    max_upload_bytes: most bytes of images one search may upload (413 beyond).
    max_decode_bytes: most memory decoding one uploaded image may take, judged from its
        header before decoding (413 beyond; see `decode_budget`).
    decode_budget_bytes: most memory all image decodes running at once may take (uploads
        and thumbnails); decodes beyond it wait their turn.
    allowed_hosts: accepted ``Host`` header names; the loopback names by default (DNS
        rebinding protection), None to accept any (a server exposed with ``--host``).
    allow_new_roots: may POST /api/index name folders the library does not know yet.
    thumbs_dir: thumbnail cache folder (default ``<library>/thumbs``).
    batch_text_queries: merge concurrent text encodings (see `worker.ModelWorker`).
    search_threads: library searches run at once (see `state.ServerState.run_search`).
    preload_model: load the model at startup.
    load_in_background: with ``preload_model``, answer requests while the model loads
        (`/api/status` says ``model_loading``; queries wait for the model) instead of
        holding the start-up until it is loaded.
    local_token: enables ``POST /api/local/search`` (the CLI's warm path) with this token.
    render_search: renders hits as ``clipsearch search`` prints them for the terminal a
        warm-path request describes (the ``serve`` command passes
        `clipsearch.cli.terminal.search_output`); without it that route answers with hits.
    """
    from clipsearch import __version__

    # Queries are encoded by the library's query encoder: the same vectors as a
    # `clipsearch search` in its own process computes (Library.query_encoder).
    worker = ModelWorker(lambda: library.query_encoder, batch_texts=batch_text_queries)
    state = ServerState(
        library=library,
        worker=worker,
        thumbs=ThumbnailCache(thumbs_dir or Path(library.path) / "thumbs"),
        jobs=IndexJobs(library),
        max_upload_bytes=max_upload_bytes,
        allow_new_roots=allow_new_roots,
        search_threads=search_threads,
        local_token=local_token,
        render_search=render_search,
        decode_budget=DecodeBudget(
            per_decode_bytes=max_decode_bytes, total_bytes=decode_budget_bytes
        ),
    )

    async def preload() -> None:
        state.model_loading = True
        try:
            await worker.call(lambda: library.query_encoder)
        except ClipsearchError as e:
            state.model_error = str(e)  # the page and /api/status show it; search → 503
        finally:
            state.model_loading = False

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = None
        if preload_model and load_in_background:
            # Queries queue behind this job on the model thread: the first one waits for it.
            loading = asyncio.get_running_loop().create_task(preload())
        elif preload_model:
            await preload()
        yield
        if loading is not None and not loading.done():
            loading.cancel()
        state.jobs.stop()
        state.jobs.join(timeout=30)
        worker.close()

    app = FastAPI(
        title="clipsearch",
        version=__version__,
        description=API_DESCRIPTION,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )
    app.state.clipsearch = state
    install_error_handlers(app)
    app.include_router(search_routes.router)
    app.include_router(items_routes.router)
    app.include_router(library_routes.router)
    if local_token is not None:
        app.include_router(local_routes.router)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _document_search_body(app)
    app.add_middleware(HttpMethods, routes=lambda: app.routes)
    app.add_middleware(  # added last: the outermost layer, before anything else runs
        HttpGuard,
        token=token,
        allowed_hosts=allowed_hosts,
        max_body_bytes=max_upload_bytes + FORM_OVERHEAD_BYTES,
    )
    return app
