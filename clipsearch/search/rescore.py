"""Second-stage re-scoring: the one hook through which `Searcher.search` reorders results.

A `Rescorer` rewrites the scores of a search's best candidates; the engine does the rest,
once for every rescorer:

1. widen — stage 1 and the exact rescoring (filters, video pooling, moments) run for
   ``max(rescorer.depth(k + offset), k + offset)`` raw hits (at most ``MAX_K``), offset 0;
2. bring in — the items ``rescorer.candidates(query, depth)`` names that stage 1 did not
   recall are scored exactly like the others (the search's filters apply) and merged
   into the raw hits by raw score; a rescorer without ``candidates`` adds none;
3. rescore — ``rescorer.rescore(query, hits)`` gives one new score per hit;
4. sort by (−new score, item id), cut the page [offset, offset + k), renumber the ranks
   and replace each hit's score by its new one.

Built in: `clipsearch.search.rerank.HubnessRescorer` (inverted softmax, QB-Norm, DBNorm)
and `clipsearch.search.gap.GapRescorer` (modality-gap shift / centring). The hook is made
for re-rankers of other kinds as well, e.g. a cross-encoder (BLIP image-text matching)
that re-reads the top K images of a text query (``query.text``, ``hit.path``, ``hit.kind``,
``hit.moment`` for a video's best frame; ``depth`` returns K). A second ranking, like the
full-text match of the text read in pictures (`clipsearch.search.textmatch`), brings its
own best items in through ``candidates`` and fuses the two orders in ``rescore``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from clipsearch.search.hits import Hit
    from clipsearch.search.query import QueryPlan

DEFAULT_WIDEN = 3  # a reranked page rescores 3× its length in raw candidates...
DEFAULT_FLOOR = 50  # ...and never fewer than 50


@dataclass(frozen=True)
class Query:
    """What a rescorer sees of the query.

    vector: the (D,) query vector the raw hits were ranked by, as the caller gave it (unit
        norm when it came from an encoder).
    plan: the parsed query it came from (its terms: texts with weights, example files),
        or None when the caller searched with a ready vector (e.g. "more like this").
    """

    vector: np.ndarray
    plan: QueryPlan | None = None

    @property
    def text(self) -> str | None:
        """The query's positive text terms joined by spaces (what a text–image model reads),
        or None when it has no text."""
        if self.plan is None:
            return None
        texts = [t.value for t in self.plan.terms if t.kind == "text" and t.weight > 0]
        return " ".join(texts) or None


class Rescorer(Protocol):
    """Re-scores a search's top candidates (module docstring for what the engine does).

    depth(need): how many raw candidates to rescore for a page that ends at rank ``need``
        (= k + offset). The engine fetches ``max(depth(need), need)``, capped at ``MAX_K``;
        a rescorer that only looks at its top K (an expensive cross-encoder) returns K and
        gives the hits below it scores that keep them below, in their raw order.
    rescore(query, hits): the new scores, shape (len(hits),), higher is better, for the
        raw candidates ``hits`` in raw order (best first; ``hits[0]`` is the raw top-1).
        Each hit carries its item id, path, kind, raw score (cosine, or the pooled video
        score) and, for a video, its best moment. Scores need not be cosines, but they
        replace the hits' scores in the results, so they should mean something to a user
        within one query. Raise a `ClipsearchError` for a condition the user can fix.
    candidates(query, depth) (optional): item ids to rescore besides the raw candidates,
        e.g. the best matches of another ranking; they reach ``rescore`` among ``hits``,
        placed by their raw score. Ids already among the raw candidates, unknown ids and
        items the search's filters exclude are dropped by the engine.
    relevant(query, hits) (optional): one bool per hit (in ``rescore``'s input order) for
        hits the rescorer knows to be relevant whatever their raw score (a picture whose
        text holds every word the query looks for). The relevance cut marks them relevant
        besides the best hits it counts on the raw scores.
    """

    def depth(self, need: int) -> int: ...

    def rescore(self, query: Query, hits: Sequence[Hit]) -> np.ndarray: ...


def extra_candidates(rescorer: Rescorer, query: Query, depth: int) -> list[int]:
    """The item ids ``rescorer`` brings in (none when it has no ``candidates``)."""
    candidates = getattr(rescorer, "candidates", None)
    return [] if candidates is None else [int(i) for i in candidates(query, depth)]


def vouched(rescorer: Rescorer, query: Query, hits: Sequence[Hit]) -> list[bool] | None:
    """The rescorer's ``relevant`` flags for ``hits`` (None when it has no opinion)."""
    relevant = getattr(rescorer, "relevant", None)
    if relevant is None:
        return None
    flags = [bool(f) for f in relevant(query, hits)]
    if len(flags) != len(hits):
        raise ValueError(f"a rescorer returned {len(flags)} relevant flags for {len(hits)} hits")
    return flags


def widened(need: int, *, widen: int = DEFAULT_WIDEN, floor: int = DEFAULT_FLOOR) -> int:
    """The usual rescoring depth: max(widen · need, floor) raw candidates."""
    return max(widen * need, floor)


@dataclass(frozen=True)
class WidenedDepth:
    """The `Rescorer.depth` of rescorers that look at a fixed multiple of the page:
    max(widen · (k + offset), 50) raw candidates (``widen`` is keyword-only)."""

    widen: int = field(default=DEFAULT_WIDEN, kw_only=True)

    def depth(self, need: int) -> int:
        return widened(need, widen=self.widen)
