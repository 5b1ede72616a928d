"""The encode loop: decode in a thread pool, encode in this thread, hand finished files on.

Decoding and preprocessing run in a thread pool while the calling thread encodes the
previous batch: Pillow and PyAV release the GIL while decoding and torch releases it
while computing, so threads overlap the two without the cost of pickling pixels
between processes (65 img/s on one decode thread, 140 on two:
docs/architecture.md#performance).

The loop turns every file into the `ItemWrite` the catalog stores — an image's vector, or
a video's frame vectors plus its CLIP4Clip meanP vector v = normalise(Σᵢ normalise(fᵢ)/n)
with a NaN timestamp — and hands them to a ``sink`` batch by batch. The local indexer's
sink commits them to the catalog; a Ray actor's sink collects them into an Arrow table.
Both therefore store exactly the same rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from clipsearch.ingest.decode import DecodedFile, FileDecoder
from clipsearch.ingest.reading import TextReading
from clipsearch.ingest.tasks import FileTask
from clipsearch.models.base import Encoder
from clipsearch.store import ItemWrite
from clipsearch.store.records import TextWrite

if TYPE_CHECKING:
    from clipsearch.ingest.runtime_choice import RuntimeChoice


Sink = Callable[[list[ItemWrite | TextWrite]], None]
"""Receives each batch of finished files (ok, failed, text only) in the order they finished."""


@dataclass
class LoopResult:
    """What one `EncodeLoop.run` did."""

    interrupted: bool = False  # stopped early; the files not handed to the sink are redone next run
    encode_s: float = 0.0  # seconds spent inside the encoder
    # Engines whose workers load their own image encoder: what encoded the pixels, as label
    # -> why it is not the one chosen (None: as chosen). Empty: the chosen one, here.
    image_encoders: dict[str, str | None] = field(default_factory=dict)


class EncodeEngine(Protocol):
    """Where files are decoded and encoded: this process (`EncodeLoop`, the default) or a
    cluster (`clipsearch.ingest.ray_engine.RayEngine`). Either way every finished file
    reaches ``sink`` as the `ItemWrite` the catalog stores."""

    def resume(self, sink: Sink) -> int:
        """Hand ``sink`` the results an interrupted earlier run left behind (e.g. Parquet
        shards not yet ingested); returns how many files that was."""
        ...

    def run(
        self, tasks: Sequence[FileTask], sink: Sink, *, should_stop: Callable[[], bool]
    ) -> LoopResult:
        """Decode and encode ``tasks``, handing batches of finished files to ``sink``."""
        ...

    def use_image_encoder(self, choice: RuntimeChoice) -> None:
        """Encode pixels with the chosen image encoder (`clipsearch.ingest.runtime_choice`)."""
        ...

    def use_reading(self, reading: TextReading | None) -> None:
        """Read the text in pictures as ``reading`` says (None: read none)."""
        ...


class EncodeLoop:
    """Decode ``tasks`` in ``workers`` threads and encode them ``batch_size`` rows at a time.

    At most ``window`` files are in flight, and at most ``workers + 1`` of them videos (a
    video's frames are held until its batch is handed on). ``should_stop`` is polled
    between files; a stop finishes the batch in flight.
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        batch_size: int = 32,
        workers: int = 2,
        video_sampler: str = "auto",
        max_frames: int = 512,
        should_stop: Callable[[], bool] | None = None,
        reading: TextReading | None = None,
    ) -> None:
        self.encoder = encoder
        # What encodes the pixels (an accelerated image encoder of the same model may take
        # this place; preprocessing stays ``encoder``'s).
        self.image_encoder = encoder
        self.batch_size = batch_size
        self.workers = workers
        self._should_stop = should_stop or (lambda: False)
        self.decoder = FileDecoder(
            encoder,
            video_sampler=video_sampler,
            max_frames=max_frames,
            should_stop=lambda: self._should_stop(),
            reading=reading,
        )

    def resume(self, sink: Sink) -> int:
        """Nothing to resume: every batch this loop finishes is handed on at once."""
        return 0

    def use_image_encoder(self, choice: RuntimeChoice) -> None:
        self.image_encoder = choice.encoder

    def use_reading(self, reading: TextReading | None) -> None:
        self.decoder.reading = reading

    def run(
        self,
        tasks: Sequence[FileTask],
        sink: Sink,
        *,
        should_stop: Callable[[], bool] | None = None,
    ) -> LoopResult:
        """Decode, encode and hand every task to ``sink``; ``should_stop`` (default: the
        one given to the constructor) is polled between files."""
        if should_stop is not None:
            self._should_stop = should_stop
        result = LoopResult()
        window = max(2 * self.batch_size, 4 * self.workers)
        max_videos = self.workers + 1
        ready: list[DecodedFile] = []
        ready_rows = 0
        queue = list(reversed(tasks))  # pop() from the end keeps the given order
        inflight: dict[Future[DecodedFile], str] = {}
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="clipsearch-decode")
        try:
            while True:
                stopping = self._should_stop()
                while queue and len(inflight) < window and not stopping:
                    n_videos = sum(1 for k in inflight.values() if k == "video")
                    if queue[-1].media.kind == "video" and n_videos >= max_videos:
                        break
                    nxt = queue.pop()
                    inflight[pool.submit(self.decoder.decode, nxt)] = nxt.media.kind
                if stopping and queue:
                    result.interrupted = True
                    queue.clear()
                    for fut in list(inflight):
                        if fut.cancel():
                            del inflight[fut]
                if not inflight:
                    break
                done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for fut in done:
                    del inflight[fut]
                    dec = fut.result()
                    if dec.cancelled:
                        result.interrupted = True
                        continue
                    ready.append(dec)
                    ready_rows += dec.rows
                if ready_rows >= self.batch_size or len(ready) >= window:
                    sink(self.encode(ready, result))
                    ready, ready_rows = [], 0
            if ready:
                sink(self.encode(ready, result))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return result

    def encode(
        self, ready: list[DecodedFile], result: LoopResult | None = None
    ) -> list[ItemWrite | TextWrite]:
        """Encode every decoded file of ``ready``; one `ItemWrite` per file (a `TextWrite`
        for a file only read for its text), in order."""
        ok = [d for d in ready if d.rows]
        flat = None
        if ok:
            t0 = time.perf_counter()
            chunks = row_chunks([d.pixels for d in ok], self.batch_size)  # type: ignore[misc]
            flat = np.concatenate([self.image_encoder.encode_pixels(c) for c in chunks])
            if result is not None:
                result.encode_s += time.perf_counter() - t0
        writes: list[ItemWrite | TextWrite] = []
        offset = 0
        for d in ready:
            if d.text_only:
                t = d.task
                writes.append(
                    TextWrite(int(t.item_id or 0), str(t.media.path), t.media.kind, d.text)
                )
                continue
            if not d.rows:
                writes.append(item_write(d, status="failed", error=d.error or "no frames decoded"))
                continue
            n = d.rows
            vecs = flat[offset : offset + n]  # type: ignore[index]  # (n, D)
            offset += n
            if d.task.media.kind == "video":
                from clipsearch.search.video import meanp

                vecs = np.vstack([vecs, meanp(vecs)[None, :]])  # frames + meanP video vector
                ts = np.append(d.timestamps, np.nan)
                writes.append(
                    item_write(d, status="ok", error=d.warning, vectors=vecs, timestamps=ts)
                )
            else:
                writes.append(item_write(d, status="ok", vectors=vecs))
        return writes


def item_write(
    source: FileTask | DecodedFile,
    *,
    status: str,
    error: str | None = None,
    vectors: np.ndarray | None = None,
    timestamps: np.ndarray | None = None,
) -> ItemWrite:
    """The catalog write for a file (metadata from the decode when there is one; a failed
    file keeps no capture time)."""
    d = source if isinstance(source, DecodedFile) else None
    t = source.task if isinstance(source, DecodedFile) else source
    return ItemWrite(
        path=str(t.media.path),
        root_id=t.root_id,
        kind=t.media.kind,
        size=t.media.size,
        mtime_ns=t.media.mtime_ns,
        content_hash=t.content_hash,
        status=status,
        error=error,
        width=d.width if d else None,
        height=d.height if d else None,
        duration=d.duration if d else None,
        vectors=vectors,
        timestamps=timestamps,
        text=d.text if d is not None and status == "ok" else None,
        cuts=d.cuts if d is not None and status == "ok" else None,
        taken=t.taken if status == "ok" else None,
    )


def frames_in(write: ItemWrite) -> int:
    """Video frames a write stores (its meanP row not counted); 0 for images and failures."""
    if write.status != "ok" or write.timestamps is None:
        return 0
    return int(np.count_nonzero(~np.isnan(np.asarray(write.timestamps, dtype=np.float64))))


def row_chunks(arrays: list[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """Yield float32 batches of ``size`` rows across ``arrays`` without one big copy."""
    buf: list[np.ndarray] = []
    n = 0
    for a in arrays:
        i = 0
        while i < len(a):
            take = min(size - n, len(a) - i)
            buf.append(a[i : i + take])
            n += take
            i += take
            if n == size:
                yield np.concatenate(buf).astype(np.float32, copy=False)
                buf, n = [], 0
    if buf:
        yield np.concatenate(buf).astype(np.float32, copy=False)
