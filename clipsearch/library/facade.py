"""`Library`: the Python face of clipsearch. One directory, one catalog, one model.

    >>> lib = Library("~/lib")                     # doctest: +SKIP
    >>> lib.index(["~/Pictures"])                  # doctest: +SKIP
    >>> for hit in lib.search("a dog on a beach", k=5):   # doctest: +SKIP
    ...     print(hit.score, hit.path)

Dependencies are injected (rclip style): pass ``encoder=`` to use any `Encoder`
(tests pass a deterministic fake); otherwise the model named by ``model=``, or the one
the library is bound to, or the default, is loaded on first use.

The facade wires collaborators that each own one concern and its state: `LibraryModels`
(the models, loaded on first use), `LibraryRuntime` (the image-encoder runtime),
`LibraryAnn` (the nearest-neighbour index), `LibraryIndexing` (index and caption runs),
`LibrarySearch` (search, query composition, rescorers); export/import and status are
plain functions (`clipsearch.library.exchange`, `clipsearch.library.status`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipsearch.ingest import IndexOptions
from clipsearch.library.ann import LibraryAnn
from clipsearch.library.indexing import LibraryIndexing
from clipsearch.library.models import LibraryModels
from clipsearch.library.runtime import LibraryRuntime
from clipsearch.library.settings import AnnSettings
from clipsearch.library.status import LibraryStatus, library_status
from clipsearch.search.choices import (
    AUTO_THRESHOLD,
    DEFAULT_POOLING,
    DEFAULT_TEXT_WEIGHT,
    DUPLICATE_NEIGHBOURS,
    DUPLICATE_THRESHOLD,
)
from clipsearch.store import Catalog
from clipsearch.store.location import default_library_path

# The search stack (numpy, the engine, rescorers, composition), classification, duplicates
# and export/import are imported on first use: opening a library to index or to show its
# status does not load them.
if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from clipsearch.index.base import IndexInfo, VectorIndex
    from clipsearch.ingest import IndexEvent, IndexReport
    from clipsearch.ingest.captioning import CaptionOptions, CaptionProgress, CaptionReport
    from clipsearch.ingest.ray_engine import RaySettings
    from clipsearch.library.searching import LibrarySearch
    from clipsearch.models.base import Encoder
    from clipsearch.models.blip import Captioner, ImageTextMatcher
    from clipsearch.models.runtime import RuntimeSettings
    from clipsearch.search import classify, dedup, moderation
    from clipsearch.search.banks import BankCache
    from clipsearch.search.choices import (
        Composition,
        ItmScoreRule,
        Pooling,
        Reranker,
        RerankMethod,
        SortOrder,
    )
    from clipsearch.search.compose import QueryParts
    from clipsearch.search.engine import Searcher
    from clipsearch.search.gap import GapMode
    from clipsearch.search.hits import SearchResults
    from clipsearch.search.query import QueryPlan
    from clipsearch.search.relevance import BackgroundCache, MinScore
    from clipsearch.search.rescore import Rescorer
    from clipsearch.store import ItemFilter
    from clipsearch.store.exchange import ExchangeReport

__all__ = ["AnnSettings", "Library", "LibraryStatus", "default_library_path"]


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
        self._runtime = LibraryRuntime(self.path, runtime=runtime, quantize=quantize)
        self.catalog = Catalog.open(self.path, create=create, readonly=readonly)
        self._lock = threading.RLock()
        self._models = LibraryModels(
            self.path,
            self.catalog,
            model=model,
            precision=precision,
            encoder=encoder,
            itm_model=itm_model,
            caption_model=caption_model,
            matcher=matcher,
            captioner=captioner,
            lock=self._lock,
        )
        self._ann = LibraryAnn(self.path, self.catalog, self._lock)
        # Collaborators reach the models through this object, so a subclass's are used.
        self._indexing = LibraryIndexing(
            self.path, self.catalog, self, self._models, self._runtime, self._ann
        )
        self._searching: LibrarySearch | None = None

    @property
    def _search(self) -> LibrarySearch:
        """Search over this library, set up on first use."""
        with self._lock:
            if self._searching is None:
                from clipsearch.library.searching import LibrarySearch

                self._searching = LibrarySearch(
                    self.path, self.catalog, self, self.vector_index, self._lock
                )
            return self._searching

    # -- model ----------------------------------------------------------------------------------
    @property
    def model_spec(self) -> str:
        """The spec of the model this library uses (without loading it)."""
        return self._models.model_spec

    @property
    def model_loaded(self) -> bool:
        """True once the model (or the text tower queries use) is in memory (the server reports
        it without loading it)."""
        return self._models.loaded

    @property
    def query_encoder(self) -> Encoder:
        """The encoder of search queries. When the library is bound to a model whose text tower
        has a ready copy (`clipsearch.models.text_tower`), texts are encoded on numpy from it:
        no torch, no image tower, and the same vectors in every process (CLI and server).
        Images then go to `encoder`, loaded by the first image query. Otherwise `encoder`."""
        return self._models.query_encoder(lambda: self.encoder)

    @property
    def encoder(self) -> Encoder:
        """The model, loaded on first use (thread-safe)."""
        return self._models.encoder

    @property
    def matcher(self) -> ImageTextMatcher:
        """The BLIP ITM model for ``rerank="itm"``, loaded on first use (thread-safe).
        Raises as `clipsearch.models.blip.load_matcher`."""
        return self._models.matcher

    @property
    def captioner(self) -> Captioner:
        """The BLIP captioning model, loaded on first use (thread-safe)."""
        return self._models.captioner

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
        return self._indexing.index(
            roots,
            options=options,
            on_event=on_event,
            should_stop=should_stop,
            ray=ray,
            captions=captions,
            on_caption=on_caption,
        )

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
        return self._indexing.caption(options, on_event=on_event, should_stop=should_stop)

    # -- image-encoder runtime ---------------------------------------------------------------------
    @property
    def runtime_settings(self) -> RuntimeSettings:
        """The image-encoder runtime indexing uses (``<library>/runtime.json`` unless this
        object was given others)."""
        return self._runtime.settings

    def set_runtime(
        self, *, runtime: str | None = None, quantize: str | None = None
    ) -> RuntimeSettings:
        """Choose and remember the image-encoder runtime and quantization for indexing.

        Raises UsageError for unknown names or int8 with the torch runtime, and
        MissingDependencyError when "openvino" is asked for but not installed.
        """
        return self._runtime.set(runtime=runtime, quantize=quantize)

    def runtime_info(self) -> dict[str, Any]:
        """The runtime settings and the image encoders built for the library's model, with
        their accuracy-gate figures (what `status` shows)."""
        return self._runtime.info(self.catalog)

    # -- nearest-neighbour index ---------------------------------------------------------------
    @property
    def ann_settings(self) -> AnnSettings:
        """The library's ANN choice (``reindex --ann``), kept in ``<library>/ann.json``."""
        return self._ann.settings

    def vector_index(self, *, progress: Callable[[str, float], None] | None = None) -> VectorIndex:
        """The nearest-neighbour index over the catalog, refreshed when the catalog changed
        (loaded from the cache, updated incrementally, or rebuilt: docs/architecture.md#caches)."""
        return self._ann.current(progress=progress)

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
        self._ann.rebuild(
            backend=backend, recall_target=recall_target, milvus_uri=milvus_uri, progress=progress
        )
        return self.index_info()

    def index_info(self) -> IndexInfo | None:
        """Backend, parameters, vectors, memory and measured recall@10 of the ANN cache."""
        return self._ann.info()

    # -- search ----------------------------------------------------------------------------------
    def searcher(self) -> Searcher:
        return self._search.searcher()

    def embed_query(
        self,
        query: str | None = None,
        *,
        image: str | Path | Sequence[str | Path] | None = None,
        video: str | Path | Sequence[str | Path] | None = None,
    ) -> np.ndarray:
        """The query vector (D,) for a query string and/or example files."""
        return self._search.embed_query(query, image=image, video=video)

    @staticmethod
    def plan(
        query: str | None = None,
        *,
        image: str | Path | Sequence[str | Path] | None = None,
        video: str | Path | Sequence[str | Path] | None = None,
    ) -> QueryPlan:
        from clipsearch.library.searching import query_plan

        return query_plan(query, image=image, video=video)

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
        return self._search.search(
            query,
            image=image,
            video=video,
            vector=vector,
            k=k,
            offset=offset,
            kind=kind,
            where=where,
            pooling=pooling,
            tau=tau,
            exact=exact,
            with_curve=with_curve,
            moments=moments,
            rerank=rerank,
            gap_correction=gap_correction,
            plan=plan,
            text_match=text_match,
            phrases=phrases,
            min_score=min_score,
            sort=sort,
            collapse=collapse,
            taken_after=taken_after,
            taken_before=taken_before,
            rerank_k=rerank_k,
            rerank_score=rerank_score,
            rerank_text=rerank_text,
            with_captions=with_captions,
        )

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
        return self._search.query_parts(
            text,
            images=images,
            like=like,
            text_weight=text_weight,
            image_weight=image_weight,
            like_weight=like_weight,
            files=files,
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

    def compose_image_text(
        self,
        image: str | Path,
        text: str,
        *,
        method: Composition = "slerp",
        text_weight: float = DEFAULT_TEXT_WEIGHT,
    ) -> np.ndarray:
        """One query vector (D,) from an example image file and a text that modifies it
        ("this shirt, in red"): both encoded with this library's model, then combined by
        spherical interpolation ("slerp") or a weighted sum ("sum") with the text at
        ``text_weight`` (0..1; `clipsearch.search.compose.compose`). Use the vector with
        ``search(vector=...)``. Raises QueryError for an empty text or an unreadable image,
        UsageError for an unknown method or a weight outside 0..1."""
        return self._search.compose_image_text(image, text, method=method, text_weight=text_weight)

    @property
    def background(self) -> BackgroundCache:
        """The sample of this library's items the "auto" relevance cut reads each query's
        background from (clipsearch.search.relevance), drawn once per catalog change."""
        return self._search.background

    @property
    def banks(self) -> BankCache:
        """The cached bank terms and modality gap of this library (``<library>/rerank``)."""
        return self._search.banks

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
        return self._search.rescorer(
            rerank=rerank, gap_correction=gap_correction, text_match=text_match
        )

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
        from clipsearch.search import classify

        return classify.classify_items(
            self.catalog, clf, where=where, top_k=top_k, per_moment=per_moment
        )

    def tag(
        self,
        clf: classify.Classifier,
        *,
        threshold: float | str = AUTO_THRESHOLD,
        where: Sequence[str] = (),
        source: str = "zeroshot",
        dry_run: bool = False,
    ) -> classify.TagReport:
        """Tag indexed items with the classifier's labels (`classify.tag_items`)."""
        from clipsearch.search import classify

        return classify.tag_items(
            self.catalog, clf, threshold=threshold, where=where, source=source, dry_run=dry_run
        )

    def moderate(
        self, policy: moderation.ModerationPolicy, *, where: Sequence[str] = (), tag: bool = False
    ) -> tuple[list[moderation.Flag], int]:
        """Flag indexed items against a policy (`moderation.moderate`)."""
        from clipsearch.search import moderation

        return moderation.moderate(self.catalog, self.encoder, policy, where=where, tag=tag)

    def find_duplicates(
        self,
        *,
        threshold: float = DUPLICATE_THRESHOLD,
        k: int = DUPLICATE_NEIGHBOURS,
        where: Sequence[str] = (),
        near: bool = True,
        verify: bool = True,
        use_index: bool = True,
    ) -> dedup.DedupReport:
        """Exact and near-duplicate groups (`dedup.find_duplicates`); ``use_index``: find
        neighbours with the ANN index (else an exact blockwise search)."""
        from clipsearch.search import dedup

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
        from clipsearch.library.exchange import export_library

        return export_library(
            self.catalog, out, fmt=fmt, dtype=dtype, items_only=items_only, progress=progress
        )

    def import_embeddings(
        self, source: Path | str, *, progress: Callable[[int, int], None] | None = None
    ) -> ExchangeReport:
        """Store embeddings exported by clipsearch or clip-retrieval (see
        `clipsearch.store.importing`). A source that does not record its model needs the
        library to be opened with that model (``model=`` or ``encoder=``), which is loaded
        to learn its fingerprint; a recorded model must match the library's."""
        from clipsearch.library.exchange import import_into_library

        return import_into_library(
            self.path,
            self.catalog,
            source,
            models=self,
            named=self._models.named,
            ann=self._ann,
            lock=self._lock,
            progress=progress,
        )

    # -- status ----------------------------------------------------------------------------------
    def status(self, *, failures: int | None = 50) -> LibraryStatus:
        return library_status(
            self.path, self.catalog, runtime=self.runtime_info(), failures=failures
        )

    def close(self) -> None:
        self._ann.close()
        self.catalog.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
