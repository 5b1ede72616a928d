"""The indexing pipeline: scan → (hash, reuse) → decode → encode → store.

The scan, the reuse of moved or copied files and the sweep of deleted ones happen here;
decoding and encoding happen in an `EncodeEngine`: this process's thread pool
(`clipsearch.ingest.encode.EncodeLoop`) by default, or a Ray cluster
(`clipsearch.ingest.ray_engine.RayEngine`). Every finished batch comes back here and is
written by the same code, so both engines store the same rows.

Crash safety: every encode batch is one catalog transaction. A kill -9 loses at most
the batch in flight; the next run sees those files as new and encodes them (items
are upserted by path, so nothing is duplicated).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clipsearch.errors import ModelMismatchError, NotFoundError
from clipsearch.ingest.events import (
    BatchWritten,
    FileDone,
    IndexEvent,
    IndexReport,
    ScanDone,
    ScanProgress,
)
from clipsearch.ingest.reading import TextReading, resolve_settings
from clipsearch.ingest.tasks import FileTask
from clipsearch.media import MediaFile, scan_paths
from clipsearch.store import Catalog, ModelBinding

# Decoding, encoding, the runtime choice and capture-time reading (numpy, Pillow, the
# search engine's decode sizes) are imported when a run has files to work on: a run over
# unchanged files needs none of them.
if TYPE_CHECKING:
    from clipsearch.ingest.encode import EncodeEngine, TextWrite
    from clipsearch.ingest.runtime_choice import RuntimeChoice
    from clipsearch.models.base import Encoder
    from clipsearch.models.ocr import TextReader
    from clipsearch.store import ItemWrite


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


class Indexer:
    """Indexes roots into a catalog with one encoder.

    on_event: receives `IndexEvent`s (progress); must be cheap.
    should_stop: polled between files; returning True stops after the batch in flight
        (the run is resumable).
    engine: where files are decoded and encoded (default: threads in this process with
        ``encoder``). ``encoder`` binds the library to its model either way. Every engine
        reads the text in pictures when the run does (`EncodeEngine.use_reading`).
    text_reader: the OCR reader when the run reads text (default: PP-OCRv4 through
        rapidocr-onnxruntime, `clipsearch.models.ocr`). Engines whose workers build their
        own (Ray) use the default reader with the run's settings.
    choose_encoder: called once, with the files about to be encoded, before decoding starts;
        returns the `RuntimeChoice` whose encoder encodes this run's pixels (an accelerated
        image encoder of the same model, see `clipsearch.ingest.runtime_choice`). Default:
        ``encoder`` itself. Preprocessing is always ``encoder``'s. An engine whose workers
        build their own model loads the choice's ``images`` there (or says why it could not:
        `LoopResult.image_encoders`, shown in the report).
    """

    def __init__(
        self,
        catalog: Catalog,
        encoder: Encoder,
        options: IndexOptions = IndexOptions(),
        *,
        on_event: Callable[[IndexEvent], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        engine: EncodeEngine | None = None,
        text_reader: TextReader | None = None,
        choose_encoder: Callable[[list[MediaFile]], RuntimeChoice] | None = None,
    ) -> None:
        self.catalog = catalog
        self.encoder = encoder
        self._choose_encoder = choose_encoder
        self.options = options
        self._emit = on_event or (lambda e: None)
        self._should_stop = should_stop or (lambda: False)
        self._engine = engine
        self._text_reader = text_reader
        self._reading: TextReading | None = None

    @property
    def engine(self) -> EncodeEngine:
        """The engine of the run (the local loop is built once the run's text reading is
        known)."""
        if self._engine is None:
            from clipsearch.ingest.encode import EncodeLoop

            opts = self.options
            self._engine = EncodeLoop(
                self.encoder,
                batch_size=opts.batch_size,
                workers=opts.workers,
                video_sampler=opts.video_sampler,
                max_frames=opts.max_frames,
                should_stop=self._should_stop,
                reading=self._reading,
            )
        return self._engine

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
        if self._engine is not None:  # the local loop is built with it, on first use
            self._engine.use_reading(self._reading)
        self.catalog.bind_model(
            ModelBinding(
                spec=self.encoder.spec, fingerprint=self.encoder.fingerprint, dim=self.encoder.dim
            )
        )
        report = IndexReport(roots=[str(p) for p in paths])
        # Results an interrupted run left outside the catalog go in first, so the scan
        # below counts those files as done instead of encoding them again (the local loop
        # hands every batch on at once: it has nothing to resume).
        if self._engine is not None:
            self._engine.resume(lambda writes: self._write_batch(writes, report, _Progress(0)))
        todo: list[FileTask] = []
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
            progress = _Progress(total=len(todo))
            result = self.engine.run(
                todo,
                lambda writes: self._write_batch(writes, report, progress),
                should_stop=self._should_stop,
            )
            report.encode_s += result.encode_s
            report.interrupted |= result.interrupted
            _workers_encoders(result.image_encoders, report)
        elif todo:
            report.interrupted = True
        if undated and not report.interrupted:
            from clipsearch.ingest.dating import date_items

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

    def _unread(self, paths: set[str]) -> list[FileTask]:
        """Indexed files among ``paths`` whose text this run's reader has not read yet."""
        if self._reading is None or not paths:
            return []
        pending = self._reading.pending(self.catalog, paths)
        return [
            FileTask(
                MediaFile(Path(r.path), r.kind, r.size, r.mtime_ns), r.root_id or 0, item_id=r.id
            )
            for r in pending
        ]

    # -- scan + sweep ------------------------------------------------------------------------------
    def _scan_root(
        self,
        root: Path,
        report: IndexReport,
        seen: set[str],
        undated: list[tuple[int, MediaFile]],
    ) -> tuple[list[FileTask], list[int]]:
        """Walk one root: files to (re)encode, and catalog items under it that are gone.
        Unchanged items whose capture time was never read are added to ``undated``.

        Nothing is swept under a folder the walk could not read, nor when a root that had
        items comes back empty (an unmounted drive looks like that): only files that are
        really gone are removed.
        """
        root_id = self.catalog.add_root(str(root))
        known = self.catalog.file_states_under_root(root_id)
        no_date = self.catalog.undated_items(root_id)
        todo: list[FileTask] = []
        unreadable: list[str] = []

        def on_error(p: Path, why: str) -> None:
            report.scan_errors.append((str(p), why))
            unreadable.append(str(p).rstrip("/") + "/")

        opts = self.options
        retry_failed = opts.retry_failed
        # Paths stay strings, compared with the catalog's: records are made only for the
        # files that need work (10,000 unchanged files cost a stat and a lookup each).
        files = scan_paths(
            [root],
            include=opts.include,
            exclude=opts.exclude,
            hidden=opts.hidden,
            follow_symlinks=opts.follow_symlinks,
            on_error=on_error,
        )
        found = unchanged = 0
        for path, kind, size, mtime_ns in files:
            if not path.isascii() and not _utf8_ok(path):
                # SQLite stores text as UTF-8; a name with undecodable bytes cannot be a key.
                report.scan_errors.append((path.encode("utf-8", "replace").decode(), _BAD_NAME))
                continue
            if path in seen:
                continue
            found += 1
            seen.add(path)
            state = known.get(path) or self._state_elsewhere(path)
            if (
                state is not None
                and state[1] == size
                and state[2] == mtime_ns
                and (state[3] == "ok" or not retry_failed)
            ):
                unchanged += 1
                if state[0] in no_date:
                    undated.append((state[0], MediaFile(Path(path), kind, size, mtime_ns)))
            else:
                todo.append(FileTask(MediaFile(Path(path), kind, size, mtime_ns), root_id))
            if found % 500 == 0:
                self._emit(ScanProgress(str(root), found))
                if self._should_stop():
                    report.scanned += found
                    report.unchanged += unchanged
                    report.interrupted = True
                    return todo, []  # an incomplete walk must not sweep anything
        report.scanned += found
        report.unchanged += unchanged
        self._emit(ScanProgress(str(root), found))
        if found == 0 and known:
            report.scan_errors.append(
                (str(root), f"no media found: keeping its {len(known)} indexed items (unmounted?)")
            )
            return todo, []
        gone = [
            state[0]
            for path, state in known.items()
            if path not in seen
            and not os.path.lexists(path)
            and not any(path.startswith(u) for u in unreadable)
        ]
        return todo, gone

    def _state_elsewhere(self, path: str) -> tuple[int, int, int, str] | None:
        """(id, size, mtime_ns, status) of a file indexed under another root, or None."""
        rec = self.catalog.item_by_path(path)
        return None if rec is None else (rec.id, rec.size, rec.mtime_ns, rec.status)

    def _reuse(self, todo: list[FileTask], report: IndexReport) -> list[FileTask]:
        """Hash new/changed files and read their capture times (in threads: it is I/O) and reuse the vectors of an
        identical file already in the catalog (a move or a copy): nothing is encoded twice."""
        if not todo:
            return []
        from clipsearch.ingest.dating import read_capture
        from clipsearch.ingest.encode import item_write
        from clipsearch.media import partial_hash

        def hash_one(t: FileTask) -> FileTask:
            try:
                t.content_hash = partial_hash(t.media.path, t.media.size)
            except OSError:
                t.content_hash = None  # unreadable: the decoder will record why
            # Read here, in this process, for every engine: a Ray worker gets it with the
            # file's record and hands it back with the vectors.
            t.taken = read_capture(t.media)
            return t

        with ThreadPoolExecutor(max_workers=max(2, self.options.workers)) as pool:
            hashed = list(pool.map(hash_one, todo))
        remaining: list[FileTask] = []
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
            self.catalog.copy_item(src.id, item_write(t, status="ok"))
            report.reused += 1
            if not os.path.lexists(src.path):
                # A move (perhaps of a whole root, which this run does not sweep).
                report.deleted += self.catalog.delete_items([src.id])
            self._emit(FileDone(str(t.media.path), t.media.kind, ok=True))
        return remaining

    # -- decode + encode ---------------------------------------------------------------------
    def _pick_image_encoder(self, todo: list[FileTask], report: IndexReport) -> None:
        from clipsearch.ingest.encode import EncodeLoop
        from clipsearch.ingest.runtime_choice import encoder_label

        engine = self.engine
        if self._choose_encoder is None or not todo:
            if isinstance(engine, EncodeLoop):  # other engines say what their workers used
                report.image_encoder = encoder_label(self.encoder)  # nothing to choose
            return
        choice = self._choose_encoder([t.media for t in todo])
        if choice.encoder.fingerprint != self.encoder.fingerprint:
            raise ModelMismatchError("an image encoder must belong to the model being indexed")
        engine.use_image_encoder(choice)
        report.image_encoder, report.image_encoder_reason = choice.label, choice.reason
        report.image_encoder_fell_back = choice.fell_back

    def _write_batch(
        self, writes: list[ItemWrite | TextWrite], report: IndexReport, progress: _Progress
    ) -> None:
        """Commit one batch of finished files in one transaction (and the text read from
        already indexed files in a second one) and report them."""
        from clipsearch.ingest.encode import TextWrite, frames_in

        read_only = [w for w in writes if isinstance(w, TextWrite)]
        if read_only:
            self.catalog.texts.write({w.item_id: w.text for w in read_only if w.text is not None})
        items = [w for w in writes if not isinstance(w, TextWrite)]
        if items:
            self.catalog.write_items(items)
        for w in writes:
            if isinstance(w, TextWrite):  # read for its text: ok even if reading failed
                report.read += w.text is not None
                progress.done += 1
                self._emit(FileDone(w.path, w.kind, ok=True))
                continue
            failed = w.status != "ok"
            frames = frames_in(w)
            report.added += 1
            report.read += w.text is not None and not failed
            report.failed += failed
            report.frames += frames
            progress.done += 1
            progress.failed += failed
            progress.frames += frames
            self._emit(FileDone(w.path, w.kind, ok=not failed, error=w.error, frames=frames))
        if writes:
            self._emit(
                BatchWritten(progress.done, progress.total, progress.failed, progress.frames)
            )


def _workers_encoders(used: dict[str, str | None], report: IndexReport) -> None:
    """Report what an engine's workers encoded images with (label -> why not the chosen
    one): every label they used, and each reason a worker could not use the chosen one."""
    if not used:
        return
    notes = sorted({note for note in used.values() if note})
    if list(used) == [report.image_encoder] and not notes:
        return  # as chosen
    report.image_encoder = " + ".join(sorted(used))
    if notes:
        report.image_encoder_reason = "; ".join(notes)
        report.image_encoder_fell_back = True


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
