"""The indexing pipeline: scan → (hash, reuse) → decode → encode → store.

Decoding and preprocessing run in a thread pool while the main thread encodes the
previous batch: Pillow and PyAV release the GIL while decoding and torch releases it
while computing, so threads overlap the two without the cost of pickling pixels
between processes (65 img/s on one decode thread, 140 on two:
docs/architecture.md#performance).

Crash safety: every encode batch is one catalog transaction. A kill -9 loses at most
the batch in flight; the next run sees those files as new and encodes them (items
are upserted by path, so nothing is duplicated).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipsearch.errors import MediaError, ModelMismatchError, NotFoundError
from clipsearch.ingest.dating import date_items, read_capture
from clipsearch.ingest.events import (
    BatchWritten,
    FileDone,
    IndexEvent,
    IndexReport,
    ScanDone,
    ScanProgress,
)
from clipsearch.ingest.reading import FRAME_SIDE, TextReading, resolve_settings
from clipsearch.ingest.runtime_choice import RuntimeChoice, encoder_label
from clipsearch.media import MediaFile, load_image, partial_hash, scan
from clipsearch.media.capture_time import CaptureTime
from clipsearch.models.base import Encoder
from clipsearch.search.engine import decode_side
from clipsearch.store import Catalog, ItemWrite, ModelBinding
from clipsearch.store.records import TextRead

if TYPE_CHECKING:
    from clipsearch.models.ocr import TextReader


@dataclass(frozen=True)
class IndexOptions:
    """Knobs of an indexing run; the defaults suit a laptop."""

    include: tuple[str, ...] = ()  # glob patterns a file must match (any), relative to its root
    exclude: tuple[str, ...] = ()  # glob patterns that drop a file or folder
    hidden: bool = False  # also index dot-files and dot-folders
    follow_symlinks: bool = True  # follow symlinked folders (loops are detected)
    batch_size: int = 32  # images (or video frames) per encoder call
    workers: int = 2  # decode threads
    video_sampler: str = "auto"  # frame sampling strategy, see clipsearch.media.sampling
    max_frames: int = 512  # cap on frames per video (spread uniformly beyond it)
    retry_failed: bool = False  # re-try files that failed before even if unchanged
    # Read the text in images (OCR, the ``ocr`` extra) / also in sampled video frames.
    # None: as the library remembers from its last run (off for a new library).
    ocr: bool | None = None
    ocr_frames: bool | None = None


@dataclass
class _Decoded:
    """A decoded file ready for encoding: pixels (n, 3, H, W), one row per vector."""

    media: MediaFile
    root_id: int
    content_hash: str | None
    pixels: np.ndarray | None = None
    timestamps: np.ndarray | None = None  # video frames only
    cuts: np.ndarray | None = None  # videos: shot cut times found while decoding
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    taken: CaptureTime | None = None  # when it was taken (read with the content hash)
    error: str | None = None  # failed: why
    warning: str | None = None  # ok but partial (e.g. video damaged mid-stream)
    cancelled: bool = False  # stopped mid-file (Ctrl-C): not written, redone next run
    text: TextRead | None = None  # what was read in the picture (OCR), if it was read
    text_only: bool = False  # an indexed item that only needed its text read
    item_id: int | None = None  # its id (text_only)


@dataclass
class _Todo:
    media: MediaFile
    root_id: int
    content_hash: str | None = None
    item_id: int | None = None  # set for an indexed item that only needs its text read
    taken: CaptureTime | None = None


class Indexer:
    """Indexes roots into a catalog with one encoder.

    on_event: receives `IndexEvent`s (progress); must be cheap.
    should_stop: polled between files; returning True stops after the batch in flight
        (the run is resumable).
    text_reader: the OCR reader when the run reads text (default: PP-OCRv4 through
        rapidocr-onnxruntime, `clipsearch.models.ocr`).
    choose_encoder: called once, with the files about to be encoded, before decoding starts;
        returns the `RuntimeChoice` whose encoder encodes this run's pixels (an accelerated
        image encoder of the same model, see `clipsearch.ingest.runtime_choice`). Default:
        ``encoder`` itself. Preprocessing is always ``encoder``'s.
    """

    def __init__(
        self,
        catalog: Catalog,
        encoder: Encoder,
        options: IndexOptions = IndexOptions(),
        *,
        on_event: Callable[[IndexEvent], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        text_reader: TextReader | None = None,
        choose_encoder: Callable[[list[MediaFile]], RuntimeChoice] | None = None,
    ) -> None:
        self.catalog = catalog
        self.encoder = encoder
        self._image_encoder = encoder
        self._choose_encoder = choose_encoder
        self.options = options
        self._emit = on_event or (lambda e: None)
        self._should_stop = should_stop or (lambda: False)
        self._text_reader = text_reader
        self._reading: TextReading | None = None

    @functools.cached_property
    def _min_side(self) -> int:
        # Asked only when a file is decoded: a run with nothing to encode never loads a
        # deferred model (`clipsearch.models.deferred`).
        return decode_side(self.encoder)

    # -- public -----------------------------------------------------------------------------------
    def run(self, roots: Sequence[Path | str]) -> IndexReport:
        """Index ``roots`` incrementally. Raises NotFoundError for a missing root (before any
        work), ModelMismatchError when the library is bound to another model, DiskFullError
        when the disk fills (committed batches are kept; run again to resume),
        MissingDependencyError when text reading needs the ``ocr`` extra."""
        t0 = time.perf_counter()
        paths = list(dict.fromkeys(Path(os.path.expanduser(str(r))).absolute() for r in roots))
        for p in paths:
            if not p.exists():
                raise NotFoundError(f"not found: {p}")
        from clipsearch.media.sampling import FrameSampler

        FrameSampler.parse(
            self.options.video_sampler, max_frames=self.options.max_frames
        )  # UsageError early
        self._reading = self._text_reading()
        self.catalog.bind_model(
            ModelBinding(
                spec=self.encoder.spec, fingerprint=self.encoder.fingerprint, dim=self.encoder.dim
            )
        )
        report = IndexReport(roots=[str(p) for p in paths])
        todo: list[_Todo] = []
        gone: list[int] = []
        undated: list[tuple[int, MediaFile]] = []  # unchanged items without a capture time
        seen: set[str] = set()  # across roots: overlapping roots must not queue a file twice
        for root in paths:
            found, missing = self._scan_root(root, report, seen, undated)
            todo.extend(found)
            gone.extend(missing)
            if report.interrupted:
                break
        # Reuse before sweeping: a moved file's old row is the source of its vectors.
        todo = self._reuse(todo, report)
        if gone:
            report.deleted += self.catalog.delete_items(sorted(set(gone)))
        to_read = self._unread(seen - {str(t.media.path) for t in todo})
        self._emit(
            ScanDone(
                total=report.scanned,
                unchanged=report.unchanged,
                reused=report.reused,
                to_encode=len(todo),
                deleted=report.deleted,
                to_read=len(to_read),
            )
        )
        todo += to_read
        if todo and not self._should_stop():
            self._pick_image_encoder([t for t in todo if t.item_id is None], report)
            self._encode_all(todo, report)
        elif todo:
            report.interrupted = True
        if undated and not report.interrupted:
            report.dated, report.interrupted = date_items(
                self.catalog,
                undated,
                workers=max(2, self.options.workers),
                emit=self._emit,
                should_stop=self._should_stop,
            )
        report.elapsed_s = time.perf_counter() - t0
        return report

    # -- text reading ------------------------------------------------------------------------------
    def _text_reading(self) -> TextReading | None:
        """This run's text reading (the library's remembered settings, changed by the
        options, and remembered again), or None when it reads no text."""
        texts = self.catalog.texts
        remembered = texts.settings()
        settings = resolve_settings(
            remembered, ocr=self.options.ocr, ocr_frames=self.options.ocr_frames
        )
        reader = None
        if settings.ocr:
            if self._text_reader is None:
                from clipsearch.models.ocr import text_reader

                self._text_reader = text_reader()
            reader = self._text_reader
        if settings != remembered:
            texts.save_settings(settings)
        return None if reader is None else TextReading(settings, reader)

    def _unread(self, paths: set[str]) -> list[_Todo]:
        """Indexed files among ``paths`` whose text this run's reader has not read yet."""
        if self._reading is None or not paths:
            return []
        pending = self._reading.pending(self.catalog, paths)
        return [
            _Todo(MediaFile(Path(r.path), r.kind, r.size, r.mtime_ns), r.root_id or 0, item_id=r.id)
            for r in pending
        ]

    # -- scan + sweep ------------------------------------------------------------------------------
    def _scan_root(
        self,
        root: Path,
        report: IndexReport,
        seen: set[str],
        undated: list[tuple[int, MediaFile]],
    ) -> tuple[list[_Todo], list[int]]:
        """Walk one root: files to (re)encode, and catalog items under it that are gone.
        Unchanged items whose capture time was never read are added to ``undated``.

        Nothing is swept under a folder the walk could not read, nor when a root that had
        items comes back empty (an unmounted drive looks like that): only files that are
        really gone are removed.
        """
        root_id = self.catalog.add_root(str(root))
        known = self.catalog.items_under_root(root_id)
        no_date = self.catalog.undated_items(root_id)
        todo: list[_Todo] = []
        unreadable: list[str] = []

        def on_error(p: Path, why: str) -> None:
            report.scan_errors.append((str(p), why))
            unreadable.append(str(p).rstrip("/") + "/")

        opts = self.options
        files = scan(
            [root],
            include=opts.include,
            exclude=opts.exclude,
            hidden=opts.hidden,
            follow_symlinks=opts.follow_symlinks,
            on_error=on_error,
        )
        found = 0
        for media in files:
            path = str(media.path)
            if not _utf8_ok(path):
                # SQLite stores text as UTF-8; a name with undecodable bytes cannot be a key.
                report.scan_errors.append((path.encode("utf-8", "replace").decode(), _BAD_NAME))
                continue
            if path in seen:
                continue
            found += 1
            report.scanned += 1
            seen.add(path)
            rec = known.get(path) or self.catalog.item_by_path(path)
            unchanged = (
                rec is not None and rec.size == media.size and rec.mtime_ns == media.mtime_ns
            )
            if unchanged and (rec.status == "ok" or not opts.retry_failed):
                report.unchanged += 1
                if rec.id in no_date:
                    undated.append((rec.id, media))
            else:
                todo.append(_Todo(media, root_id))
            if found % 500 == 0:
                self._emit(ScanProgress(str(root), found))
                if self._should_stop():
                    report.interrupted = True
                    return todo, []  # an incomplete walk must not sweep anything
        self._emit(ScanProgress(str(root), found))
        if found == 0 and known:
            report.scan_errors.append(
                (str(root), f"no media found: keeping its {len(known)} indexed items (unmounted?)")
            )
            return todo, []
        gone = [
            rec.id
            for path, rec in known.items()
            if path not in seen
            and not os.path.lexists(path)
            and not any(path.startswith(u) for u in unreadable)
        ]
        return todo, gone

    def _reuse(self, todo: list[_Todo], report: IndexReport) -> list[_Todo]:
        """Hash new/changed files (in threads: it is I/O) and reuse the vectors of an
        identical file already in the catalog (a move or a copy): nothing is encoded twice."""

        def hash_one(t: _Todo) -> _Todo:
            try:
                t.content_hash = partial_hash(t.media.path, t.media.size)
            except OSError:
                t.content_hash = None  # unreadable: the decoder will record why
            t.taken = read_capture(t.media)
            return t

        with ThreadPoolExecutor(max_workers=max(2, self.options.workers)) as pool:
            hashed = list(pool.map(hash_one, todo))
        remaining: list[_Todo] = []
        for t in hashed:
            if self._should_stop():
                report.interrupted = True
                return []
            src = None
            if t.content_hash is not None:
                src = self.catalog.find_reusable(t.content_hash, t.media.size, t.media.kind)
            # Same path: the file itself changed (maybe only its mtime, maybe its pixels
            # behind an unchanged partial hash, e.g. an edited BMP): encode it again.
            if src is None or src.path == str(t.media.path):
                remaining.append(t)
                continue
            self.catalog.copy_item(src.id, self._write_for(t, status="ok"))
            report.reused += 1
            if not os.path.lexists(src.path):
                # A move (perhaps of a whole root, which this run does not sweep).
                report.deleted += self.catalog.delete_items([src.id])
            self._emit(FileDone(str(t.media.path), t.media.kind, ok=True))
        return remaining

    # -- decode + encode -------------------------------------------------------------------------
    def _pick_image_encoder(self, todo: list[_Todo], report: IndexReport) -> None:
        if self._choose_encoder is None or not todo:  # nothing to encode: nothing to choose
            self._image_encoder = self.encoder
            report.image_encoder = encoder_label(self.encoder)
            return
        choice = self._choose_encoder([t.media for t in todo])
        if choice.encoder.fingerprint != self.encoder.fingerprint:
            raise ModelMismatchError("an image encoder must belong to the model being indexed")
        self._image_encoder = choice.encoder
        report.image_encoder, report.image_encoder_reason = choice.label, choice.reason
        report.image_encoder_fell_back = choice.fell_back

    def _encode_all(self, todo: list[_Todo], report: IndexReport) -> None:
        """Decode in the pool, encode in this thread, commit batch by batch.

        At most ``window`` files are in flight, and at most ``workers + 1`` of them videos
        (a video's frames are held until its batch is written)."""
        opts = self.options
        window = max(2 * opts.batch_size, 4 * opts.workers)
        max_videos = opts.workers + 1
        ready: list[_Decoded] = []
        ready_rows = 0
        queue = list(reversed(todo))  # pop() from the end keeps scan order
        inflight: dict[Future[_Decoded], str] = {}
        pool = ThreadPoolExecutor(max_workers=opts.workers, thread_name_prefix="clipsearch-decode")
        progress = _Progress(total=len(todo))
        try:
            while True:
                stopping = self._should_stop()
                while queue and len(inflight) < window and not stopping:
                    n_videos = sum(1 for k in inflight.values() if k == "video")
                    if queue[-1].media.kind == "video" and n_videos >= max_videos:
                        break
                    nxt = queue.pop()
                    inflight[pool.submit(self._decode, nxt)] = nxt.media.kind
                if stopping and queue:
                    report.interrupted = True
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
                        report.interrupted = True
                        continue
                    ready.append(dec)
                    ready_rows += 0 if dec.pixels is None else len(dec.pixels)
                if ready_rows >= opts.batch_size or len(ready) >= window:
                    self._flush(ready, report, progress)
                    ready, ready_rows = [], 0
            if ready:
                self._flush(ready, report, progress)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _decode(self, t: _Todo) -> _Decoded:
        """Runs in a worker thread: decode + preprocess. Never raises for bad media."""
        out = _Decoded(media=t.media, root_id=t.root_id, content_hash=t.content_hash, taken=t.taken)
        out.text_only, out.item_id = t.item_id is not None, t.item_id
        reading = self._reading if self._reading and self._reading.reads(t.media.kind) else None
        try:
            if t.media.size == 0:
                raise MediaError("empty file")
            if t.media.kind == "image":
                side = reading.image_side(self._min_side) if reading else self._min_side
                img = load_image(t.media.path, min_side=side)
                out.width, out.height = img.width, img.height
                if reading:  # the decoded image itself: the file is decoded once
                    out.text = reading.read_image(img.image)
                if not out.text_only:
                    out.pixels = self.encoder.preprocess(img.image)[None]  # (1, 3, H, W)
            else:
                self._decode_video(t, out)
        except _Stopped:
            out.cancelled, out.pixels = True, None
        except MediaError as e:
            out.error = str(e) or type(e).__name__
        except OSError as e:
            out.error = f"cannot read file: {e.strerror or e}"
        except Exception as e:  # one bad file must never stop a run
            out.error = f"unexpected error while decoding: {type(e).__name__}: {e}"
        return out

    def _decode_video(self, t: _Todo, out: _Decoded) -> None:
        from clipsearch.media.sampling import FrameSampler
        from clipsearch.media.video import FrameReader

        sampler = FrameSampler.parse(self.options.video_sampler, max_frames=self.options.max_frames)
        times: list[float] = []
        pixels: list[np.ndarray] = []
        reading = self._reading if self._reading and self._reading.reads("video") else None
        texts = reading.frame_texts() if reading else None
        # Stream frames and preprocess each at once: only model-sized pixels are kept.
        # One codec thread per video: the pool already runs one video per core.
        side = {"max_side": FRAME_SIDE} if reading else {}
        with FrameReader(t.media.path, sampler, threads=1, **side) as reader:
            for frame in reader:
                if self._should_stop():
                    raise _Stopped
                times.append(frame.t)
                if texts is not None:
                    texts.add(frame.t, frame.image)
                if out.text_only:
                    continue
                # fp16 while waiting for the encoder halves the memory of long videos; the
                # rounding (~1e-3) is far below one 8-bit pixel step after normalisation.
                pixels.append(self.encoder.preprocess(frame.image).astype(np.float16))
            info, out.warning = reader.info, reader.warning
            if reader.shots is not None:
                out.cuts = np.array([start for start, _ in reader.shots[1:]], dtype=np.float64)
        if not times:
            raise MediaError("no frame could be decoded")
        out.text = texts.result() if texts is not None else None
        out.width, out.height, out.duration = info.width, info.height, info.duration
        out.timestamps = np.array(times, dtype=np.float64)
        if not out.text_only:
            out.pixels = np.stack(pixels)  # (F, 3, H, W)

    def _flush(self, ready: list[_Decoded], report: IndexReport, progress: _Progress) -> None:
        """Encode every decoded file in ``ready`` and commit them in one transaction (and the
        text read from already indexed files in a second one)."""
        read_only = [d for d in ready if d.text_only]
        if read_only:
            self.catalog.texts.write({d.item_id: d.text for d in read_only if d.text is not None})
            self._done(read_only, [None] * len(read_only), report, progress)
            ready = [d for d in ready if not d.text_only]
        ok = [d for d in ready if d.error is None and d.pixels is not None and len(d.pixels)]
        flat = None
        if ok:
            t0 = time.perf_counter()
            chunks = _row_chunks([d.pixels for d in ok], self.options.batch_size)
            flat = np.concatenate([self._image_encoder.encode_pixels(c) for c in chunks])  # (R, D)
            report.encode_s += time.perf_counter() - t0
        writes: list[ItemWrite] = []
        offset = 0
        for d in ready:
            if d.error is not None or d.pixels is None or not len(d.pixels):
                writes.append(
                    self._write_for(d, status="failed", error=d.error or "no frames decoded")
                )
                continue
            n = len(d.pixels)
            vecs = flat[offset : offset + n]  # (n, D)
            offset += n
            if d.media.kind == "video":
                from clipsearch.search.video import meanp

                vecs = np.vstack([vecs, meanp(vecs)[None, :]])  # frames + meanP video vector
                ts = np.append(d.timestamps, np.nan)
                writes.append(
                    self._write_for(d, status="ok", error=d.warning, vectors=vecs, timestamps=ts)
                )
            else:
                writes.append(self._write_for(d, status="ok", vectors=vecs))
        if writes:
            self.catalog.write_items(writes)
        self._done(ready, writes, report, progress)

    def _done(
        self,
        ready: list[_Decoded],
        writes: Sequence[ItemWrite | None],
        report: IndexReport,
        progress: _Progress,
    ) -> None:
        """Count and announce committed files (``None`` write: only its text was read)."""
        for d, w in zip(ready, writes, strict=True):
            if w is None:  # an indexed file read for its text: ok even if reading failed
                report.read += d.text is not None
                progress.done += 1
                self._emit(FileDone(str(d.media.path), d.media.kind, ok=True))
                continue
            failed = w.status != "ok"
            frames = 0 if d.timestamps is None or failed else len(d.timestamps)
            report.added += 1
            report.read += d.text is not None and not failed
            report.failed += failed
            report.frames += frames
            progress.done += 1
            progress.failed += failed
            progress.frames += frames
            self._emit(
                FileDone(
                    str(d.media.path), d.media.kind, ok=not failed, error=w.error, frames=frames
                )
            )
        if ready:
            self._emit(
                BatchWritten(progress.done, progress.total, progress.failed, progress.frames)
            )

    @staticmethod
    def _write_for(
        t: _Todo | _Decoded,
        *,
        status: str,
        error: str | None = None,
        vectors: np.ndarray | None = None,
        timestamps: np.ndarray | None = None,
    ) -> ItemWrite:
        """The catalog write for a file (a failed one keeps no capture time)."""
        d = t if isinstance(t, _Decoded) else None
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


class _Stopped(Exception):
    """Raised inside a decode worker when the run is asked to stop."""


def _row_chunks(arrays: list[np.ndarray], size: int):
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


_BAD_NAME = "file name is not valid UTF-8: rename the file to index it"


def _utf8_ok(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass
class _Progress:
    total: int
    done: int = 0
    failed: int = 0
    frames: int = 0
