"""What every route shares: the library, the model worker, the thumbnail cache, the
indexing job, and the server's settings. One `ServerState` per app, on ``app.state``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from fastapi import Request

from clipsearch.server.decode_budget import DecodeBudget
from clipsearch.server.errors import ApiError
from clipsearch.server.jobs import IndexJobs
from clipsearch.server.thumbs import ThumbnailCache
from clipsearch.server.worker import ModelWorker

if TYPE_CHECKING:
    from clipsearch.library import Library
    from clipsearch.search.hits import SearchResults

T = TypeVar("T")


@dataclass
class ServerState:
    library: Library
    worker: ModelWorker
    thumbs: ThumbnailCache
    jobs: IndexJobs
    max_upload_bytes: int  # per uploaded image
    allow_new_roots: bool  # may POST /api/index name folders the library does not know yet
    model_error: str | None = None  # why the model failed to load at startup, if it did
    model_loading: bool = False  # the start-up load runs (in the background)
    local_token: str | None = None  # the token of POST /api/local/search (discovery file)
    # renders hits for the terminal a warm-path request describes (create_app's argument)
    render_search: Callable[[SearchResults, dict[str, Any]], dict[str, str]] | None = None
    search_threads: int = 1  # library searches allowed to run at once (see run_search)
    decode_budget: DecodeBudget = field(default_factory=DecodeBudget)  # image decode memory
    _search_limiter: Any = field(default=None, repr=False)

    async def run_search(self, fn: Callable[[], T]) -> T:
        """Run a `Library.search` call in a worker thread, at most ``search_threads`` at a
        time. `Library.search` holds the library's lock for the whole search, so more
        threads add no parallelism; with the limit, waiting requests queue in the event
        loop (in arrival order) instead of parking up to 40 threadpool threads on that
        lock, which the thumbnail and media requests of the page also need. (Measured
        with benchmarks/serve_load.py on a loaded machine: no difference in req/s outside
        the noise; see docs/server.md.)"""
        if self._search_limiter is None:
            self._search_limiter = anyio.CapacityLimiter(self.search_threads)
        return await anyio.to_thread.run_sync(fn, limiter=self._search_limiter)

    @property
    def model_loaded(self) -> bool:
        return self.library.model_loaded

    def require_model(self) -> None:
        """503 with the load error when the model could not be loaded at startup."""
        if self.model_error is not None and not self.model_loaded:
            raise ApiError(503, "model_unavailable", self.model_error)


def get_state(request: Request) -> ServerState:
    return request.app.state.clipsearch
