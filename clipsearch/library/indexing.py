"""Indexing and captioning a library: the checks that fail before any work, the one-writer
lock, the model binding of a first run, the encode engine (local threads or Ray), the
image-encoder runtime choice, and the ANN refresh after a complete run
(`clipsearch.ingest.Indexer` does the work)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from clipsearch.errors import NotFoundError, UsageError
from clipsearch.ingest import AnnProgress, Indexer, IndexEvent, IndexOptions, IndexReport
from clipsearch.library.ann import LibraryAnn
from clipsearch.library.models import LibraryModels, ModelSource
from clipsearch.library.runtime import LibraryRuntime
from clipsearch.store import Catalog
from clipsearch.store.writer_lock import WriterLock

if TYPE_CHECKING:
    from clipsearch.ingest.captioning import CaptionOptions, CaptionProgress, CaptionReport
    from clipsearch.ingest.ray_engine import RaySettings


class LibraryIndexing:
    """Index and caption runs over one library's catalog, with its models (``models``, and
    ``loading`` for how they load), runtime settings and ANN index (refreshed after a
    complete run)."""

    def __init__(
        self,
        path: Path,
        catalog: Catalog,
        models: ModelSource,
        loading: LibraryModels,
        runtime: LibraryRuntime,
        ann: LibraryAnn,
    ) -> None:
        self.path = path
        self.catalog = catalog
        self.models = models
        self.loading = loading  # how the models load: deferred, injected, precision
        self.runtime = runtime
        self.ann = ann

    def index(
        self,
        roots: Sequence[Path | str],
        *,
        options: IndexOptions,
        on_event: Callable[[IndexEvent], None] | None,
        should_stop: Callable[[], bool] | None,
        ray: RaySettings | None,
        captions: CaptionOptions | None,
        on_caption: Callable[[CaptionProgress], None] | None,
    ) -> IndexReport:
        """`Library.index`."""
        for root in roots:  # fail fast, before loading (maybe downloading) the model
            if not Path(os.path.expanduser(str(root))).exists():
                raise NotFoundError(f"not found: {root}")
        from clipsearch.ingest.reading import resolve_settings
        from clipsearch.media.sampling import FrameSampler

        FrameSampler.parse(options.video_sampler, max_frames=options.max_frames)
        if ray is not None:
            ray.validate()
        reading = resolve_settings(
            self.catalog.texts.settings(), ocr=options.ocr, ocr_frames=options.ocr_frames
        )
        if reading.ocr:  # a missing `ocr` extra fails before the lock and the model
            from clipsearch.models.ocr import text_reader

            self.catalog.texts.require_index()
            text_reader()
        if captions is not None:
            captions.validate()
            self.models.captioner  # noqa: B018 - load (or fail) before the long run
        # One indexing run per library at a time, checked before the model is loaded.
        with WriterLock(self.path, action="indexing"):
            if self.catalog.model_binding() is None:
                # Before loading the model (maybe a long download): a run interrupted then
                # is resumed by `index FOLDER` with the same model, not the default one.
                self.catalog.choose_model(self.models.model_spec)
            encoder = self.loading.for_indexing(lambda: self.models.encoder)
            self.runtime.remember_given()
            # The model is loaded here only when some file needs encoding. Ray workers load
            # the chosen image encoder themselves (torch needs no choice made here).
            choose = (
                None
                if ray is not None and self.runtime.settings.is_plain_torch
                else lambda files: self.runtime.chooser(
                    self.models.encoder, self.catalog, on_event
                ).choose(files, load=ray is None)
            )
            with self._engine(options, ray, encoder.fingerprint) as engine:
                indexer = Indexer(
                    self.catalog,
                    encoder,
                    options,
                    on_event=on_event,
                    should_stop=should_stop,
                    engine=engine,
                    choose_encoder=choose,
                )
                report = indexer.run(roots)
            if not report.interrupted:
                # The ANN cache is built/updated while indexing, so the first search is fast.
                emit = on_event or (lambda e: None)
                if not self.ann.cache_is_current():
                    self.ann.current(progress=lambda s, frac: emit(AnnProgress(s, frac)))
                if captions is not None:
                    report.captions = self._caption(captions, on_caption, should_stop)
                    report.interrupted = report.captions.interrupted
        return report

    def _engine(self, options: IndexOptions, ray: RaySettings | None, fingerprint: str):
        """The encode engine for a run: None (local threads) or a `RayEngine`."""
        if ray is None:
            return contextlib.nullcontext()
        from clipsearch.ingest.ray_engine import LoopSettings, ModelLoader, RayEngine

        model = ray.model
        if model is None:
            if self.loading.injected:
                raise UsageError(
                    "this library was given an encoder object, which Ray workers cannot load: "
                    "pass RaySettings(model=...) with a function that builds it"
                )
            model = ModelLoader(self.models.model_spec, self.loading.precision)
        loop = LoopSettings(
            batch_size=options.batch_size,
            decode_threads=max(1, int(ray.cpus_per_worker)),
            video_sampler=options.video_sampler,
            max_frames=options.max_frames,
        )
        return RayEngine(model, fingerprint, ray, loop)

    def caption(
        self,
        options: CaptionOptions | None,
        *,
        on_event: Callable[[CaptionProgress], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> CaptionReport:
        """`Library.caption`."""
        from clipsearch.ingest.captioning import CaptionOptions

        options = options or CaptionOptions()
        options.validate()
        self.models.captioner  # noqa: B018 - load (or fail) before taking the lock
        with WriterLock(self.path, action="captioning"):
            return self._caption(options, on_event, should_stop)

    def _caption(
        self,
        options: CaptionOptions,
        on_event: Callable[[CaptionProgress], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> CaptionReport:
        from clipsearch.ingest.captioning import caption_library

        return caption_library(
            self.catalog, self.models.captioner, options, on_event=on_event, should_stop=should_stop
        )
