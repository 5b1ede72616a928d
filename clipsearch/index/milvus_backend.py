"""`MilvusIndex`: the `VectorIndex` protocol served by Milvus (docs/scale.md).

The same client (pymilvus) talks to Milvus Lite — a folder inside the library, for one
process at a time — or to a Milvus server or cluster (``http://host:19530``). The
collection is a derived copy of the catalog, maintained by `MilvusCache`; one row per
catalog vector row:

    id int64 (primary, the catalog's vector-row id), vector float_vector(D) (inner
    product), item_id int64, t double (frame time; -1 for an item-level row), kind
    varchar, path varchar, size int64, mtime_ns int64, root varchar (the root folder's
    path, "" if none), tags array<varchar>

so a search filter runs inside Milvus as a boolean expression on those fields
(`clipsearch.store.filter_milvus`). Index types: HNSW (default; M, efConstruction at
build, ef at search — tuned to the recall target), IVF_FLAT (nlist; nprobe), FLAT.

What is better done exactly is done from the catalog's own vectors: ``exact=True``, a
filter that keeps few rows (as the FAISS backend does), and k above Milvus's top-k limit
(16384). A long id list is split into several ``id in [...]`` searches.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from clipsearch.errors import EngineError, MissingDependencyError, UsageError
from clipsearch.index.base import IndexInfo, Matches
from clipsearch.index.exact import (
    ExactIndex,
    as_queries,
    check_k,
    empty_matches,
    top_k_by_score_then_id,
)
from clipsearch.index.faiss_backend import EF_SEARCH_CAP as EF_CAP
from clipsearch.index.faiss_backend import EXACT_FILTER_FRACTION, EXACT_FILTER_MIN_ROWS

INDEX_TYPES = ("HNSW", "IVF_FLAT", "FLAT")
MAX_TOP_K = 16384  # Milvus's limit on k (and on nq) per search
ID_LIST_CHUNK = 8192  # ids per "id in [...]" expression
FETCH_CHUNK = 50_000  # catalog rows per fetch when loading every vector
INSERT_CHUNK = 2000  # rows per insert call (well under gRPC's 64 MB message limit)
PATH_MAX = 65535
TAGS_MAX = 4096  # Milvus's array capacity limit
DEFAULT_BUILD = {"HNSW": {"M": 16, "efConstruction": 80}, "IVF_FLAT": {"nlist": 1024}, "FLAT": {}}
SCALAR_FIELDS = ("item_id", "t", "kind", "path", "size", "mtime_ns", "root", "tags")
# Seconds between Milvus Lite load attempts while its background index build writes files.
LITE_LOAD_PAUSES = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
# How Milvus Lite says it read a file while it was being written.
LITE_PARTIAL_READ = ("read error", "not fully written")
MILVUS_LOGGERS = ("pymilvus", "milvus_lite")


def import_pymilvus() -> Any:
    try:
        import pymilvus
    except ImportError:
        raise MissingDependencyError("pymilvus", "milvus") from None
    return pymilvus


_lite_users: dict[str, int] = {}  # Milvus Lite folder -> open clients in this process
_lite_lock = threading.Lock()


def connect(uri: str) -> Any:
    """A MilvusClient for ``uri`` (a local path: Milvus Lite; http(s)://: a server). The
    token, if the server needs one, comes from ``$MILVUS_TOKEN``. Raises EngineError when
    it cannot connect, MissingDependencyError without pymilvus (or milvus-lite for a path)."""
    import os

    pymilvus = import_pymilvus()
    local = "://" not in uri
    if local:
        try:
            import milvus_lite  # noqa: F401
        except ImportError:
            raise MissingDependencyError("milvus-lite", "milvus") from None
    try:
        client = pymilvus.MilvusClient(uri=uri, token=os.environ.get("MILVUS_TOKEN", ""))
    except Exception as e:
        hint = (
            "Milvus Lite opens its folder for one process at a time: stop the other "
            "clipsearch process (a running `serve`?) or use a Milvus server (--milvus-uri)"
            if local
            else "check that the server is up and the address right (--milvus-uri)"
        )
        raise EngineError(f"cannot open Milvus at {uri}: {_first_line(e)}. {hint}") from e
    if local:
        with _lite_lock:
            _lite_users[os.path.abspath(uri)] = _lite_users.get(os.path.abspath(uri), 0) + 1
    return client


def disconnect(client: Any, uri: str) -> None:
    """Close a client from `connect`. The last client of a Milvus Lite folder in this
    process also stops its in-process server, which frees the folder for other processes
    (closing the client alone leaves the server running until the process exits)."""
    import os

    with contextlib.suppress(Exception):  # closing must never fail a caller
        client.close()
    if "://" in uri:
        return
    path = os.path.abspath(uri)
    with _lite_lock:
        left = _lite_users.get(path, 1) - 1
        if left > 0:
            _lite_users[path] = left
            return
        _lite_users.pop(path, None)
    with contextlib.suppress(Exception):
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(path)


class RowSource(Protocol):
    """The catalog's vector rows (`clipsearch.store.Catalog` is one)."""

    def vector_ids(self) -> np.ndarray: ...

    def fetch_vectors(self, ids: np.ndarray) -> np.ndarray: ...  # (n, D), order of ids


@dataclass
class MilvusState:
    """What a `MilvusIndex` is, besides its client (stored in the cache's stamp)."""

    uri: str
    collection: str
    dim: int
    index_type: str = "HNSW"
    build: dict[str, int] = field(default_factory=dict)  # M/efConstruction or nlist
    search: dict[str, int] = field(default_factory=dict)  # ef or nprobe (tuned)
    count: int = 0
    recall_at_10: float | None = None
    recall_queries: int = 0
    recall_target: float | None = None
    built_at: str | None = None
    rejected: dict[str, float] = field(default_factory=dict)  # "ef=16" -> recall that missed


class MilvusIndex:
    """Nearest-neighbour search in a Milvus collection (see the module doc).

    rows: the catalog's vector rows (``vector_ids()``, ``fetch_vectors(ids)``), for the
        searches answered exactly (``exact=True``, selective filters, k above Milvus's limit).
    Thread-safe (a lock around client calls; pymilvus clients are not meant to be shared
    across threads without one).
    """

    filter_dialect = "milvus"
    index_timeout_s = 3600.0  # how long `flush` waits for a server to index new rows
    exact_filter_rows = (
        EXACT_FILTER_MIN_ROWS  # filters keeping at most this many rows (or 2%) go exact
    )

    def __init__(
        self,
        client: Any,
        state: MilvusState,
        *,
        rows: RowSource | None = None,
    ) -> None:
        self.client = client
        self.state = state
        self._rows = rows
        self._exact: ExactIndex | None = None
        self._counts: dict[str, int] = {}  # expression -> rows, until the collection changes
        self._lock = threading.RLock()

    # -- collection --------------------------------------------------------------------------
    @classmethod
    def create(cls, client: Any, state: MilvusState, **kw: Any) -> MilvusIndex:
        """Drop ``state.collection`` if it exists and create it empty, indexed and loaded."""
        pymilvus = import_pymilvus()
        dt = pymilvus.DataType
        if state.index_type not in INDEX_TYPES:
            raise UsageError(f"unknown Milvus index type {state.index_type!r}; use {INDEX_TYPES}")
        build = {**DEFAULT_BUILD[state.index_type], **state.build}
        state.build = build
        with _engine(f"creating the Milvus collection {state.collection}"):
            if client.has_collection(state.collection):
                client.drop_collection(state.collection)
            schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", dt.INT64, is_primary=True)
            schema.add_field("vector", dt.FLOAT_VECTOR, dim=state.dim)
            schema.add_field("item_id", dt.INT64)
            schema.add_field("t", dt.DOUBLE)
            schema.add_field("kind", dt.VARCHAR, max_length=16)
            schema.add_field("path", dt.VARCHAR, max_length=PATH_MAX)
            schema.add_field("size", dt.INT64)
            schema.add_field("mtime_ns", dt.INT64)
            schema.add_field("root", dt.VARCHAR, max_length=PATH_MAX)
            schema.add_field(
                "tags", dt.ARRAY, element_type=dt.VARCHAR, max_capacity=TAGS_MAX, max_length=512
            )
            params = client.prepare_index_params()
            params.add_index("vector", index_type=state.index_type, metric_type="IP", params=build)
            client.create_collection(state.collection, schema=schema, consistency_level="Strong")
            # sync=False: do not poll the build (Milvus Lite lacks that call); loading waits.
            client.create_index(state.collection, params, sync=False)
            client.load_collection(state.collection)
        state.count = 0
        return cls(client, state, **kw)

    def exists(self) -> bool:
        """True when the collection is there with as many rows as the state says."""
        with self._lock, _engine("reading the Milvus collection"):
            if not self.client.has_collection(self.state.collection):
                return False
            self.client.load_collection(self.state.collection)
            return self._count("") == self.state.count

    def insert(self, ids: np.ndarray, vectors: np.ndarray, meta: dict[str, Sequence]) -> None:
        """Add rows: ``ids`` (n,) not in the collection yet (catalog ids are never reused),
        ``vectors`` (n, D), ``meta`` the scalar fields (`SCALAR_FIELDS`), n values each.
        Call `flush` after a series of inserts: Milvus searches unsealed rows by brute force."""
        ids = np.asarray(ids, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32)  # (n, D)
        with self._lock, _engine("writing to Milvus"):
            for s in range(0, len(ids), INSERT_CHUNK):
                rows = [
                    {
                        "id": int(ids[i]),
                        "vector": vectors[i],
                        **{f: meta[f][i] for f in SCALAR_FIELDS},
                    }
                    for i in range(s, min(len(ids), s + INSERT_CHUNK))
                ]
                self.client.insert(self.state.collection, rows)
            self.state.count = self._count("")
            self._exact = None
            self._counts.clear()

    def flush(self) -> None:
        """Seal what was written and wait until it is indexed, so searches (and the recall
        measured on them) go through the index: a Milvus server builds the index of sealed
        segments in the background (polled here, up to ``timeout_s``); Milvus Lite builds it
        when the collection is loaded (reloaded here)."""
        with self._lock, _engine("flushing Milvus"):
            self.client.flush(self.state.collection)
            if "://" not in self.state.uri:
                self.client.release_collection(self.state.collection)
                self._load_lite()
                return
            deadline = time.monotonic() + self.index_timeout_s
            while time.monotonic() < deadline:
                info = self.client.describe_index(self.state.collection, "vector") or {}
                if not info.get("pending_index_rows"):
                    break
                time.sleep(1.0)
            self.client.load_collection(self.state.collection)

    def _load_lite(self) -> None:
        """Load a Milvus Lite collection. After a flush Milvus Lite also builds segment
        indexes in a background thread and writes each index file in place; a load that
        reads such a file while it is being written fails ("read error", "file seems not
        fully written"), and succeeds once the file is complete: retried after a pause, the
        failed attempts unlogged."""
        for pause in (*LITE_LOAD_PAUSES, None):
            try:
                with _silenced(*MILVUS_LOGGERS) if pause is not None else contextlib.nullcontext():
                    self.client.load_collection(self.state.collection)
                return
            except Exception as e:
                partial = any(m in str(e) for m in LITE_PARTIAL_READ)
                if pause is None or not _is_milvus_error(e) or not partial:
                    raise
                time.sleep(pause)

    def delete(self, ids: np.ndarray) -> None:
        ids = [int(i) for i in np.asarray(ids, dtype=np.int64)]
        with self._lock, _engine("deleting from Milvus"):
            for s in range(0, len(ids), ID_LIST_CHUNK):
                self.client.delete(self.state.collection, ids=ids[s : s + ID_LIST_CHUNK])
            self.state.count = self._count("")
            self._exact = None
            self._counts.clear()

    def tags_by_item(self) -> dict[int, tuple[str, ...]]:
        """item id -> tags, as the collection holds them (items with tags only)."""
        out: dict[int, tuple[str, ...]] = {}
        for row in self._query("array_length(tags) > 0", ["item_id", "tags"]):
            out[int(row["item_id"])] = tuple(sorted(row["tags"]))
        return out

    def set_tags(self, tags: dict[int, tuple[str, ...]]) -> int:
        """Replace the tags of the given items on every row of theirs; returns rows changed."""
        items = sorted(tags)
        changed = 0
        with self._lock, _engine("updating tags in Milvus"):
            for s in range(0, len(items), ID_LIST_CHUNK):
                chunk = items[s : s + ID_LIST_CHUNK]
                rows = self._query(f"item_id in {chunk}", ["id", "item_id"])
                updates = [
                    {"id": int(r["id"]), "tags": list(tags[int(r["item_id"])])} for r in rows
                ]
                for u in range(0, len(updates), INSERT_CHUNK):
                    self.client.upsert(
                        self.state.collection, updates[u : u + INSERT_CHUNK], partial_update=True
                    )
                changed += len(updates)
            self._counts.clear()
        return changed

    def close(self) -> None:
        """Close the client (see `disconnect`)."""
        with self._lock:
            if self.client is not None:
                disconnect(self.client, self.state.uri)
                self.client = None

    # -- VectorIndex ---------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.state.dim

    def __len__(self) -> int:
        return self.state.count

    def count(self, expression: str = "") -> int:
        """Rows matching a Milvus boolean expression ("" = all)."""
        with self._lock, _engine("counting rows in Milvus"):
            if expression not in self._counts:
                if len(self._counts) > 256:
                    self._counts.clear()
                self._counts[expression] = self._count(expression)
            return self._counts[expression]

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed: np.ndarray | None = None,
        exact: bool = False,
        expression: str | None = None,
    ) -> Matches:
        """Top-``k`` rows per query by inner product (`VectorIndex.search`).

        expression: a Milvus boolean expression on the scalar fields (a filter evaluated
            inside Milvus); allowed: an id list (sent as ``id in [...]`` expressions).
        A filter that keeps few rows (at most ~2% or 8192, as the FAISS backend) is answered
        exactly from the catalog's vectors of those rows; a wider one raises ``ef``/``nprobe``
        by 1/selectivity, since the graph walk skips the rows the filter rejects.
        """
        k = check_k(k)
        q = as_queries(queries, self.dim)
        if len(q) == 0 or len(self) == 0:
            return empty_matches(len(q), k)
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=np.int64)
            if expression:  # both: the rows of the list that the expression keeps
                allowed = np.intersect1d(allowed, self.ids_matching(expression))
                expression = None
            if len(allowed) == 0:
                return empty_matches(len(q), k)
        if exact or k > MAX_TOP_K:
            return self._exact_search(q, k, allowed, expression)
        if allowed is None and not expression:
            return self._complete(self._ann(q, k, "", 1.0), q, k, len(self), None, None)
        matching = len(allowed) if allowed is not None else self.count(expression or "")
        # (counts are cached per expression until the collection changes: a paging or
        # widening searcher asks again with the same filter)
        if matching == 0:
            return empty_matches(len(q), k)
        if matching <= max(self.exact_filter_rows, EXACT_FILTER_FRACTION * len(self)):
            return self._exact_search(q, k, allowed, expression)  # cheaper, and always right
        widen = len(self) / matching  # the graph walk meets 1/selectivity more rejected rows
        if allowed is None:
            found = self._ann(q, k, expression or "", widen)
        else:
            found = _merge(
                [
                    self._ann(q, k, f"id in {allowed[s : s + ID_LIST_CHUNK].tolist()}", widen)
                    for s in range(0, len(allowed), ID_LIST_CHUNK)
                ],
                k,
            )
        return self._complete(found, q, k, matching, allowed, expression)

    def _complete(
        self,
        found: Matches,
        q: np.ndarray,
        k: int,
        matching: int,
        allowed: np.ndarray | None,
        expression: str | None,
    ) -> Matches:
        """Redo exactly the queries the ANN left with fewer than min(k, matching) answers
        (an IVF probe of sparse lists, a graph walk cut off by a filter)."""
        short = np.flatnonzero((found.ids >= 0).sum(axis=1) < min(k, matching))
        if short.size:
            fix = self._exact_search(q[short], k, allowed, expression)
            found.ids[short], found.scores[short] = fix.ids, fix.scores
        return found

    def search_ann(self, queries: np.ndarray, k: int) -> Matches:
        """The collection's own top-``k`` with the current search parameters, no query
        redone exactly (what recall is measured on)."""
        return self._ann(as_queries(queries, self.dim), check_k(k), "", 1.0)

    def ids_matching(self, expression: str) -> np.ndarray:
        """(n,) int64 ascending ids of the rows an expression selects."""
        return np.sort(
            np.array([int(r["id"]) for r in self._query(expression, ["id"])], dtype=np.int64)
        )

    def info(self) -> IndexInfo:
        s = self.state
        return IndexInfo(
            backend="milvus",
            factory=s.index_type,
            params={**s.build, **s.search, "uri": s.uri, "collection": s.collection},
            vectors=s.count,
            memory_bytes=memory_estimate(s.index_type, s.count, s.dim, s.build),
            recall_at_10=s.recall_at_10,
            recall_queries=s.recall_queries,
            recall_target=s.recall_target,
            built_at=s.built_at,
            rejected=dict(s.rejected),
        )

    # -- internals -----------------------------------------------------------------------------
    def _ann(self, q: np.ndarray, k: int, expression: str, widen: float) -> Matches:
        params = dict(self.state.search)
        if "ef" in params:  # Milvus requires ef >= k
            params["ef"] = max(min(EF_CAP, math.ceil(params["ef"] * widen)), k)
        if "nprobe" in params:
            nlist = int(self.state.build.get("nlist", params["nprobe"]))
            params["nprobe"] = min(nlist, math.ceil(params["nprobe"] * widen))
        out_ids = np.full((len(q), k), -1, dtype=np.int64)
        out_scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        with self._lock, _engine("searching Milvus"):
            for s in range(0, len(q), MAX_TOP_K):
                res = self.client.search(
                    self.state.collection,
                    data=[row for row in q[s : s + MAX_TOP_K]],
                    limit=k,
                    filter=expression,
                    output_fields=["id"],
                    search_params={"metric_type": "IP", "params": params},
                )
                for j, hits in enumerate(res):
                    n = min(k, len(hits))
                    out_ids[s + j, :n] = [h["id"] for h in hits[:n]]
                    out_scores[s + j, :n] = [h["distance"] for h in hits[:n]]
        return Matches(ids=out_ids, scores=out_scores)

    def _exact_search(
        self, q: np.ndarray, k: int, allowed: np.ndarray | None, expression: str | None
    ) -> Matches:
        """Exact top-k from the catalog's vectors: of the rows an expression or id list
        selects (fetched for the query), or of every row (loaded once, kept until the
        collection changes)."""
        if self._rows is None:
            raise UsageError("exact search needs the catalog's vectors, which were not given")
        if expression:
            allowed = self.ids_matching(expression)
            if len(allowed) == 0:
                return empty_matches(len(q), k)
        if allowed is not None:
            ids = np.unique(allowed)
            vectors = np.asarray(self._rows.fetch_vectors(ids), dtype=np.float32)  # (n, D)
            scores = q @ vectors.T  # (Q, n)
            ids_2d = np.broadcast_to(ids, scores.shape)
            out_ids, out_scores = top_k_by_score_then_id(ids_2d, scores.astype(np.float32), k)
            return Matches(ids=out_ids, scores=out_scores)
        with self._lock:
            if self._exact is None:
                all_ids = np.asarray(self._rows.vector_ids(), dtype=np.int64)
                parts = [
                    self._rows.fetch_vectors(all_ids[s : s + FETCH_CHUNK])
                    for s in range(0, len(all_ids), FETCH_CHUNK)
                ]
                vectors = np.concatenate(parts) if parts else np.zeros((0, self.dim), np.float16)
                self._exact = ExactIndex(all_ids, vectors)
            exact = self._exact
        return exact.search(q, k, exact=True)

    def _count(self, expression: str) -> int:
        res = self.client.query(
            self.state.collection, filter=expression, output_fields=["count(*)"]
        )
        return int(res[0]["count(*)"])

    def _query(self, expression: str, fields: list[str]) -> Iterator[dict[str, Any]]:
        """Every row an expression selects: one query when Milvus can return them at once,
        else page by page with a query iterator."""
        with self._lock, _engine("querying Milvus"):
            if self.count(expression) <= MAX_TOP_K:
                yield from self.client.query(
                    self.state.collection, filter=expression, output_fields=fields, limit=MAX_TOP_K
                )
                return
            it = self.client.query_iterator(
                self.state.collection, batch_size=4096, filter=expression, output_fields=fields
            )
            try:
                while True:
                    page = it.next()
                    if not page:
                        break
                    yield from page
            finally:
                it.close()


def memory_estimate(index_type: str, n: int, dim: int, build: dict[str, int]) -> int:
    """Bytes Milvus holds in memory for ``n`` vectors: the float32 rows, plus the HNSW graph
    (2·M neighbour ids of 4 bytes on layer 0; upper layers add ~1/M more). Scalar fields
    not counted."""
    per = 4 * dim
    if index_type == "HNSW":
        m = int(build.get("M", 16))
        per += int(2 * m * 4 * (1 + 1 / m))
    return n * per


def _and(a: str | None, b: str) -> str:
    return f"({a}) and ({b})" if a else b


def _merge(parts: list[Matches], k: int) -> Matches:
    """Top-k over several partial answers (disjoint id sets)."""
    ids = np.concatenate([p.ids for p in parts], axis=1)
    scores = np.concatenate([p.scores for p in parts], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return Matches(
        ids=np.take_along_axis(ids, order, axis=1),
        scores=np.take_along_axis(scores, order, axis=1),
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class _engine:
    """Turns pymilvus failures into EngineError naming what was being done."""

    def __init__(self, action: str) -> None:
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or not _is_milvus_error(exc):
            return False
        raise EngineError(f"Milvus failed while {self.action}: {_first_line(exc)}") from exc


@contextlib.contextmanager
def _silenced(*names: str) -> Iterator[None]:
    """Loggers (and their children) muted for the duration: an attempt that is retried
    should not print an error."""
    loggers = [logging.getLogger(n) for n in names]
    before = [lg.disabled for lg in loggers]
    children = [
        lg
        for name, lg in logging.Logger.manager.loggerDict.items()
        if isinstance(lg, logging.Logger) and name.startswith(tuple(f"{n}." for n in names))
    ]
    before_children = [lg.disabled for lg in children]
    for lg in (*loggers, *children):
        lg.disabled = True
    try:
        yield
    finally:
        for lg, was in zip((*loggers, *children), (*before, *before_children), strict=True):
            lg.disabled = was


def _is_milvus_error(exc: BaseException) -> bool:
    mod = type(exc).__module__ or ""
    return mod.startswith(("pymilvus", "grpc", "milvus_lite"))
