"""The model worker: one thread runs every encoder call a request needs.

Why one thread: a torch model is not meant to be called from many threads at once (the
calls would contend for the same cores and interleave intra-op thread pools), and on a
2-core laptop one forward pass at a time already uses the machine. The event loop never
encodes; it hands work to this thread and awaits the result, so slow queries do not
block the page's thumbnail and media requests.

Batching. Requests that arrive while the thread is busy queue up; when it picks the next
job it also takes every text-encoding job already waiting (up to ``max_batch`` texts)
and encodes their texts in one ``encode_texts`` call. Nothing waits for a batch to fill:
at low load every query goes alone, so batching never adds latency. Whether it helps is
measured by ``benchmarks/serve_load.py`` (see docs/server.md for the figures).

Catalog reads and the vector search run elsewhere (the threadpool): the catalog
serialises its own SQLite access and `Library.search` holds the library's lock. An
indexing job (`clipsearch.server.jobs`) encodes images on its own thread through
`Library.index`, concurrently with this one; torch inference is re-entrant, the two
simply share the cores.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass
class _Call:
    fn: Callable[[], Any]
    future: Future = field(default_factory=Future)


@dataclass
class _Texts:
    texts: list[str]
    future: Future = field(default_factory=Future)


@dataclass
class WorkerStats:
    """Counters for measurement: how many texts went through how many encoder calls."""

    text_jobs: int = 0
    text_calls: int = 0
    texts: int = 0
    largest_batch: int = 0


class ModelWorker:
    """Runs encoder work on one daemon thread.

    encoder: a zero-argument callable returning the `Encoder` (e.g. ``lambda:
        library.encoder``); called on the worker thread, so a lazy model load happens there.
    batch_texts: merge text jobs that are waiting into one encoder call.
    max_batch: most texts per merged call.
    """

    def __init__(
        self,
        encoder: Callable[[], Any],
        *,
        batch_texts: bool = True,
        max_batch: int = 64,
    ) -> None:
        self._encoder = encoder
        self.batch_texts = batch_texts
        self.max_batch = max_batch
        self.stats = WorkerStats()
        self._queue: queue.SimpleQueue[_Call | _Texts | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    # -- API for the event loop ---------------------------------------------------------------
    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the worker thread and return its result (or raise its error)."""
        job = _Call(fn)
        self._put(job)
        return await asyncio.wrap_future(job.future)

    async def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) strings -> (N, D) float32 L2-normalised, possibly batched with other requests."""
        job = _Texts(list(texts))
        self._put(job)
        return await asyncio.wrap_future(job.future)

    def close(self, timeout: float = 5.0) -> None:
        """Finish the queued jobs and stop the thread (the next job starts a new one, so an
        app whose lifespan runs twice, as in tests, keeps working)."""
        with self._start_lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join(timeout)

    def _put(self, job: _Call | _Texts) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="clipsearch-model", daemon=True
                )
                self._thread.start()
            self._queue.put(job)

    # -- worker thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            if self.batch_texts and isinstance(job, _Texts):
                jobs.extend(self._drain(len(job.texts)))
            text_jobs = [j for j in jobs if isinstance(j, _Texts)]
            if text_jobs:
                self._encode(text_jobs)
            for j in jobs:
                if isinstance(j, _Call):
                    self._run(j)
                elif j is None:  # close() arrived while draining
                    return

    def _drain(self, n_texts: int) -> list[_Call | _Texts | None]:
        """Take the jobs already waiting, stopping before the text batch overflows."""
        taken: list[_Call | _Texts | None] = []
        while n_texts < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            taken.append(job)
            if job is None:
                break
            if isinstance(job, _Texts):
                n_texts += len(job.texts)
        return taken

    def _encode(self, jobs: list[_Texts]) -> None:
        live = [j for j in jobs if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        texts = [t for j in live for t in j.texts]
        try:
            vectors = self._encoder().encode_texts(texts) if texts else None  # (N, D)
        except BaseException as e:
            for j in live:
                j.future.set_exception(e)
            return
        self.stats.text_jobs += len(live)
        self.stats.text_calls += 1
        self.stats.texts += len(texts)
        self.stats.largest_batch = max(self.stats.largest_batch, len(texts))
        start = 0
        for j in live:
            n = len(j.texts)
            j.future.set_result(
                vectors[start : start + n] if vectors is not None else np.zeros((0, 0), np.float32)
            )
            start += n

    @staticmethod
    def _run(job: _Call) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        try:
            result = job.fn()
        except BaseException as e:
            job.future.set_exception(e)
        else:
            job.future.set_result(result)
