"""Duplicate detection: exact copies by content, then near-duplicates by embedding.

1. **Exact duplicates**: items whose partial content hash (clipsearch.media.identity)
   agrees are confirmed with a full-file BLAKE2b hash (a file that cannot be read is
   grouped by its partial hash and noted). Keep the oldest file (then the shortest path).
2. **Near duplicates** (re-encoded, resized, cropped copies): for each remaining item
   (one representative per exact group), its k nearest neighbours among the others by
   the catalog's nearest-neighbour index; every pair with cosine ≥ threshold is an edge,
   and the connected components of that graph (union-find, Tarjan 1975) are the groups.
   A pair is only formed within one kind (image with image, video with video by meanP).
   Cost: one batched k-NN search, O(N·k) edges — no N×N matrix. Keep the largest
   resolution (then the largest file, the oldest, the shortest path).

Connected components are transitive: a chain a~b~c joins a and c even if a·c is below
the threshold; each member reports its own cosine to the kept item.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from clipsearch.errors import UsageError
from clipsearch.search.choices import DUPLICATE_NEIGHBOURS, DUPLICATE_THRESHOLD
from clipsearch.search.classify import check_threshold

if TYPE_CHECKING:
    from clipsearch.index.base import VectorIndex
    from clipsearch.search.classify import LibraryVectors
    from clipsearch.store import Catalog, ItemRecord

# (queries (Q, D), k) -> (positions (Q, k) int64 with -1 padding, scores (Q, k))
NeighbourSearch = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
DEFAULT_THRESHOLD = DUPLICATE_THRESHOLD
DEFAULT_K = DUPLICATE_NEIGHBOURS


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving and union by size."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n)
        self.size = np.ones(n, dtype=np.int64)

    def find(self, x: int) -> int:
        p = self.parent
        while p[x] != x:
            p[x] = p[p[x]]
            x = int(p[x])
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]

    def groups(self) -> list[list[int]]:
        """Sets with more than one member, each sorted, ordered by their smallest member."""
        out: dict[int, list[int]] = defaultdict(list)
        for i in range(len(self.parent)):
            out[self.find(i)].append(i)
        return sorted((g for g in out.values() if len(g) > 1), key=lambda g: g[0])


def exact_search(vectors: np.ndarray, *, batch: int = 1024) -> NeighbourSearch:
    """A `NeighbourSearch` by exact inner products over ``vectors`` (N, D), blockwise."""
    base = np.asarray(vectors, dtype=np.float32)

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(base))
        ids = np.empty((len(queries), k), dtype=np.int64)
        scores = np.empty((len(queries), k), dtype=np.float32)
        for lo in range(0, len(queries), batch):
            S = queries[lo : lo + batch] @ base.T  # (b, N)
            top = (
                np.argpartition(-S, k - 1, axis=1)[:, :k]
                if k < S.shape[1]
                else np.argsort(-S, axis=1)
            )
            ids[lo : lo + len(S)] = top
            scores[lo : lo + len(S)] = np.take_along_axis(S, top, axis=1)
        return ids, scores

    return search


def neighbour_pairs(
    vectors: np.ndarray,
    *,
    threshold: float,
    k: int = DEFAULT_K,
    search: NeighbourSearch | None = None,
    groups: np.ndarray | None = None,
    batch: int = 4096,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j, cosine) with i < j, j among i's k nearest others, cosine ≥ threshold.

    vectors: (N, D) unit rows. search: finds neighbours by position (default: exact).
    groups: optional (N,) labels; pairs only form within a label (e.g. media kind).
    Returns three (P,) arrays, each pair once.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    n = len(vectors)
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    search = search or exact_search(vectors)
    found: dict[tuple[int, int], float] = {}
    for lo in range(0, n, batch):
        ids, scores = search(vectors[lo : lo + batch], k + 1)  # +1: the item itself comes back
        for r in range(len(ids)):
            i = lo + r
            for j, s in zip(ids[r].tolist(), scores[r].tolist(), strict=True):
                if (
                    j < 0
                    or j == i
                    or s < threshold
                    or (groups is not None and groups[i] != groups[j])
                ):
                    continue
                key = (i, j) if i < j else (j, i)
                found[key] = max(found.get(key, -2.0), s)
    if not found:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    pairs = np.array(list(found), dtype=np.int64)
    return pairs[:, 0], pairs[:, 1], np.array(list(found.values()), dtype=np.float32)


@dataclass(frozen=True)
class DuplicateMember:
    item_id: int
    path: str
    kind: str
    size: int
    width: int | None
    height: int | None
    similarity: float  # cosine to the kept item (1.0 for the kept item and exact copies)

    def to_dict(self) -> dict[str, object]:
        return {
            "item_id": self.item_id,
            "path": self.path,
            "kind": self.kind,
            "size": self.size,
            "width": self.width,
            "height": self.height,
            "similarity": round(self.similarity, 6),
        }


@dataclass(frozen=True)
class DuplicateGroup:
    """Items that are copies of each other: keep one, the others are removal suggestions."""

    kind: Literal["exact", "near"]
    keep: DuplicateMember
    remove: tuple[DuplicateMember, ...]

    @property
    def members(self) -> tuple[DuplicateMember, ...]:
        return (self.keep, *self.remove)

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "keep": self.keep.to_dict(),
            "remove": [m.to_dict() for m in self.remove],
        }


@dataclass
class DedupReport:
    n_items: int
    threshold: float
    k: int
    groups: list[DuplicateGroup]
    n_pairs: int = 0  # near-duplicate edges found
    notes: list[str] = field(default_factory=list)

    @property
    def removable(self) -> int:
        return sum(len(g.remove) for g in self.groups)

    def to_dict(self) -> dict[str, object]:
        return {
            "n_items": self.n_items,
            "threshold": self.threshold,
            "k": self.k,
            "n_pairs": self.n_pairs,
            "removable": self.removable,
            "groups": [g.to_dict() for g in self.groups],
            "notes": self.notes,
        }


def _full_hash(path: str) -> str | None:
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def exact_groups(
    records: Sequence[ItemRecord], *, verify: bool = True
) -> tuple[list[list[int]], list[str]]:
    """Groups (item ids) of identical content, and notes about unverifiable files.

    Items are grouped by (kind, partial hash); with ``verify`` each group is split by the
    full-file hash, so a partial-hash collision is not reported as a copy.
    """
    by_hash: dict[tuple[str, str], list[ItemRecord]] = defaultdict(list)
    for r in records:
        if r.content_hash:
            by_hash[(r.kind, r.content_hash)].append(r)
    groups, notes = [], []
    for members in by_hash.values():
        if len(members) < 2:
            continue
        if not verify:
            groups.append(sorted(m.id for m in members))
            continue
        split: dict[str, list[int]] = defaultdict(list)
        for m in members:
            full = _full_hash(m.path)
            if full is None:
                notes.append(
                    f"{m.path}: cannot be read to confirm it is a copy; grouped by its partial hash"
                )
                full = f"partial:{m.content_hash}"
            split[full].append(m.id)
        groups.extend(sorted(g) for g in split.values() if len(g) > 1)
    return sorted(groups), notes


def _exact_rank(r: ItemRecord) -> tuple:
    return (r.mtime_ns, len(r.path), r.path, r.id)


def _near_rank(r: ItemRecord) -> tuple:
    pixels = (r.width or 0) * (r.height or 0)
    return (-pixels, -r.size, r.mtime_ns, len(r.path), r.path, r.id)


def _member(r: ItemRecord, similarity: float) -> DuplicateMember:
    return DuplicateMember(r.id, r.path, r.kind, r.size, r.width, r.height, float(similarity))


def find_duplicates(
    catalog: Catalog,
    *,
    index: Callable[[], VectorIndex] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    k: int = DEFAULT_K,
    where: Sequence[str] = (),
    near: bool = True,
    verify: bool = True,
) -> DedupReport:
    """Exact and near-duplicate groups of the catalog's items (module docstring).

    index: returns the nearest-neighbour index over the catalog's vectors, to find
    neighbours with (scales); None: exact blockwise search over the vectors (O(N²) time,
    small memory). threshold: cosine in [−1, 1] for near duplicates; k: neighbours per
    item (≥ 1). Raises UsageError for a bad threshold or k.
    """
    from clipsearch.search.classify import library_vectors

    threshold = check_threshold(threshold)
    if k < 1:
        raise UsageError(f"k (neighbours per item) must be at least 1, got {k}")
    lv = library_vectors(catalog, where)
    ids = lv.item_ids.tolist()
    records = catalog.items(ids)
    recs = [records[i] for i in ids]
    exact, notes = exact_groups(recs, verify=verify)
    groups: list[DuplicateGroup] = []
    in_exact: dict[int, int] = {}
    for g in exact:
        ordered = sorted((records[i] for i in g), key=_exact_rank)
        groups.append(
            DuplicateGroup(
                "exact", _member(ordered[0], 1.0), tuple(_member(r, 1.0) for r in ordered[1:])
            )
        )
        for r in ordered[1:]:
            in_exact[r.id] = ordered[0].id
    report = DedupReport(len(ids), threshold, k, groups, notes=notes)
    if not near:
        return report
    reps = np.array(
        [p for p, i in enumerate(ids) if i not in in_exact], dtype=np.int64
    )  # positions
    vectors = lv.vectors[reps]  # (R, D)
    search = _index_search(index(), lv, reps) if index is not None else None
    kinds = np.array([lv.kinds[p] for p in reps])
    i, j, _ = neighbour_pairs(vectors, threshold=threshold, k=k, search=search, groups=kinds)
    report.n_pairs = len(i)
    uf = UnionFind(len(reps))
    for a, b in zip(i.tolist(), j.tolist(), strict=True):
        uf.union(a, b)
    for comp in uf.groups():
        ordered = sorted(comp, key=lambda p: _near_rank(recs[reps[p]]))
        keep_vec = vectors[ordered[0]]
        members = [_member(recs[reps[p]], float(vectors[p] @ keep_vec)) for p in ordered]
        report.groups.append(DuplicateGroup("near", members[0], tuple(members[1:])))
    return report


def _index_search(index: VectorIndex, lv: LibraryVectors, reps: np.ndarray) -> NeighbourSearch:
    """Neighbours through a vector index, restricted to the representatives' item-level
    vector rows; index ids are mapped back to positions in ``reps``."""
    rep_ids = lv.vector_ids[reps]  # (R,) vector-row ids
    allowed = np.sort(rep_ids)
    position = np.argsort(rep_ids)  # position[r] = index into reps of allowed[r]

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        m = index.search(queries, k, allowed=allowed)
        ids = np.asarray(m.ids, dtype=np.int64)
        at = np.clip(np.searchsorted(allowed, ids), 0, len(allowed) - 1)
        ok = (ids >= 0) & (allowed[at] == ids)
        return np.where(ok, position[at], -1), np.asarray(m.scores)

    return search
