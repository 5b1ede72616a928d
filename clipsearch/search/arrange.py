"""After ranking: the relevance cut, folding near-duplicates, date order, and the page.

`Searcher.search` ranks a window of candidates (stage 1 + exact rescoring, a rescorer's
scores if any) and hands them here, best first:

1. **cut** — the first ``n_relevant`` candidates are relevant: those whose score before
   any re-ranking reaches ``SearchOptions.min_score`` (clipsearch.search.relevance). A
   re-ranker reorders, the cut says how many of its best are relevant, so the relevant
   results are always the head of the list.
2. **collapse** (``SearchOptions.collapse``) — near-duplicates among the candidates are
   folded into one result, the best-ranked member; the others become its ``members``.
   Two candidates are near-duplicates when the cosine of their stored item vectors is ≥
   ``collapse_threshold`` (the `clipsearch dedup` threshold, 0.95) and they are of one
   kind; groups are the connected components of those pairs (union-find, as in dedup).
   Only the best ``COLLAPSE_WINDOW`` candidates are compared (one (W, W) product, no
   index look-ups): a copy ranked below the window is not folded.
3. **sort** (``SearchOptions.sort``) — ``date`` (oldest first) or ``-date`` (newest
   first) orders the relevant results by when they were taken (clipsearch.media.
   capture_time; the mtime when unknown); the rest follow by score.
4. **page** — ``[offset, offset + k)`` of that list, ranks renumbered from offset + 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from clipsearch.media.capture_time import CaptureTime
from clipsearch.search.choices import SortOrder
from clipsearch.search.dedup import UnionFind
from clipsearch.search.hits import Duplicate, Hit

if TYPE_CHECKING:
    from clipsearch.store import Catalog

COLLAPSE_WINDOW = 2000  # candidates compared for near-duplicates (a (W, W) product)
COLLAPSE_WIDEN = 3  # a collapsed page looks at 3× its length in candidates...
COLLAPSE_FLOOR = 60  # ...and at least 60


def collapse_depth(need: int) -> int:
    """Candidates to rank for a collapsed page ending at rank ``need``."""
    return max(COLLAPSE_WIDEN * need, COLLAPSE_FLOOR)


def count_relevant(hits: Sequence[Hit], min_score: float | None) -> int:
    """How many of ``hits`` (in raw score order) reach the cut (all of them without one)."""
    if min_score is None:
        return len(hits)
    return sum(1 for h in hits if h.score >= min_score)


@dataclass(frozen=True)
class Group:
    """A result and the near-duplicates folded into it (positions in the candidate list)."""

    head: int
    members: tuple[int, ...] = ()


def fold(
    hits: Sequence[Hit], catalog: Catalog, *, threshold: float, window: int = COLLAPSE_WINDOW
) -> tuple[list[Group], dict[tuple[int, int], float]]:
    """Group near-duplicates among the first ``window`` of ``hits`` (ranked best first):
    (groups in rank order by their best member, cosine of each (head, member) pair).
    Candidates past the window stay alone."""
    n = min(len(hits), window)
    ids = [h.item_id for h in hits[:n]]
    stored = catalog.item_vectors(ids)
    have = [i for i in range(n) if ids[i] in stored]
    sims = np.zeros((0, 0), dtype=np.float32)
    uf = UnionFind(len(hits))
    if len(have) > 1:
        vecs = np.stack([stored[ids[i]] for i in have]).astype(np.float32)  # (W, D)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        sims = vecs @ vecs.T  # (W, W)
        kinds = np.array([hits[i].kind for i in have])
        close = (sims >= threshold) & (kinds[:, None] == kinds[None, :])
        rows, cols = np.nonzero(np.triu(close, k=1))
        for a, b in zip(rows.tolist(), cols.tolist(), strict=True):
            uf.union(have[a], have[b])
    position = {p: j for j, p in enumerate(have)}
    by_root: dict[int, list[int]] = {}
    for i in range(len(hits)):
        by_root.setdefault(uf.find(i), []).append(i)  # ascending: the head comes first
    groups = sorted((Group(g[0], tuple(g[1:])) for g in by_root.values()), key=lambda g: g.head)
    similarity = {
        (g.head, m): float(sims[position[g.head], position[m]]) for g in groups for m in g.members
    }
    return groups, similarity


def arrange(
    hits: Sequence[Hit],
    n_relevant: int,
    catalog: Catalog,
    *,
    k: int,
    offset: int,
    sort: SortOrder = "relevance",
    collapse: bool = False,
    collapse_threshold: float = 0.95,
) -> tuple[list[Hit], int]:
    """The page of ``hits`` (candidates, best first) after the steps of the module
    docstring, and how many results (groups) the candidates made."""
    if collapse:
        groups, similarity = fold(hits, catalog, threshold=collapse_threshold)
    else:
        groups, similarity = [Group(i) for i in range(len(hits))], {}
    taken: dict[int, CaptureTime] = {}
    if sort != "relevance":
        relevant = [g for g in groups if g.head < n_relevant]
        rest = [g for g in groups if g.head >= n_relevant]
        taken = capture_times(catalog, [hits[g.head].item_id for g in relevant])
        sign = -1 if sort == "-date" else 1

        def when(g: Group) -> tuple[bool, int, int]:
            t = taken.get(hits[g.head].item_id)  # None: the item went meanwhile
            return (t is None, sign * t.ns if t is not None else 0, g.head)

        groups = sorted(relevant, key=when) + rest
    page = groups[offset : offset + k]
    wanted = [hits[p].item_id for g in page for p in (g.head, *g.members)]
    missing = [i for i in wanted if i not in taken]
    taken.update(capture_times(catalog, missing) if missing else {})
    out = []
    for rank, g in enumerate(page, start=offset + 1):
        head = hits[g.head]
        members = None
        if collapse:
            members = tuple(
                Duplicate(
                    replace(
                        hits[m],
                        rank=rank,
                        relevant=m < n_relevant,
                        taken=taken.get(hits[m].item_id),
                    ),
                    similarity[(g.head, m)],
                )
                for m in g.members
            )
        out.append(
            replace(
                head,
                rank=rank,
                relevant=g.head < n_relevant,
                taken=taken.get(head.item_id),
                members=members,
            )
        )
    return out, len(groups)


def capture_times(catalog: Catalog, item_ids: Sequence[int]) -> dict[int, CaptureTime]:
    """When each item was taken: the stored capture time, else its mtime."""
    found = catalog.capture_times(item_ids)
    missing = [i for i in item_ids if i not in found]
    if missing:
        for item_id, record in catalog.items(missing).items():
            found[item_id] = CaptureTime.from_mtime(record.mtime_ns)
    return found
