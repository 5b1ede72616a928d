"""Searching a library: a query (text, example files or a vector) and the search options
become filters, a relevance cut, a rescorer and a `Searcher` run over the current ANN
index; plus query composition and the per-library caches rescoring reads (bank terms,
modality gap, the relevance cut's background sample)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipsearch.errors import NotFoundError, UsageError
from clipsearch.index.base import VectorIndex
from clipsearch.library.models import ModelSource
from clipsearch.models.base import l2_normalize
from clipsearch.search.arrange import SortOrder
from clipsearch.search.banks import BankCache
from clipsearch.search.captions import with_captions_of
from clipsearch.search.compose import Composition, QueryParts, composed_query, encode_plan
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
from clipsearch.store import Catalog, ItemFilter
from clipsearch.store.filters import taken_bounds
from clipsearch.store.texts import CAPTION, OCR

if TYPE_CHECKING:
    from PIL import Image

    from clipsearch.search.choices import ItmScoreRule, Reranker

Files = str | Path | Sequence[str | Path] | None


class LibrarySearch:
    """Searches over one library's catalog with its models; ``vector_index`` returns the
    current ANN index, ``lock`` is the library's lock."""

    def __init__(
        self,
        path: Path,
        catalog: Catalog,
        models: ModelSource,
        vector_index: Callable[[], VectorIndex],
        lock: threading.RLock,
    ) -> None:
        self.path = path
        self.catalog = catalog
        self.models = models
        self.vector_index = vector_index
        self._lock = lock
        self._banks: BankCache | None = None
        self._background: BackgroundCache | None = None

    def searcher(self) -> Searcher:
        return Searcher(self.catalog, self.vector_index)

    def embed_query(self, query: str | None, *, image: Files, video: Files) -> np.ndarray:
        """The query vector (D,) for a query string and/or example files."""
        return encode_plan(query_plan(query, image=image, video=video), self.models.query_encoder)

    def search(
        self,
        query: str | None,
        *,
        image: Files,
        video: Files,
        vector: np.ndarray | None,
        k: int,
        offset: int,
        kind: str | None,
        where: Sequence[str] | ItemFilter,
        pooling: Pooling,
        tau: float | None,
        exact: bool,
        with_curve: bool,
        moments: int,
        rerank: Reranker,
        gap_correction: GapMode | None,
        plan: QueryPlan | None,
        text_match: bool | None,
        phrases: bool | None,
        min_score: MinScore,
        sort: SortOrder,
        collapse: bool,
        taken_after: str | date | None,
        taken_before: str | date | None,
        rerank_k: int,
        rerank_score: ItmScoreRule,
        rerank_text: str | None,
        with_captions: bool,
    ) -> SearchResults:
        """`Library.search` (its docstring documents the arguments and errors)."""
        if isinstance(where, ItemFilter):
            flt = where
        else:
            flt = ItemFilter.parse([where] if isinstance(where, str) else list(where))
        if kind:
            flt = flt & ItemFilter.parse([f"kind:{kind}"])
        if vector is None:
            plan = query_plan(query, image=image, video=video)
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
                lambda: self.models.matcher, plan, k=rerank_k, score=rerank_score, text=rerank_text
            )
        if vector is None:
            vector = encode_plan(plan, self.models.query_encoder)
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

    # -- query composition ------------------------------------------------------------------
    def query_parts(
        self,
        text: str | None,
        *,
        images: Sequence[Image.Image],
        like: Sequence[int],
        text_weight: float,
        image_weight: float,
        like_weight: float,
        files: bool,
    ) -> QueryParts:
        """`Library.query_parts`."""
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

    def compose_image_text(
        self, image: str | Path, text: str, *, method: Composition, text_weight: float
    ) -> np.ndarray:
        """`Library.compose_image_text`."""
        return composed_query(
            self.models.encoder, image, text, method=method, text_weight=text_weight
        )

    # -- per-library caches and rescorers ---------------------------------------------------
    @property
    def background(self) -> BackgroundCache:
        """`Library.background`."""
        with self._lock:
            if self._background is None:
                self._background = BackgroundCache(self.catalog)
            return self._background

    @property
    def banks(self) -> BankCache:
        """`Library.banks`."""
        with self._lock:
            if self._banks is None:
                self._banks = BankCache(self.catalog, self.models.encoder, self.path / "rerank")
            return self._banks

    def rescorer(
        self, *, rerank: RerankMethod, gap_correction: GapMode | None, text_match: bool
    ) -> Rescorer | None:
        """`Library.rescorer`."""
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


def query_plan(query: str | None = None, *, image: Files = None, video: Files = None) -> QueryPlan:
    """The plan of a query string and example files (`Library.plan`)."""
    return plan_from_parts(text=query, images=_paths(image), videos=_paths(video))


def _date_text(value: str | date) -> str:
    """A date filter value as the text the ``taken`` clauses read."""
    return value.isoformat() if isinstance(value, date) else str(value)


def _paths(x: Files) -> tuple[str, ...]:
    if x is None:
        return ()
    if isinstance(x, str | Path):
        return (str(x),)
    return tuple(str(p) for p in x)
