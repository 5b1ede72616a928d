"""`MilvusCache`: the Milvus collection as a derived, stamped cache of the catalog.

The catalog stays the source of truth (docs/architecture.md#caches). ``<library>/ann/milvus.json``
is the stamp, like the FAISS cache's: where the collection lives (uri, name), its index
type and parameters, the model fingerprint, catalog id and generation it describes, the id
set (count + checksum; the ids themselves in ``milvus-ids.npy``, with its size and xxHash3
digest checked before it is used, as `clipsearch.index.stamp.file_digest`), a digest of
the tags, and the recall@10 measured against exact search.

`MilvusCache.get` returns the collection as a `MilvusIndex`: as it is when the stamp
matches the catalog; updated in place when the catalog moved on with the same model
(inserts of added rows, deletes of removed ones, partial updates of rows whose item's
tags changed); rebuilt when the model, catalog, uri or index type differ, the collection
is missing or holds another number of rows, or an update was cut short. Before touching
the collection the stamp is rewritten as ``dirty``, and only a completed update clears it,
so a crash at any point leads to a rebuild, never to a collection trusted wrongly.

Recall@10 is measured at build time as for FAISS (`clipsearch.index.autotune`): a new
collection is first filled without a random sample of rows, whose queries (as they are
and perturbed) get an exact top-k computed while the other rows stream into Milvus
(memory: one chunk); the search parameter (HNSW ``ef``, IVF ``nprobe``) is raised until
half of those queries meet the target, the recall stored is the other half's, and only
then are the held-out rows inserted. Recall is the collection's own answers' (no query
redone exactly), and an answer scoring as high as the 10th exact one counts as right
(duplicate pictures tie). Re-tuning a full collection for a new target uses stored rows
left out of their own answer, half perturbed, split the same way.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from clipsearch.atomic import atomic_write, atomic_write_text
from clipsearch.errors import UsageError
from clipsearch.index import autotune
from clipsearch.index.base import IndexInfo, ProgressFn
from clipsearch.index.exact import top_k_by_score_then_id
from clipsearch.index.milvus_backend import MilvusIndex, MilvusState, connect
from clipsearch.index.rows import VectorRows
from clipsearch.index.stamp import cache_lock, file_digest, ids_checksum, now, write_npy

STAMP_NAME = "milvus.json"
IDS_NAME = "milvus-ids.npy"
FORMAT = 2  # 2: size and digest of the id file
CHUNK = 20_000
NPROBE_LADDER = autotune.NPROBE_LADDER
EF_LADDER = autotune.EF_SEARCH_LADDER


class MetadataSource(Protocol):
    """The catalog as a Milvus collection needs it (`clipsearch.store.vector_meta`)."""

    @property
    def fingerprint(self) -> str | None: ...

    @property
    def catalog_id(self) -> str: ...

    def generation(self) -> int: ...

    def vector_ids(self) -> np.ndarray: ...

    def fetch_vectors(self, ids: np.ndarray) -> np.ndarray: ...  # (n, D) float16

    def vector_metadata(self, ids: np.ndarray) -> dict[str, list]: ...  # SCALAR_FIELDS

    def tagged_items(self) -> dict[int, tuple[str, ...]]: ...


@dataclass
class MilvusStamp:
    """Contents of ``milvus.json`` (see the module doc)."""

    state: dict[str, Any]  # MilvusState
    fingerprint: str | None
    catalog_id: str | None
    generation: int
    count: int
    ids_checksum: str
    tags_digest: str
    recall_generation: int | None
    ids_size: int = -1  # bytes of milvus-ids.npy
    ids_digest: str = ""  # "xxh3_128:<hex>" of milvus-ids.npy
    dirty: bool = False
    format: int = FORMAT


@dataclass
class MilvusCache:
    """The Milvus collection of one library; stamp and id list in ``cache_dir``.

    tuning_queries: sample queries for the recall measurement; seed: their choice.
    """

    cache_dir: Path
    tuning_queries: int = 200
    seed: int = 0
    _current: MilvusIndex | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.cache_dir = Path(self.cache_dir)

    # -- public ------------------------------------------------------------------------------
    def get(
        self,
        source: MetadataSource,
        *,
        uri: str,
        index_type: str = "HNSW",
        recall_target: float = 0.95,
        progress: ProgressFn | None = None,
        rebuild: bool = False,
    ) -> MilvusIndex:
        """The collection as a `MilvusIndex` describing ``source`` now (module doc).
        Raises UsageError for a bad index type or target, EngineError when Milvus fails."""
        if not 0.0 < recall_target <= 1.0:
            raise UsageError(f"recall_target must be in (0, 1], got {recall_target}")
        if index_type not in ("HNSW", "IVF_FLAT", "FLAT"):
            raise UsageError(
                f"unknown Milvus index type {index_type!r}; use HNSW, IVF_FLAT or FLAT"
            )
        with cache_lock(self.cache_dir):  # one process updates a library's caches at a time
            return self._get(source, uri, index_type, recall_target, progress, rebuild)

    def _get(
        self,
        source: MetadataSource,
        uri: str,
        index_type: str,
        recall_target: float,
        progress: ProgressFn | None,
        rebuild: bool,
    ) -> MilvusIndex:
        ids = np.asarray(source.vector_ids(), dtype=np.int64)
        generation = int(source.generation())
        stamp = None if rebuild else self._read_stamp()
        collection = collection_name(source.catalog_id)
        usable = (
            stamp is not None
            and not stamp.dirty
            and stamp.fingerprint == source.fingerprint
            and stamp.catalog_id == source.catalog_id
            and stamp.state.get("uri") == uri
            and stamp.state.get("collection") == collection
            and stamp.state.get("index_type") == index_type
        )
        if not usable or stamp is None:
            return self._rebuild(source, ids, generation, uri, index_type, recall_target, progress)
        index = self._open(MilvusState(**stamp.state), source)
        if not index.exists():
            return self._rebuild(source, ids, generation, uri, index_type, recall_target, progress)
        changed = False
        if stamp.state.get("recall_target") != recall_target:
            self._mark_dirty(stamp)
            self._tune(index, source, ids, recall_target, progress)
            stamp.recall_generation, changed = stamp.generation, True
        if stamp.generation != generation or stamp.ids_checksum != ids_checksum(ids):
            if not self._update(index, source, ids, stamp, progress):
                return self._rebuild(
                    source, ids, generation, uri, index_type, recall_target, progress
                )
            changed = True
        if changed:
            self._write(index, source, ids, generation, stamp.recall_generation)
        return index

    def info(self) -> IndexInfo | None:
        """Facts from the stamp (no connection), or None without a usable stamp."""
        stamp = self._read_stamp()
        if stamp is None:
            return None
        info = MilvusIndex(None, MilvusState(**stamp.state)).info()
        return IndexInfo(**{**asdict(info), "generation": stamp.generation})

    def close(self) -> None:
        """Close the client (Milvus Lite then lets another process open the folder)."""
        if self._current is not None:
            self._current.close()
            self._current = None

    # -- build, update, tune ---------------------------------------------------------------------
    def _rebuild(
        self,
        source: MetadataSource,
        ids: np.ndarray,
        generation: int,
        uri: str,
        index_type: str,
        recall_target: float,
        progress: ProgressFn | None,
    ) -> MilvusIndex:
        (self.cache_dir / STAMP_NAME).unlink(missing_ok=True)
        dim = _dim(source, ids)
        state = MilvusState(
            uri=uri, collection=collection_name(source.catalog_id), dim=dim, index_type=index_type
        )
        if index_type == "IVF_FLAT":  # autofaiss's list count for this size (n/39 at most)
            state.build = {"nlist": autotune.nb_clusters(len(ids))}
        client = self._client(uri)
        index = MilvusIndex.create(client, state, rows=source)
        self._current = index
        # Rows held out of the collection while its recall is measured, inserted after.
        held = autotune.held_out_positions(len(ids), 2 * self.tuning_queries, seed=self.seed)
        if held.size:
            first = np.delete(ids, held)
            sample = _Sample.held_out(source, ids[held], self.seed)
        else:  # too few rows to hold any out: leave-one-out
            first = ids
            sample = _Sample.draw(source, ids, 2 * self.tuning_queries, self.seed)
        for _, chunk, vectors in _chunks(source, first, progress, "add"):
            index.insert(chunk, vectors, source.vector_metadata(chunk))
            sample.observe(chunk, vectors)
        index.flush()
        state.built_at = now()
        self._measure(index, sample, recall_target, progress)
        if held.size:
            for _, chunk, vectors in _chunks(source, ids[held], None, "add"):
                index.insert(chunk, vectors, source.vector_metadata(chunk))
            index.flush()
        self._write(index, source, ids, generation, generation)
        return index

    def _update(
        self,
        index: MilvusIndex,
        source: MetadataSource,
        ids: np.ndarray,
        stamp: MilvusStamp,
        progress: ProgressFn | None,
    ) -> bool:
        """Apply the catalog's changes since the stamp; False when a rebuild is needed."""
        path = self.cache_dir / IDS_NAME
        try:
            if path.stat().st_size != stamp.ids_size or file_digest(path) != stamp.ids_digest:
                return False  # damaged or replaced: rebuild
            cached = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return False
        if cached.dtype != np.int64 or ids_checksum(cached) != stamp.ids_checksum:
            return False
        self._mark_dirty(stamp)
        removed = np.setdiff1d(cached, ids, assume_unique=True)
        added = np.setdiff1d(ids, cached, assume_unique=True)
        if len(removed):
            index.delete(removed)
        for _, chunk, vectors in _chunks(source, added, progress, "add"):
            index.insert(chunk, vectors, source.vector_metadata(chunk))
        tags = source.tagged_items()
        if _digest(tags) != stamp.tags_digest:
            held = index.tags_by_item()
            changed = {
                i: tags.get(i, ())
                for i in set(tags) | set(held)
                if tags.get(i, ()) != held.get(i, ())
            }
            index.set_tags(changed)
        index.flush()
        return index.count() == len(ids)

    def _tune(
        self,
        index: MilvusIndex,
        source: MetadataSource,
        ids: np.ndarray,
        recall_target: float,
        progress: ProgressFn | None,
    ) -> None:
        """Measure recall again (and re-tune) for a new target: one pass over the rows."""
        sample = _Sample.draw(source, ids, 2 * self.tuning_queries, self.seed)
        for _, chunk, vectors in _chunks(source, ids, progress, "fetch"):
            sample.observe(chunk, vectors)
        self._measure(index, sample, recall_target, progress)

    def _measure(
        self,
        index: MilvusIndex,
        sample: _Sample,
        recall_target: float,
        progress: ProgressFn | None,
    ) -> None:
        state = index.state
        state.recall_target = recall_target
        state.rejected = {}
        if progress:
            progress("tune", 0.0)
        if sample.size == 0:
            state.recall_at_10, state.recall_queries = 1.0, 0
            return
        truth = sample.truth()
        name, ladder = {"HNSW": ("ef", EF_LADDER), "IVF_FLAT": ("nprobe", NPROBE_LADDER)}.get(
            state.index_type, ("", (0,))
        )
        if name == "nprobe":
            ladder = tuple(v for v in ladder if v <= state.build.get("nlist", 1024))
        tune_rows, check_rows = autotune.tune_and_check(sample.size)

        def recall(value: int, rows: np.ndarray) -> float:
            state.search = {name: value} if name else {}
            found = index.search_ann(sample.queries[rows], 11)
            # A query the collection leaves short of answers is redone exactly by searches
            # (`MilvusIndex.search`): its exact answer here, over the rows measured.
            short = (found.ids >= 0).sum(axis=1) < (sample.best_ids[rows] >= 0).sum(axis=1)
            found.ids[short] = sample.best_ids[rows][short]
            found.scores[short] = sample.best_scores[rows][short]
            ids, scores = _drop_excluded(found.ids, found.scores, sample.exclude[rows], 10)
            return autotune.recall_with_ties(ids, scores, truth[rows])

        def evaluate(value: int) -> float:
            r = recall(value, tune_rows)
            if r < recall_target and name:
                state.rejected[f"{name}={value}"] = round(r, 4)
            return r

        value, _, _ = autotune.raise_until(ladder, evaluate, recall_target)
        state.rejected.pop(f"{name}={value}", None)
        # Stored: the recall of the queries that chose nothing (what searches will see).
        state.recall_at_10, state.recall_queries = recall(value, check_rows), len(check_rows)
        if progress:
            progress("tune", 1.0)

    # -- disk ------------------------------------------------------------------------------------
    def _client(self, uri: str) -> Any:
        if self._current is not None and self._current.state.uri == uri:
            return self._current.client
        self.close()
        if "://" not in uri:
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
        return connect(uri)

    def _open(self, state: MilvusState, source: MetadataSource) -> MilvusIndex:
        cur = self._current
        if (
            cur is not None
            and cur.state.uri == state.uri
            and cur.state.collection == state.collection
        ):
            cur.state = state
            return cur
        index = MilvusIndex(self._client(state.uri), state, rows=source)
        self._current = index
        return index

    def _write(
        self,
        index: MilvusIndex,
        source: MetadataSource,
        ids: np.ndarray,
        generation: int,
        recall_generation: int | None,
    ) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self.cache_dir / IDS_NAME
        atomic_write(path, lambda p: write_npy(p, ids, np.int64))
        stamp = MilvusStamp(
            state=asdict(index.state),
            fingerprint=source.fingerprint,
            catalog_id=source.catalog_id,
            generation=generation,
            count=len(ids),
            ids_checksum=ids_checksum(ids),
            tags_digest=_digest(source.tagged_items()),
            recall_generation=recall_generation,
            ids_size=path.stat().st_size,
            ids_digest=file_digest(path),
        )
        atomic_write_text(self.cache_dir / STAMP_NAME, json.dumps(asdict(stamp), indent=1))

    def _mark_dirty(self, stamp: MilvusStamp) -> None:
        stamp.dirty = True
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.cache_dir / STAMP_NAME, json.dumps(asdict(stamp), indent=1))
        stamp.dirty = False

    def _read_stamp(self) -> MilvusStamp | None:
        try:
            data = json.loads((self.cache_dir / STAMP_NAME).read_text())
            if data.get("format") != FORMAT:
                return None
            stamp = MilvusStamp(**data)
            MilvusState(**stamp.state)
            return stamp
        except (OSError, ValueError, TypeError):
            return None


def collection_name(catalog_id: str) -> str:
    """One collection per catalog, so libraries can share a Milvus server."""
    return "clipsearch_" + re.sub(r"[^0-9A-Za-z_]", "_", catalog_id)


# -- helpers ----------------------------------------------------------------------------------
def _chunks(source: MetadataSource, ids: np.ndarray, progress: ProgressFn | None, stage: str):
    for s in range(0, len(ids), CHUNK):
        chunk = ids[s : s + CHUNK]
        yield s, chunk, np.asarray(source.fetch_vectors(chunk), dtype=np.float32)
        if progress:
            progress(stage, min(len(ids), s + CHUNK) / max(1, len(ids)))


def _dim(source: MetadataSource, ids: np.ndarray) -> int:
    probe = np.asarray(source.fetch_vectors(ids[:1]))
    if probe.ndim != 2 or probe.shape[1] == 0:
        raise UsageError("the library holds no vectors yet: index a folder first")
    return int(probe.shape[1])


def _digest(tags: dict[int, tuple[str, ...]]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for item in sorted(tags):
        h.update(f"{item}:{','.join(sorted(tags[item]))};".encode())
    return h.hexdigest()


@dataclass
class _Sample:
    """Sample queries and their exact top-11, accumulated chunk by chunk."""

    queries: np.ndarray  # (m, D) float32 unit
    exclude: np.ndarray  # (m,) int64: the query's own row (-1: none)
    best_ids: np.ndarray  # (m, 11)
    best_scores: np.ndarray  # (m, 11)

    @property
    def size(self) -> int:
        return len(self.queries)

    @classmethod
    def draw(cls, source: MetadataSource, ids: np.ndarray, n: int, seed: int) -> _Sample:
        rng = np.random.default_rng(seed)
        m = min(n, len(ids))
        picked = np.sort(rng.choice(len(ids), size=m, replace=False)) if m else np.empty(0, int)
        base = np.asarray(source.fetch_vectors(ids[picked]), dtype=np.float32)
        if m == 0:
            base = base.reshape(0, max(1, base.shape[-1] if base.ndim == 2 else 1))
        n_loo = (m + 1) // 2
        noise = rng.standard_normal((m - n_loo, base.shape[1])).astype(np.float32)
        noise *= autotune.PERTURBATION / np.maximum(
            np.linalg.norm(noise, axis=1, keepdims=True), 1e-12
        )
        unit = base / np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-12)
        queries = np.concatenate([unit[:n_loo], unit[n_loo:] + noise]).astype(np.float32)
        queries /= np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        exclude = np.full(m, -1, dtype=np.int64)
        exclude[:n_loo] = ids[picked[:n_loo]]
        return cls(
            queries=queries,
            exclude=exclude,
            best_ids=np.full((m, 11), -1, dtype=np.int64),
            best_scores=np.full((m, 11), -np.inf, dtype=np.float32),
        )

    @classmethod
    def held_out(cls, source: MetadataSource, held: np.ndarray, seed: int) -> _Sample:
        """Queries from rows kept out of the collection while it is measured
        (`autotune.held_out_queries`): nothing to leave out of their answers."""
        vectors = np.asarray(source.fetch_vectors(held), dtype=np.float32)
        sample = autotune.held_out_queries(
            VectorRows(held, vectors), np.arange(len(held)), seed=seed
        )
        m = len(sample)
        return cls(
            queries=sample.queries,
            exclude=sample.exclude,
            best_ids=np.full((m, 11), -1, dtype=np.int64),
            best_scores=np.full((m, 11), -np.inf, dtype=np.float32),
        )

    def observe(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Fold a chunk of rows (ids (c,), vectors (c, D) float32) into the running top-11."""
        if self.size == 0 or len(ids) == 0:
            return
        scores = self.queries @ vectors.T  # (m, c)
        all_ids = np.concatenate([self.best_ids, np.broadcast_to(ids, scores.shape)], axis=1)
        all_scores = np.concatenate([self.best_scores, scores.astype(np.float32)], axis=1)
        self.best_ids, self.best_scores = top_k_by_score_then_id(all_ids, all_scores, 11)

    def truth(self) -> np.ndarray:
        """(m, 10) exact top-10 scores (-inf: none), each query's own row left out."""
        return _drop_excluded(self.best_ids, self.best_scores, self.exclude, 10)[1]


def _drop_excluded(
    ids: np.ndarray, scores: np.ndarray, exclude: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(m, k+1) answers without each row's excluded id, the first k kept (ids, scores)."""
    out_ids = np.full((len(ids), k), -1, dtype=np.int64)
    out_scores = np.full((len(ids), k), -np.inf, dtype=np.float32)
    for i, (row, sc, ex) in enumerate(zip(ids, scores, exclude, strict=True)):
        keep = (row >= 0) & (row != ex)
        kept_ids, kept_scores = row[keep][:k], sc[keep][:k]
        out_ids[i, : len(kept_ids)], out_scores[i, : len(kept_scores)] = kept_ids, kept_scores
    return out_ids, out_scores
