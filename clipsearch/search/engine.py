"""Two-stage search: nearest-neighbour recall over catalog vectors, then exact rescoring.

Stage 1 asks the `VectorIndex` for the rows nearest to the query among item vectors
(images, and each video's meanP vector) and video frame vectors. Stage 2 rescores every
candidate item exactly: an image by its own vector, a video by pooling its frame
similarities (peak / mean / max / softmax: docs/video.md). The videos on the
returned page then get their moments (`clipsearch.search.moments`: up to ``moments`` per
video, edges on the shot boundaries stored at indexing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from clipsearch.errors import UsageError
from clipsearch.index.base import VectorIndex
from clipsearch.models.base import Encoder, l2_normalize
from clipsearch.search import arrange
from clipsearch.search.choices import (
    MAX_K,
    MAX_MOMENTS,
    POOLINGS,
    SORT_ORDERS,
    Pooling,
    SortOrder,
)
from clipsearch.search.dedup import DEFAULT_THRESHOLD
from clipsearch.search.hits import FrameCurve, Hit
from clipsearch.search.moments import Moment, find_moments, shots_from_cuts
from clipsearch.search.rescore import Query, Rescorer, extra_candidates, vouched
from clipsearch.search.video import DEFAULT_POOLING

if TYPE_CHECKING:
    from clipsearch.search.query import QueryPlan
    from clipsearch.store import Catalog, ItemFilter

DATE_DEPTH = 256  # a date order starts with this many candidates and widens 4× until the cut


@dataclass(frozen=True)
class SearchOptions:
    """How to search. All fields have sane defaults; see `Searcher.search`."""

    k: int = 20  # results to return
    offset: int = 0  # skip this many (paging)
    where: ItemFilter | None = None  # metadata filter (path, kind, dates, size, roots)
    pooling: Pooling = DEFAULT_POOLING  # video scoring: peak | mean (CLIP4Clip) | max | softmax
    tau: float | None = None  # peak/softmax temperature; None: the method's own (0.01 / 0.1)
    exact: bool = False  # force exact stage 1 even on an ANN index
    with_curve: bool = False  # attach each video's frame score curve
    moments: int = 1  # up to this many moments per video hit, best first
    min_score: float | None = None  # relevance cut (a cosine; search.relevance); None: none
    sort: SortOrder = "relevance"  # the relevant results by: relevance | date | -date
    collapse: bool = False  # fold near-duplicates into one result (search.arrange)
    collapse_threshold: float = DEFAULT_THRESHOLD  # cosine of near-duplicates (dedup's)

    def validate(self) -> None:
        if not 1 <= self.k <= MAX_K:
            raise UsageError(f"k must be between 1 and {MAX_K}, got {self.k}")
        if self.offset < 0:
            raise UsageError(f"offset must be >= 0, got {self.offset}")
        if self.pooling not in POOLINGS:
            raise UsageError(
                f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}"
            )
        if self.tau is not None and not self.tau > 0:
            raise UsageError(f"tau must be > 0, got {self.tau}")
        if not 1 <= self.moments <= MAX_MOMENTS:
            raise UsageError(
                f"moments must be between 1 and {MAX_MOMENTS} per video, got {self.moments}"
            )
        if self.sort not in SORT_ORDERS:
            raise UsageError(f"unknown sort {self.sort!r}; choose one of {', '.join(SORT_ORDERS)}")
        if self.min_score is not None and not -1.0 <= self.min_score <= 1.0:
            raise UsageError(f"min_score must be a cosine in [-1, 1], got {self.min_score}")
        if not 0.0 < self.collapse_threshold <= 1.0:
            raise UsageError(f"collapse_threshold must be in (0, 1], got {self.collapse_threshold}")


def all_above(hits: list[Hit], min_score: float | None) -> bool:
    """True when every one of ``hits`` (raw order) is above the cut: more may be."""
    return min_score is None or (bool(hits) and hits[-1].score >= min_score)


def _rescored(
    rescorer: Rescorer, q: np.ndarray, plan: QueryPlan | None, hits: list[Hit]
) -> list[Hit]:
    """``hits`` with the rescorer's scores, in its order (ties by item id)."""
    scores = np.asarray(rescorer.rescore(Query(q, plan), hits), dtype=np.float64)
    if scores.shape != (len(hits),):
        raise ValueError(f"a rescorer returned scores {scores.shape} for {len(hits)} hits")
    order = sorted(range(len(hits)), key=lambda i: (-float(scores[i]), hits[i].item_id))
    return [replace(hits[i], score=float(scores[i])) for i in order]


def _with_vouched(
    rescorer: Rescorer, query: Query, hits: list[Hit], above: set[int]
) -> tuple[list[Hit], int]:
    """``hits`` (rescored order) with the relevant ones first, and how many they are.

    Relevant: the hits the rescorer vouches for (`vouched`), and as many of the others as
    reached the cut on their raw scores (``above``: item ids), taken in the new order —
    a re-ranker reorders without changing how many answers a query has, and what it
    vouches for adds to them rather than taking their place."""
    sure = vouched(rescorer, query, hits)
    if sure is None:
        return hits, len(above)
    quota = sum(1 for h, s in zip(hits, sure, strict=True) if h.item_id in above and not s)
    flags = []
    for s in sure:
        counted = not s and quota > 0  # one of the answers the raw scores counted
        quota -= counted
        flags.append(s or counted)
    first = [h for h, f in zip(hits, flags, strict=True) if f]
    rest = [h for h, f in zip(hits, flags, strict=True) if not f]
    return first + rest, len(first)


def decode_side(encoder: Encoder) -> int:
    """The shorter side images must keep when decoded for ``encoder`` (its input size), so
    JPEG draft decoding never goes below what the model's preprocessing needs."""
    size = getattr(encoder, "image_size", 224) or 224
    return int(min(size)) if isinstance(size, tuple | list) else int(size)


def index_expression(index: VectorIndex, where: ItemFilter) -> str | None:
    """The filter as an expression the index evaluates itself, when it holds the metadata
    (``filter_dialect = "milvus"``, see `clipsearch.index.base.ExpressionFilteredIndex`);
    None when it does not, or the filter cannot be written that way (then the catalog
    turns the filter into allowed ids)."""
    if getattr(index, "filter_dialect", None) != "milvus":
        return None
    from clipsearch.store.filter_milvus import milvus_expression

    return milvus_expression(where)


class Searcher:
    """Runs searches against a catalog and an index. Holds no terminal or HTTP logic.

    catalog: the source of truth (item metadata, frame vectors, filters).
    index: a callable returning the current `VectorIndex` (so a caller can refresh a
        stale cache between queries without rebuilding the Searcher).
    """

    def __init__(self, catalog: Catalog, index: Callable[[], VectorIndex]) -> None:
        self.catalog = catalog
        self._index = index

    def search(
        self,
        q: np.ndarray,
        options: SearchOptions = SearchOptions(),
        *,
        rescorer: Rescorer | None = None,
        plan: QueryPlan | None = None,
    ) -> list[Hit]:
        """Rank items for one query vector (D,). Returns at most ``k`` results after ``offset``.

        The relevance cut, near-duplicate folding, date order and paging follow the ranking
        (`clipsearch.search.arrange`): the candidates ranked are as many as those need —
        the page, a rescorer's depth, ``collapse_depth`` for folding, and for a date order
        every candidate above the cut (at most ``MAX_K``).

        rescorer: re-score the top candidates (`clipsearch.search.rescore`): the engine
            fetches ``rescorer.depth(k + offset)`` raw hits plus the items the rescorer
            brings in (``candidates``), takes the rescorer's scores, and sorts, pages and
            renumbers by them; the cut's count of relevant hits is taken on the raw scores
            and applied to the new order.
        plan: the parsed query behind ``q``, for a rescorer that reads the query's text.

        Video moments are found for the page only, once it is arranged: for each shown
        video and each video folded into a shown result (``members``) — with a rescorer,
        for the candidates it is given (it may read a video's best frame, ``hit.moment``).
        """
        q = np.asarray(q, dtype=np.float32)
        options.validate()
        need = options.k + options.offset
        depth = need
        if rescorer is not None:
            depth = max(depth, rescorer.depth(need))
        if options.collapse:
            depth = max(depth, arrange.collapse_depth(need))
        if options.sort != "relevance":  # every candidate above the cut is needed
            depth = MAX_K if options.min_score is None else max(depth, DATE_DEPTH)
        depth = min(MAX_K, depth)
        qn = l2_normalize(q[None, :])[0]
        while True:
            window = replace(options, k=depth, offset=0)
            hits = self._search_many(q[None, :], window, localise=False)[0]
            more = len(hits) == depth and depth < MAX_K  # candidates past the window exist
            by_date = options.sort != "relevance"
            if more and by_date and all_above(hits, options.min_score):
                depth = min(MAX_K, depth * 4)  # a date order needs every relevant candidate
                continue
            if rescorer is not None:
                extra = extra_candidates(rescorer, Query(q, plan), depth)
                hits = self._bring_in(q, hits, extra, options)
            n_relevant = arrange.count_relevant(hits, options.min_score)
            if rescorer is not None and hits:
                hits = self._with_moments(qn, hits, options)  # a rescorer may read them
                above = {h.item_id for h in hits[:n_relevant]}  # raw order: the head
                hits = _rescored(rescorer, q, plan, hits)
                if options.min_score is not None:
                    hits, n_relevant = _with_vouched(rescorer, Query(q, plan), hits, above)
            page, results = arrange.arrange(
                hits,
                n_relevant,
                self.catalog,
                k=options.k,
                offset=options.offset,
                sort=options.sort,
                collapse=options.collapse,
                collapse_threshold=options.collapse_threshold,
            )
            if more and options.collapse and results < need:
                depth = min(MAX_K, depth * 2)  # folding left too few results: look further
                continue
            if rescorer is not None:
                return page  # its hits were localised for the rescorer
            return self._with_moments(qn, page, options)

    def search_many(
        self, queries: np.ndarray, options: SearchOptions = SearchOptions()
    ) -> list[list[Hit]]:
        """Rank items for a batch of query vectors (Q, D): stage 1 is one matrix product.

        Stage 1 returns rows (item vectors and video frames) down to a score ``floor``. An
        item outside those rows scores at most ``floor`` after rescoring (its item vector,
        meanP vector or best frame is below it), so the page is exact once ``k + offset``
        rescored candidates reach the floor; otherwise the row window is widened. (Softmax
        pooling can exceed its best frame; for it the bound is a close approximation.)
        Video hits carry their moments.
        """
        return self._search_many(queries, options, localise=True)

    def _search_many(
        self, queries: np.ndarray, options: SearchOptions, *, localise: bool
    ) -> list[list[Hit]]:
        """`search_many`; ``localise``: find the page's video moments (else none)."""
        options.validate()
        queries = l2_normalize(np.atleast_2d(queries))
        index = self._index()
        allowed = None
        engine_filter: dict[str, str] = {}  # a filter the index evaluates itself (Milvus)
        if options.where is not None and not options.where.is_empty:
            expression = index_expression(index, options.where)
            if expression is not None:
                engine_filter = {"expression": expression}
            else:
                allowed = self.catalog.vector_ids_where(options.where)
                if len(allowed) == 0:
                    return [[] for _ in queries]
        need = options.k + options.offset
        # With an engine-side filter the number of matching rows is not known here: the
        # index returns fewer than asked (padded with -1) when fewer match.
        total = len(index) if allowed is None else len(allowed)
        if total == 0:
            return [[] for _ in queries]
        kc = min(max(4 * need, 64), total)
        first = index.search(queries, kc, allowed=allowed, exact=options.exact, **engine_filter)
        results = []
        for qi, q in enumerate(queries):
            ids, scores, window = first.ids[qi], first.scores[qi], kc
            while True:
                keep = ids >= 0
                ids, scores = ids[keep], scores[keep]
                scored, context = self._score(q, self._candidates(ids), options)
                floor = float(scores[-1]) if len(scores) else -np.inf
                widen = len(ids) == window and window < total
                if not widen or sum(1 for sc, _ in scored if sc >= floor) >= need:
                    break
                window = min(window * 4, total)
                m = index.search(
                    q[None, :], window, allowed=allowed, exact=options.exact, **engine_filter
                )
                ids, scores = m.ids[0], m.scores[0]
            results.append(self._page(scored, context, options, localise=localise))
        return results

    def _bring_in(
        self, q: np.ndarray, hits: list[Hit], ids: list[int], options: SearchOptions
    ) -> list[Hit]:
        """``hits`` plus the items ``ids`` that are not among them and pass the filter,
        scored exactly like them, in raw order (ranks renumbered)."""
        seen = {h.item_id for h in hits}
        ids = [i for i in dict.fromkeys(ids) if i not in seen]
        if ids:
            ids = self.catalog.items_where(ids, options.where)
        if not ids:
            return hits
        scored, context = self._score(l2_normalize(q[None, :])[0], ids, options)
        everything = replace(options, k=len(scored), offset=0)
        extra = self._page(scored, context, everything, localise=False)
        merged = sorted([*hits, *extra], key=lambda h: (-h.score, h.item_id))
        return [replace(h, rank=rank) for rank, h in enumerate(merged, start=1)]

    # -- stage 1 ------------------------------------------------------------------------------
    def _candidates(self, ids: np.ndarray) -> list[int]:
        """Distinct live item ids behind vector rows, in row order (rows of items deleted
        since the index was built map to -1 and are dropped)."""
        item_ids, _ = self.catalog.items_for_vectors(ids)
        return [int(i) for i in dict.fromkeys(item_ids.tolist()) if i >= 0]

    # -- stage 2 ------------------------------------------------------------------------------
    def _score(
        self, q: np.ndarray, cands: list[int], options: SearchOptions
    ) -> tuple[list[tuple[float, int]], dict]:
        """Exact scores of candidate items: images by their vector, videos by pooling."""
        records = self.catalog.items(cands) if cands else {}
        scored: list[tuple[float, int]] = []
        video_ids = [i for i, r in records.items() if r.kind == "video"]
        image_vectors = self.catalog.item_vectors(
            [i for i, r in records.items() if r.kind == "image"]
        )
        if image_vectors:  # one product for all images: a page of thousands is one call
            ids = list(image_vectors)
            sims = np.stack([image_vectors[i] for i in ids]) @ q  # (I,)
            scored.extend(zip(sims.tolist(), ids, strict=True))
        frames: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if video_ids:
            frames = self.catalog.frames(video_ids)
            video_ids = [i for i in video_ids if i in frames and len(frames[i][0])]
        if video_ids:
            from clipsearch.search.video import FrameSets, pool_scores_batch

            sets = FrameSets.from_list([frames[i][1] for i in video_ids])
            pooled = pool_scores_batch(q[None, :], sets, options.pooling, tau=options.tau)[0]
            scored.extend((float(pooled[v]), item_id) for v, item_id in enumerate(video_ids))
        return scored, {"records": records, "frames": frames, "q": q}

    def _page(
        self,
        scored: list[tuple[float, int]],
        context: dict,
        options: SearchOptions,
        *,
        localise: bool,
    ) -> list[Hit]:
        records, frames, q = context["records"], context["frames"], context["q"]
        scored.sort(key=lambda s: (-s[0], s[1]))
        page = scored[options.offset : options.offset + options.k]
        videos = [i for _, i in page if i in frames]
        cuts = self.catalog.cuts(videos) if videos and localise else {}
        hits = []
        for rank, (score, item_id) in enumerate(page, start=options.offset + 1):
            r = records[item_id]
            moments: tuple[Moment, ...] = ()
            curve = None
            if item_id in frames:
                ts, fv = frames[item_id]  # (F,), (F, D)
                sims = fv @ q  # (F,)
                if localise:
                    moments = _moments(ts, sims, r.duration, cuts.get(item_id), options)
                if options.with_curve:
                    curve = FrameCurve(ts, sims.astype(np.float32))
            hits.append(
                Hit(
                    item_id=item_id,
                    path=r.path,
                    kind=r.kind,
                    score=score,
                    rank=rank,
                    width=r.width,
                    height=r.height,
                    duration=r.duration,
                    moments=moments,
                    curve=curve,
                )
            )
        return hits

    def _with_moments(self, q: np.ndarray, page: list[Hit], options: SearchOptions) -> list[Hit]:
        """``page`` with the moments of its videos and of the videos folded into its results
        (``q``: the normalised query)."""
        ids = [
            h.item_id
            for hit in page
            for h in (hit, *(m.hit for m in hit.members or ()))
            if h.kind == "video"
        ]
        if not ids:
            return page
        frames = self.catalog.frames(ids)
        cuts = self.catalog.cuts(ids)

        def localised(h: Hit) -> Hit:
            if h.kind != "video" or h.item_id not in frames or not len(frames[h.item_id][0]):
                return h
            ts, fv = frames[h.item_id]
            found = _moments(ts, fv @ q, h.duration, cuts.get(h.item_id), options)
            return replace(h, moments=found)

        return [
            replace(
                localised(hit),
                members=None
                if hit.members is None
                else tuple(replace(m, hit=localised(m.hit)) for m in hit.members),
            )
            for hit in page
        ]


def _moments(
    ts: np.ndarray,
    sims: np.ndarray,
    duration: float | None,
    cuts: np.ndarray | None,
    options: SearchOptions,
) -> tuple[Moment, ...]:
    """Up to ``options.moments`` moments of a video from its frame scores ``sims`` at
    ``ts`` (its stored shot ``cuts``, when known, bound them)."""
    length = float(duration or ts[-1])
    shots = shots_from_cuts(cuts, length) if cuts is not None else None
    return tuple(find_moments(ts, sims, duration=length, n=options.moments, shots=shots))
