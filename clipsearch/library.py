"""`Library`: the Python face of clipsearch. One directory, one catalog, one model.

    >>> lib = Library("~/lib")                     # doctest: +SKIP
    >>> lib.index(["~/Pictures"])                  # doctest: +SKIP
    >>> for hit in lib.search("a dog on a beach", k=5):   # doctest: +SKIP
    ...     print(hit.score, hit.path)

Dependencies are injected (rclip style): pass ``encoder=`` to use any `Encoder`
(tests pass a deterministic fake); otherwise the model named by ``model=``, or the one
the library is bound to, or the default, is loaded on first use.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipsearch.atomic import atomic_write_text
from clipsearch.errors import ModelMismatchError, NotFoundError, UsageError
from clipsearch.index.base import IndexInfo, VectorIndex
from clipsearch.ingest import AnnProgress, Indexer, IndexEvent, IndexOptions, IndexReport
from clipsearch.models.base import Encoder, l2_normalize
from clipsearch.models.runtime import RuntimeSettings
from clipsearch.search import classify, dedup, moderation
from clipsearch.search.arrange import SortOrder
from clipsearch.search.banks import BankCache
from clipsearch.search.captions import with_captions_of
from clipsearch.search.compose import QueryParts, encode_plan
from clipsearch.search.engine import Pooling, Searcher, SearchOptions
from clipsearch.search.gap import GapMode, GapRescorer, check_mode
from clipsearch.search.hits import SearchResults
from clipsearch.search.query import QueryPlan, parse_query, plan_from_parts
from clipsearch.search.relevance import (
    BackgroundCache,
    MinScore,
    parse_min_score,
    resolve_min_score,
)
from clipsearch.search.rerank import GALLERY_BANK_SIZE, HubnessRescorer, RerankMethod, check_method
from clipsearch.search.rescore import Rescorer
from clipsearch.search.textmatch import TextFusion, query_terms, with_text_matches
from clipsearch.search.video import DEFAULT_POOLING
from clipsearch.store import Catalog, ItemFilter, ModelBinding
from clipsearch.store.exchange import ExchangeReport
from clipsearch.store.filters import taken_bounds
from clipsearch.store.location import default_library_path
from clipsearch.store.texts import CAPTION, OCR
from clipsearch.store.writer_lock import WriterLock

if TYPE_CHECKING:
    from PIL import Image

    from clipsearch.ingest.captioning import CaptionOptions, CaptionProgress, CaptionReport
    from clipsearch.ingest.ray_engine import RaySettings
    from clipsearch.models.blip import Captioner, ImageTextMatcher
    from clipsearch.search.choices import ItmScoreRule, Reranker


@dataclass(frozen=True)
class AnnSettings:
    """How the library's nearest-neighbour index is built (persisted by ``reindex``)."""

    backend: str = (
        "auto"  # "auto", "exact", a FAISS factory string, or "milvus[:HNSW|IVF_FLAT|FLAT]"
    )
    recall_target: float = 0.95  # search parameters are raised until recall@10 >= this
    milvus_uri: str | None = (
        None  # a Milvus server (http://host:19530); None: Milvus Lite in the library
    )

    FILE = "ann.json"
    MILVUS_LITE = "milvus.db"  # Milvus Lite's folder inside the library

    @property
    def milvus_index_type(self) -> str | None:
        """The Milvus index type ("HNSW", "IVF_FLAT", "FLAT") of a Milvus backend, else None.
        Unspecified: HNSW on a Milvus server; FLAT on Milvus Lite, whose HNSW builds slowly
        and, measured (docs/scale.md), searches no faster than its exact scan."""
        name, _, kind = self.backend.partition(":")
        if name.lower() != "milvus":
            return None
        server = self.milvus_uri is not None and "://" in self.milvus_uri
        return kind.upper() or ("HNSW" if server else "FLAT")

    @classmethod
    def load(cls, library: Path) -> AnnSettings:
        try:
            data = json.loads((library / cls.FILE).read_text())
            uri = data.get("milvus_uri")
            return cls(
                backend=str(data["backend"]),
                recall_target=float(data["recall_target"]),
                milvus_uri=None if uri is None else str(uri),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return cls()  # missing or damaged: the defaults (the file is only a preference)

    def save(self, library: Path) -> None:
        data = {"backend": self.backend, "recall_target": self.recall_target}
        if self.milvus_uri is not None:
            data["milvus_uri"] = self.milvus_uri
        atomic_write_text(library / self.FILE, json.dumps(data))


@dataclass(frozen=True)
class LibraryStatus:
    """What `clipsearch status` shows."""

    path: str
    model: str | None
    fingerprint: str | None
    dim: int | None
    stats: dict[str, Any]
    failures: list[dict[str, str]] = field(default_factory=list)
    ocr: dict[str, Any] = field(default_factory=dict)  # text reading: settings and coverage
    runtime: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        st = self.stats
        return {
            "library": self.path,
            "model": self.model,
            "fingerprint": self.fingerprint,
            "dim": self.dim,
            "items": st.get("items"),  # {"total", "ok", "failed", "by_kind": {kind: {status: n}}}
            "vectors": st.get("vectors"),
            "frames": st.get("frames"),
            "roots": st.get("roots"),
            "generation": st.get("generation"),
            "schema_version": st.get("schema_version"),
            "db_bytes": st.get("db_bytes"),
            # ok items by where their capture time came from: {"exif", "container", "mtime",
            # "unread"} (unread: indexed before capture times were recorded; mtime stands in)
            "capture_times": st.get("capture_times"),
            # {"enabled", "frames", "by_kind": {kind: {"items", "read", "with_text"}}, "texts"}
            "ocr": self.ocr,
            # {"by_kind": {kind: {"items", "read", "with_text"}}, "texts"}: BLIP captions
            "captions": st.get("captions"),
            "failures": self.failures,
            # {"runtime", "quantize", "builds": [{runtime, precision, built_at, gate}]}
            "runtime": self.runtime,
        }


class Library:
    """A searchable media library.

    path: the library directory (created on first index); default `default_library_path()`.
    model: a model spec (see `clipsearch.models.parse_spec`); default: the model the library
        is bound to, else the one its interrupted first index was started with, else
        `clipsearch.models.DEFAULT_MODEL`.
    precision: "auto" | "fp32" | "bf16" | "fp16" for the model's weights (CLIP and BLIP).
    encoder: an already-built `Encoder` (overrides ``model``).
    itm_model / caption_model: BLIP models for ``rerank="itm"`` and captions (Hub ids or
        local folders; default `DEFAULT_ITM_MODEL` / `DEFAULT_CAPTION_MODEL`), loaded on
        first use, once. matcher / captioner: already-built ones (override the names).
    runtime, quantize: the image-encoder runtime for indexing ("auto" | "torch" | "openvino")
        and its quantization ("none" | "int8"); None = what the library remembers (see
        `clipsearch.models.runtime`). Given ones are remembered by the next `index`.
    """

    def __init__(
        self,
        path: Path | str | None = None,
        *,
        model: str | None = None,
        precision: str = "auto",
        encoder: Encoder | None = None,
        create: bool = True,
        readonly: bool = False,
        itm_model: str | None = None,
        caption_model: str | None = None,
        matcher: ImageTextMatcher | None = None,
        captioner: Captioner | None = None,
        runtime: str | None = None,
        quantize: str | None = None,
    ) -> None:
        self.path = Path(path).expanduser().absolute() if path else default_library_path()
        # Validated before anything is opened: a bad name is a UsageError, not a half-made library.
        self._runtime = RuntimeSettings.load(self.path).replace(runtime=runtime, quantize=quantize)
        self._runtime_given = runtime is not None or quantize is not None
        self.catalog = Catalog.open(self.path, create=create, readonly=readonly)
        self._model = model
        self._precision = precision
        self._encoder = encoder
        self._injected = encoder is not None
        self._query_encoder: Encoder | None = None
        self._encoder_checked = False  # the binding's fingerprint is checked once, on first use
        self._index: VectorIndex | None = None
        self._cache = None
        self._banks: BankCache | None = None
        self._milvus_cache = None
        self._background: BackgroundCache | None = None
        self._index_generation: int | None = None
        self._lock = threading.RLock()
        self._itm_model, self._caption_model = itm_model, caption_model
        self._matcher, self._captioner = matcher, captioner

    # -- model ----------------------------------------------------------------------------------
    @property
    def model_spec(self) -> str:
        """The spec of the model this library uses (without loading it)."""
        if self._encoder is not None:
            return self._encoder.spec
        binding = self.catalog.model_binding()
        if self._model is not None:
            return self._model
        if binding is not None:
            return binding.spec
        chosen = self.catalog.chosen_model()  # a first index interrupted while loading
        if chosen is not None:
            return chosen
        from clipsearch.models import DEFAULT_MODEL

        return DEFAULT_MODEL

    @property
    def model_loaded(self) -> bool:
        """True once the model (or the text tower queries use) is in memory (the server reports
        it without loading it)."""
        return self._encoder is not None or self._query_encoder is not None

    @property
    def query_encoder(self) -> Encoder:
        """The encoder of search queries. When the library is bound to a model whose text tower
        has a ready copy (`clipsearch.models.text_tower`), texts are encoded on numpy from it:
        no torch, no image tower, and the same vectors in every process (CLI and server).
        Images then go to `encoder`, loaded by the first image query. Otherwise `encoder`."""
        with self._lock:
            if self._query_encoder is None:  # asked again until it exists (a first index
                self._query_encoder = self._text_tower()  # binds the model, writes the copy)
            return self._query_encoder or self.encoder

    def _text_tower(self) -> Encoder | None:
        if self._injected or self._precision not in ("auto", "fp32"):
            return None
        binding = self.catalog.model_binding()
        if binding is None or self._model not in (None, binding.spec):
            return None
        from clipsearch.models.text_tower import load_ready_copy

        return load_ready_copy(binding.fingerprint, images=lambda: self.encoder, spec=binding.spec)

    @property
    def encoder(self) -> Encoder:
        """The model, loaded on first use (thread-safe)."""
        with self._lock:
            if not self._encoder_checked:
                if self._encoder is None:
                    from clipsearch.models import load_encoder

                    self._encoder = load_encoder(self.model_spec, precision=self._precision)
                self._encoder_checked = True
                binding = self.catalog.model_binding()
                if binding is not None and binding.fingerprint != self._encoder.fingerprint:
                    enc, self._encoder_checked = self._encoder, False  # raise on every use
                    raise ModelMismatchError(
                        f"library {self.path} is bound to model {binding.spec} "
                        f"(fingerprint {binding.fingerprint}), not {enc.spec} (fingerprint "
                        f"{enc.fingerprint}). Leave out --model to use the library's model, "
                        "or pick another --library."
                    )
            return self._encoder

    @property
    def matcher(self) -> ImageTextMatcher:
        """The BLIP ITM model for ``rerank="itm"``, loaded on first use (thread-safe).
        Raises as `clipsearch.models.blip.load_matcher`."""
        with self._lock:
            if self._matcher is None:
                from clipsearch.models.blip import load_matcher

                self._matcher = load_matcher(self._itm_model, precision=self._precision)
            return self._matcher

    @property
    def captioner(self) -> Captioner:
        """The BLIP captioning model, loaded on first use (thread-safe)."""
        with self._lock:
            if self._captioner is None:
                from clipsearch.models.blip import load_captioner

                self._captioner = load_captioner(self._caption_model, precision=self._precision)
            return self._captioner

    # -- indexing --------------------------------------------------------------------------------
    def index(
        self,
        roots: Sequence[Path | str],
        *,
        options: IndexOptions = IndexOptions(),
        on_event: Callable[[IndexEvent], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        ray: RaySettings | None = None,
        captions: CaptionOptions | None = None,
        on_caption: Callable[[CaptionProgress], None] | None = None,
    ) -> IndexReport:
        """Index (or incrementally re-index) folders. See `Indexer.run` for errors.

        ray: decode and encode on a Ray cluster (`clipsearch.ingest.ray_engine`) instead
            of in this process; the catalog ends up the same either way. ``ray.model``
            builds the model in each worker (default: this library's model spec and
            precision; required when the library was given an ``encoder=``).
        captions: also caption the items that need it (`caption`) once indexing is done;
        the caption report is ``report.captions``. The caption model is loaded before
        indexing starts, so a missing model fails before any work."""
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
        if reading.ocr and ray is not None:
            raise UsageError(
                "reading text in pictures (--ocr, or remembered by this library) runs in "
                "this process, not on Ray: index with --engine local, or add --no-ocr"
            )
        if reading.ocr:  # a missing `ocr` extra fails before the lock and the model
            from clipsearch.models.ocr import text_reader

            self.catalog.texts.require_index()
            text_reader()
        if captions is not None:
            captions.validate()
            self.captioner  # noqa: B018 - load (or fail) before the long run
        # One indexing run per library at a time, checked before the model is loaded.
        with WriterLock(self.path, action="indexing"):
            if self.catalog.model_binding() is None:
                # Before loading the model (maybe a long download): a run interrupted then
                # is resumed by `index FOLDER` with the same model, not the default one.
                self.catalog.choose_model(self.model_spec)
            encoder = self._indexing_encoder()
            if self._runtime_given and self._runtime != RuntimeSettings.load(self.path):
                self._runtime.save(self.path)
            # Ray workers build their own model (ray.model): the runtime choice is local,
            # and the model is loaded here only when some file needs encoding.
            choose = (
                None
                if ray is not None
                else lambda files: self._image_runtime_chooser(self.encoder, on_event).choose(files)
            )
            with self._engine(options, ray) as engine:
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
                ann = self.ann_settings
                if not self._index_cache().is_current(
                    self.catalog, backend=ann.backend, recall_target=ann.recall_target
                ):
                    self.vector_index(progress=lambda s, frac: emit(AnnProgress(s, frac)))
                if captions is not None:
                    report.captions = self._caption(captions, on_caption, should_stop)
                    report.interrupted = report.captions.interrupted
        return report

    def _engine(self, options: IndexOptions, ray: RaySettings | None):
        """The encode engine for a run: None (local threads) or a `RayEngine`."""
        if ray is None:
            return contextlib.nullcontext()
        from clipsearch.ingest.ray_engine import LoopSettings, ModelLoader, RayEngine

        model = ray.model
        if model is None:
            if self._injected:
                raise UsageError(
                    "this library was given an encoder object, which Ray workers cannot load: "
                    "pass RaySettings(model=...) with a function that builds it"
                )
            model = ModelLoader(self.model_spec, self._precision)
        loop = LoopSettings(
            batch_size=options.batch_size,
            decode_threads=max(1, int(ray.cpus_per_worker)),
            video_sampler=options.video_sampler,
            max_frames=options.max_frames,
        )
        return RayEngine(model, self.encoder.fingerprint, ray, loop)

    def caption(
        self,
        options: CaptionOptions | None = None,
        *,
        on_event: Callable[[CaptionProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> CaptionReport:
        """Write a BLIP caption for every item without one from the caption model (per
        image, and per sampled moment of a video; ingest/captioning.py). Resumable.
        One captioning or indexing run per library at a time (LibraryError otherwise)."""
        from clipsearch.ingest.captioning import CaptionOptions

        options = options or CaptionOptions()
        options.validate()
        self.captioner  # noqa: B018 - load (or fail) before taking the lock
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
            self.catalog, self.captioner, options, on_event=on_event, should_stop=should_stop
        )

    def _indexing_encoder(self) -> Encoder:
        """The model for an index run. A library already bound to the requested model gets a
        `DeferredEncoder`: a run over unchanged files never loads (or imports) the model."""
        binding = self.catalog.model_binding()
        if self._encoder is not None or binding is None or self._model not in (None, binding.spec):
            return self.encoder
        from clipsearch.models.deferred import DeferredEncoder

        return DeferredEncoder(
            spec=binding.spec,
            fingerprint=binding.fingerprint,
            dim=binding.dim,
            load=lambda: self.encoder,
        )

    # -- image-encoder runtime ---------------------------------------------------------------------
    @property
    def runtime_settings(self) -> RuntimeSettings:
        """The image-encoder runtime indexing uses (``<library>/runtime.json`` unless this
        object was given others)."""
        return self._runtime

    def set_runtime(
        self, *, runtime: str | None = None, quantize: str | None = None
    ) -> RuntimeSettings:
        """Choose and remember the image-encoder runtime and quantization for indexing.

        Raises UsageError for unknown names or int8 with the torch runtime, and
        MissingDependencyError when "openvino" is asked for but not installed.
        """
        from clipsearch.errors import MissingDependencyError
        from clipsearch.models.runtime import openvino_available

        settings = self._runtime.replace(runtime=runtime, quantize=quantize)
        if settings.runtime == "openvino" and not openvino_available():
            raise MissingDependencyError("openvino", "openvino")
        self.path.mkdir(parents=True, exist_ok=True)
        settings.save(self.path)
        self._runtime, self._runtime_given = settings, False
        return settings

    def _image_runtime_chooser(
        self, encoder: Encoder, on_event: Callable[[IndexEvent], None] | None
    ):
        from clipsearch.ingest.runtime_choice import ImageRuntimeChooser
        from clipsearch.search.banks import default_captions

        def reference() -> Encoder:
            if getattr(encoder, "precision", None) == "fp32" or not hasattr(encoder, "model"):
                return encoder
            from clipsearch.models import load_encoder

            return load_encoder(encoder.spec, precision="fp32")

        return ImageRuntimeChooser(
            base=encoder,
            settings=self._runtime,
            folder=self.path / "runtime",
            catalog=self.catalog,
            load_reference=reference,
            captions=default_captions(),
            emit=on_event,
        )

    def runtime_info(self) -> dict[str, Any]:
        """The runtime settings and the image encoders built for the library's model, with
        their accuracy-gate figures (what `status` shows)."""
        from clipsearch.models.runtime_cache import RuntimeCache

        binding = self.catalog.model_binding()
        builds = [
            {
                "runtime": e.key.runtime,
                "precision": e.key.precision,
                "built_at": e.built_at,
                "versions": e.versions,
                **e.info,
                "gate": e.gate,
            }
            for e in RuntimeCache(self.path / "runtime").entries()
            if binding is None or e.key.fingerprint == binding.fingerprint
        ]
        return {**self._runtime.to_dict(), "builds": builds}

    # -- search ----------------------------------------------------------------------------------
    # -- nearest-neighbour index ---------------------------------------------------------------
    @property
    def ann_settings(self) -> AnnSettings:
        """The library's ANN choice (``reindex --ann``), kept in ``<library>/ann.json``."""
        return AnnSettings.load(self.path)

    def _index_cache(self):
        if self._cache is None:
            from clipsearch.index import IndexCache

            self._cache = IndexCache(self.path / "ann")
        return self._cache

    def vector_index(self, *, progress: Callable[[str, float], None] | None = None) -> VectorIndex:
        """The nearest-neighbour index over the catalog, refreshed when the catalog changed
        (loaded from the cache, updated incrementally, or rebuilt: docs/architecture.md#caches)."""
        with self._lock:
            generation = self.catalog.generation()
            if self._index is None or self._index_generation != generation:
                self._index = self._ann_get(self.ann_settings, progress, rebuild=False)
                self._index_generation = generation
            return self._index

    def reindex(
        self,
        *,
        backend: str | None = None,
        recall_target: float | None = None,
        milvus_uri: str | None = None,
        progress: Callable[[str, float], None] | None = None,
    ) -> IndexInfo:
        """Rebuild the ANN index, optionally with explicit FAISS parameters ("HNSW32",
        "IVF4096,Flat", "exact", or "auto") or in Milvus ("milvus", "milvus:IVF_FLAT";
        ``milvus_uri`` names a server, default Milvus Lite inside the library), and remember
        the choice for later updates."""
        old = self.ann_settings
        ann = AnnSettings(
            backend=backend or old.backend,
            recall_target=old.recall_target if recall_target is None else recall_target,
            milvus_uri=milvus_uri or old.milvus_uri,
        )
        with self._lock:
            self._index = self._ann_get(ann, progress, rebuild=True)
            self._index_generation = self.catalog.generation()
            ann.save(self.path)  # only once the build succeeded (a bad string raised above)
        return self.index_info()

    def index_info(self) -> IndexInfo | None:
        """Backend, parameters, vectors, memory and measured recall@10 of the ANN cache."""
        if self.ann_settings.milvus_index_type is not None:
            return self._milvus().info()
        return self._index_cache().info()

    def _ann_get(
        self, ann: AnnSettings, progress: Callable[[str, float], None] | None, *, rebuild: bool
    ) -> VectorIndex:
        kind = ann.milvus_index_type
        if kind is None:
            return self._index_cache().get(
                self.catalog,
                backend=ann.backend,
                recall_target=ann.recall_target,
                progress=progress,
                rebuild=rebuild,
            )
        from clipsearch.store.vector_meta import CatalogMetadata

        return self._milvus().get(
            CatalogMetadata(self.catalog),
            uri=ann.milvus_uri or str(self.path / AnnSettings.MILVUS_LITE),
            index_type=kind,
            recall_target=ann.recall_target,
            progress=progress,
            rebuild=rebuild,
        )

    def _milvus(self):
        if self._milvus_cache is None:
            from clipsearch.index.milvus_cache import MilvusCache

            self._milvus_cache = MilvusCache(self.path / "ann")
        return self._milvus_cache

    def searcher(self) -> Searcher:
        return Searcher(self.catalog, self.vector_index)

    def embed_query(
        self,
        query: str | None = None,
        *,
        image: str | Path | Sequence[str | Path] | None = None,
        video: str | Path | Sequence[str | Path] | None = None,
    ) -> np.ndarray:
        """The query vector (D,) for a query string and/or example files."""
        return encode_plan(self.plan(query, image=image, video=video), self.query_encoder)

    @staticmethod
    def plan(
        query: str | None = None,
        *,
        image: str | Path | Sequence[str | Path] | None = None,
        video: str | Path | Sequence[str | Path] | None = None,
    ) -> QueryPlan:
        return plan_from_parts(text=query, images=_paths(image), videos=_paths(video))

    def search(
        self,
        query: str | None = None,
        *,
        image: str | Path | Sequence[str | Path] | None = None,
        video: str | Path | Sequence[str | Path] | None = None,
        vector: np.ndarray | None = None,
        k: int = 20,
        offset: int = 0,
        kind: str | None = None,
        where: Sequence[str] | ItemFilter = (),
        pooling: Pooling = DEFAULT_POOLING,
        tau: float | None = None,
        exact: bool = False,
        with_curve: bool = False,
        moments: int = 1,
        rerank: Reranker = "none",
        gap_correction: GapMode | None = None,
        plan: QueryPlan | None = None,
        text_match: bool | None = None,
        phrases: bool | None = None,
        min_score: MinScore = "auto",
        sort: SortOrder = "relevance",
        collapse: bool = False,
        taken_after: str | date | None = None,
        taken_before: str | date | None = None,
        rerank_k: int = 32,
        rerank_score: ItmScoreRule = "fusion",
        rerank_text: str | None = None,
        with_captions: bool = False,
    ) -> SearchResults:
        """Search by text, example image(s)/video(s), or a ready query ``vector``.

        kind: "image" or "video" to restrict results; where: filter clauses
        (``path:/a/*``, ``after:2023-01-01``, ``size>1MB``, ``taken>2023`` ...) or an
        ItemFilter.
        pooling: how a video scores (docs/video.md): peak (default) | mean | max | softmax;
        tau: its temperature (None: the method's own). moments: up to this many moments
        per video hit (``hit.moments``, best first).
        rerank: none | is | qbnorm | dbnorm | dbnorm-dynamic (hubness;
        docs/rerank.md; off by default, as measured) | itm (BLIP cross-encoder over the top
        ``rerank_k`` hits of a text query; ``rerank_score`` "fusion" or "itm",
        docs/blip.md; the text it reads is ``rerank_text``, default the query's positive
        text terms). gap_correction: None | "shift" | "center" for example-image queries.
        plan: with ``vector``, the parsed query behind it (for the text options below).
        text_match: also rank by the text read in the pictures (``index --ocr``), fused
            with the model's ranking (docs/ocr.md); None: when the library has read text.
            Hits whose text matched carry ``text_match``. With ``rerank="itm"`` None means
            off: the cross-encoder's order is the result unless text matching is asked for.
        phrases: quoted words must appear in the picture's text (`clipsearch.search.query`);
            None: when the library has read text, True: always (UsageError if it has none),
            False: quotes only delimit terms.
        min_score: where the relevant results end (docs/search.md): "auto" (per query,
        from its scores over the library), a cosine, or "none"; every hit says whether it
        is ``relevant`` and the relevant ones come first. sort: "relevance", "date"
        (oldest first) or "-date" (newest first) for the relevant results. collapse: fold
        near-duplicates into one result with ``members``. taken_after / taken_before: a
        date (or period such as "2023-06"): taken at or after its start / before its start.
        The result is a list of hits with the cut used as ``min_score``.
        with_captions: attach each hit's stored caption (``Hit.caption``).
        Raises QueryError for empty/unreadable queries or dates, UsageError for bad options,
        ModelError/WeightsUnavailableError when the ITM model cannot be loaded.
        """
        if isinstance(where, ItemFilter):
            flt = where
        else:
            flt = ItemFilter.parse([where] if isinstance(where, str) else list(where))
        if kind:
            flt = flt & ItemFilter.parse([f"kind:{kind}"])
        if vector is None:
            plan = self.plan(query, image=image, video=video)
        read = self.catalog.texts.has_text(OCR) or self.catalog.texts.has_text(CAPTION)
        if plan is not None and plan.phrases and (read if phrases is None else phrases):
            if not read:
                raise UsageError(
                    "quoted words must appear in the pictures' text, but no text has been "
                    "read in this library: run `clipsearch index FOLDER --ocr` (or "
                    "`clipsearch caption`) first"
                )
            flt = flt & ItemFilter(texts=plan.phrases)
        if text_match is None:
            text_match = read and rerank != "itm"
        fuse = bool(query_terms(plan)) and text_match
        if taken_after is not None:
            flt = flt & taken_bounds(">=", _date_text(taken_after))
        if taken_before is not None:
            flt = flt & taken_bounds("<", _date_text(taken_before))
        cut = parse_min_score(min_score)
        options = SearchOptions(
            k=k,
            offset=offset,
            where=flt,
            pooling=pooling,
            tau=tau,
            exact=exact,
            with_curve=with_curve,
            moments=moments,
            sort=sort,
            collapse=collapse,
        )
        options.validate()  # bad options fail before the model is loaded
        itm = None
        if rerank == "itm":
            if gap_correction is not None:
                raise UsageError(
                    "--rerank itm re-ranks text queries and --gap-correction corrects image "
                    "queries: use one or the other"
                )
            from clipsearch.search.itm import ItmRescorer

            itm = ItmRescorer.checked(  # loads the ITM model before the CLIP model
                lambda: self.matcher, plan, k=rerank_k, score=rerank_score, text=rerank_text
            )
        if vector is None:
            vector = encode_plan(plan, self.query_encoder)
        with self._lock:
            threshold = resolve_min_score(cut, l2_normalize(vector), self.background)
            if itm is None:
                rescorer = self.rescorer(
                    rerank=rerank, gap_correction=gap_correction, text_match=fuse
                )
            else:  # with text matching, ITM's scores are the model side of the fusion
                rescorer = TextFusion(self.catalog.texts, inner=itm) if fuse else itm
            hits = self.searcher().search(
                vector, replace(options, min_score=threshold), rescorer=rescorer, plan=plan
            )
        if itm is not None:
            hits = itm.annotate(hits)
        if with_captions:
            hits = with_captions_of(hits, self.catalog.texts)
        if fuse or flt.texts:
            terms = (*query_terms(plan), *flt.texts)
            hits = with_text_matches(hits, self.catalog.texts, terms)
        return SearchResults(hits, min_score=threshold)

    # -- query composition, rescoring -------------------------------------------------------------
    def query_parts(
        self,
        text: str | None = None,
        *,
        images: Sequence[Image.Image] = (),
        like: Sequence[int] = (),
        text_weight: float = 1.0,
        image_weight: float = 1.0,
        like_weight: float = 1.0,
        files: bool = True,
    ) -> QueryParts:
        """The parts of a composed query, checked, before encoding (see `compose_query`).

        Raises QueryError for an empty or malformed query, QueryFileRefusedError for a path
        in ``text`` when ``files`` is False, NotFoundError for an unknown ``like`` id.
        """
        plan = parse_query(text, files=files) if text is not None and text.strip() else None
        liked: list[np.ndarray] = []
        if like:
            unique = list(dict.fromkeys(like))
            vectors = self.catalog.item_vectors(unique)
            missing = [i for i in unique if i not in vectors]
            if missing:
                raise NotFoundError(
                    f"no indexed item with id {', '.join(map(str, missing))} to search like"
                )
            liked = [np.asarray(vectors[i], dtype=np.float32) for i in unique]
        return QueryParts(
            plan,
            tuple(images),
            tuple(liked),
            text_weight=text_weight,
            image_weight=image_weight,
            like_weight=like_weight,
        )

    def compose_query(self, text: str | None = None, **parts: Any) -> np.ndarray:
        """One query vector (D,) from a text in the query grammar, example images and items
        to search like (their stored vectors; videos by meanP), each group weighted::

            q = normalise(w_t·Σⱼ aⱼ·t̂ⱼ + w_i·Σ ûᵢ + w_l·Σ v̂ₖ)     (clipsearch.search.compose)

        Takes the arguments of `query_parts` (images=, like=, text_weight=, image_weight=,
        like_weight=, files=) and encodes the parts with this library's model. Use the
        vector with ``search(vector=...)``. Errors as `query_parts`, and QueryError when
        the parts cancel out.
        """
        return self.query_parts(text, **parts).encode(self.encoder)

    @property
    def background(self) -> BackgroundCache:
        """The sample of this library's items the "auto" relevance cut reads each query's
        background from (clipsearch.search.relevance), drawn once per catalog change."""
        with self._lock:
            if self._background is None:
                self._background = BackgroundCache(self.catalog)
            return self._background

    @property
    def banks(self) -> BankCache:
        """The cached bank terms and modality gap of this library (``<library>/rerank``)."""
        with self._lock:
            if self._banks is None:
                self._banks = BankCache(self.catalog, self.encoder, self.path / "rerank")
            return self._banks

    def rescorer(
        self,
        *,
        rerank: RerankMethod = "none",
        gap_correction: GapMode | None = None,
        text_match: bool = False,
    ) -> Rescorer | None:
        """The rescorer `search` applies for these options, or None for a plain search
        (the bank terms or gap are built on first use and cached: docs/rerank.md).
        text_match: fuse the result with the text read in the pictures (docs/ocr.md)."""
        inner = self._vector_rescorer(rerank, gap_correction)
        return TextFusion(self.catalog.texts, inner=inner) if text_match else inner

    def _vector_rescorer(self, rerank: RerankMethod, gap: GapMode | None) -> Rescorer | None:
        if gap is not None:
            mode = check_mode(gap)
            return GapRescorer(self.banks.gap(), self.catalog.item_vectors, mode=mode)
        method = check_method(rerank)
        if method == "none":
            return None
        gallery_bank = GALLERY_BANK_SIZE if method.startswith("dbnorm") else 0
        return HubnessRescorer(self.banks.terms(gallery_bank_size=gallery_bank), method)

    # -- classification, tags, moderation, duplicates -----------------------------------------
    def classify_items(
        self,
        clf: classify.Classifier,
        *,
        where: Sequence[str] = (),
        top_k: int = 5,
        per_moment: bool = False,
    ) -> list[classify.ItemResult]:
        """Classify indexed items from their stored vectors (`classify.classify_items`)."""
        return classify.classify_items(
            self.catalog, clf, where=where, top_k=top_k, per_moment=per_moment
        )

    def tag(
        self,
        clf: classify.Classifier,
        *,
        threshold: float | str = classify.AUTO,
        where: Sequence[str] = (),
        source: str = "zeroshot",
        dry_run: bool = False,
    ) -> classify.TagReport:
        """Tag indexed items with the classifier's labels (`classify.tag_items`)."""
        return classify.tag_items(
            self.catalog, clf, threshold=threshold, where=where, source=source, dry_run=dry_run
        )

    def moderate(
        self, policy: moderation.ModerationPolicy, *, where: Sequence[str] = (), tag: bool = False
    ) -> tuple[list[moderation.Flag], int]:
        """Flag indexed items against a policy (`moderation.moderate`)."""
        return moderation.moderate(self.catalog, self.encoder, policy, where=where, tag=tag)

    def find_duplicates(
        self,
        *,
        threshold: float = dedup.DEFAULT_THRESHOLD,
        k: int = dedup.DEFAULT_K,
        where: Sequence[str] = (),
        near: bool = True,
        verify: bool = True,
        use_index: bool = True,
    ) -> dedup.DedupReport:
        """Exact and near-duplicate groups (`dedup.find_duplicates`); ``use_index``: find
        neighbours with the ANN index (else an exact blockwise search)."""
        return dedup.find_duplicates(
            self.catalog,
            index=self.vector_index if use_index else None,
            threshold=threshold,
            k=k,
            where=where,
            near=near,
            verify=verify,
        )

    # -- exchange ------------------------------------------------------------------------------
    def export(
        self,
        out: Path | str,
        *,
        fmt: str = "clip-retrieval",
        dtype: str = "float16",
        items_only: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> ExchangeReport:
        """Write the library's vectors in clip-retrieval's layout (a folder) or as one
        Parquet table (a file); see `clipsearch.store.exchange`."""
        from clipsearch.store.exporting import export_catalog

        return export_catalog(
            self.catalog, out, fmt=fmt, dtype=dtype, items_only=items_only, progress=progress
        )

    def import_embeddings(
        self, source: Path | str, *, progress: Callable[[int, int], None] | None = None
    ) -> ExchangeReport:
        """Store embeddings exported by clipsearch or clip-retrieval (see
        `clipsearch.store.importing`). A source that does not record its model needs the
        library to be opened with that model (``model=`` or ``encoder=``), which is loaded
        to learn its fingerprint; a recorded model must match the library's."""
        from clipsearch.store.importing import import_embeddings

        binding = None
        if self._model is not None or self._injected:
            enc = self.encoder
            binding = ModelBinding(spec=enc.spec, fingerprint=enc.fingerprint, dim=enc.dim)
        # One writer at a time: an indexing run and an import would race for the same paths.
        with WriterLock(self.path, action="importing"):
            report = import_embeddings(self.catalog, source, binding=binding, progress=progress)
            with self._lock:
                self.vector_index()
        return report

    # -- status ----------------------------------------------------------------------------------
    def status(self, *, failures: int | None = 50) -> LibraryStatus:
        binding = self.catalog.model_binding()
        fails = [
            {"path": r.path, "kind": r.kind, "error": r.error or ""}
            for r in self.catalog.failures(limit=failures)
        ]
        return LibraryStatus(
            path=str(self.path),
            model=binding.spec if binding else None,
            fingerprint=binding.fingerprint if binding else None,
            dim=binding.dim if binding else None,
            stats={**self.catalog.stats(), "captions": self.catalog.texts.coverage(CAPTION)},
            failures=fails,
            ocr=self._text_status(),
            runtime=self.runtime_info(),
        )

    def _text_status(self) -> dict[str, Any]:
        texts = self.catalog.texts
        settings = texts.settings()
        return {"enabled": settings.ocr, "frames": settings.ocr_frames, **texts.coverage()}

    def close(self) -> None:
        if self._milvus_cache is not None:
            self._milvus_cache.close()  # Milvus Lite: lets another process open it
        self.catalog.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _date_text(value: str | date) -> str:
    """A date filter value as the text the ``taken`` clauses read."""
    return value.isoformat() if isinstance(value, date) else str(value)


def _paths(x: str | Path | Sequence[str | Path] | None) -> tuple[str, ...]:
    if x is None:
        return ()
    if isinstance(x, str | Path):
        return (str(x),)
    return tuple(str(p) for p in x)
