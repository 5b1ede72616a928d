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
from clipsearch.search.hits import FrameCurve, Hit
from clipsearch.search.moments import Moment, find_moments, shots_from_cuts
from clipsearch.search.rescore import Query, Rescorer, extra_candidates
from clipsearch.search.video import DEFAULT_POOLING, POOL_METHODS, PoolMethod

if TYPE_CHECKING:
    from clipsearch.search.query import QueryPlan
    from clipsearch.store import Catalog, ItemFilter

Pooling = PoolMethod  # how a video's frame scores become its score (search.video)
POOLINGS: tuple[Pooling, ...] = POOL_METHODS
MAX_K = 10_000
MAX_MOMENTS = 20


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


def decode_side(encoder: Encoder) -> int:
    """The shorter side images must keep when decoded for ``encoder`` (its input size), so
    JPEG draft decoding never goes below what the model's preprocessing needs."""
    size = getattr(encoder, "image_size", 224) or 224
    return int(min(size)) if isinstance(size, tuple | list) else int(size)


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
        """Rank items for one query vector (D,). Returns at most ``k`` hits after ``offset``.

        rescorer: re-score the top candidates (`clipsearch.search.rescore`): the engine
            fetches ``rescorer.depth(k + offset)`` raw hits plus the items the rescorer
            brings in (``candidates``), takes the rescorer's scores, and sorts, pages and
            renumbers by them.
        plan: the parsed query behind ``q``, for a rescorer that reads the query's text.
        """
        q = np.asarray(q, dtype=np.float32)
        if rescorer is None:
            return self.search_many(q[None, :], options)[0]
        options.validate()
        need = options.k + options.offset
        depth = min(MAX_K, max(rescorer.depth(need), need))
        hits = self.search_many(q[None, :], replace(options, k=depth, offset=0))[0]
        query = Query(q, plan)
        hits = self._bring_in(q, hits, extra_candidates(rescorer, query, depth), options)
        if not hits:
            return []
        scores = np.asarray(rescorer.rescore(query, hits), dtype=np.float64)
        if scores.shape != (len(hits),):
            raise ValueError(f"a rescorer returned scores {scores.shape} for {len(hits)} hits")
        order = sorted(range(len(hits)), key=lambda i: (-float(scores[i]), hits[i].item_id))
        return [
            replace(hits[i], score=float(scores[i]), rank=rank)
            for rank, i in enumerate(order[options.offset : need], start=options.offset + 1)
        ]

    def search_many(
        self, queries: np.ndarray, options: SearchOptions = SearchOptions()
    ) -> list[list[Hit]]:
        """Rank items for a batch of query vectors (Q, D): stage 1 is one matrix product.

        Stage 1 returns rows (item vectors and video frames) down to a score ``floor``. An
        item outside those rows scores at most ``floor`` after rescoring (its item vector,
        meanP vector or best frame is below it), so the page is exact once ``k + offset``
        rescored candidates reach the floor; otherwise the row window is widened. (Softmax
        pooling can exceed its best frame; for it the bound is a close approximation.)
        """
        options.validate()
        queries = l2_normalize(np.atleast_2d(queries))
        index = self._index()
        allowed = None
        if options.where is not None and not options.where.is_empty:
            allowed = self.catalog.vector_ids_where(options.where)
            if len(allowed) == 0:
                return [[] for _ in queries]
        need = options.k + options.offset
        total = len(index) if allowed is None else len(allowed)
        if total == 0:
            return [[] for _ in queries]
        kc = min(max(4 * need, 64), total)
        first = index.search(queries, kc, allowed=allowed, exact=options.exact)
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
                m = index.search(q[None, :], window, allowed=allowed, exact=options.exact)
                ids, scores = m.ids[0], m.scores[0]
            results.append(self._page(scored, context, options))
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
        extra = self._page(scored, context, replace(options, k=len(scored), offset=0))
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
        for item_id, vec in image_vectors.items():
            scored.append((float(vec @ q), item_id))
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
        self, scored: list[tuple[float, int]], context: dict, options: SearchOptions
    ) -> list[Hit]:
        records, frames, q = context["records"], context["frames"], context["q"]
        scored.sort(key=lambda s: (-s[0], s[1]))
        page = scored[options.offset : options.offset + options.k]
        videos = [i for _, i in page if i in frames]
        cuts = self.catalog.cuts(videos) if videos else {}
        hits = []
        for rank, (score, item_id) in enumerate(page, start=options.offset + 1):
            r = records[item_id]
            moments: tuple[Moment, ...] = ()
            curve = None
            if item_id in frames:
                ts, fv = frames[item_id]  # (F,), (F, D)
                sims = fv @ q  # (F,)
                duration = float(r.duration or ts[-1])
                moments = tuple(
                    find_moments(
                        ts,
                        sims,
                        duration=duration,
                        n=options.moments,
                        shots=shots_from_cuts(cuts[item_id], duration) if item_id in cuts else None,
                    )
                )
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
