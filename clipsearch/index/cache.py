"""`IndexCache`: the nearest-neighbour index as a derived, rebuildable cache.

How it is invalidated, next to the other caches: docs/architecture.md#caches.

Layout of ``<library>/ann/``:

- ``stamp.json`` — the commit point: backend, factory, search parameters, dim, model
  fingerprint, catalog id, catalog generation, the id set (count + blake2b checksum), the
  files below with their sizes and xxHash3 digests, and the recall measured at build time;
- ``g<generation>-<random>.ids.npy`` / ``.vectors.npy`` — the rows, ascending by id (the
  vector matrix: fp16, memory-mapped by the FAISS backend, loaded by the exact one);
- ``….faiss`` — the FAISS index (FAISS backends), ``….tomb.npy`` — tombstoned ids.

`IndexCache.get` loads the cache when its stamp matches the source, updates it
incrementally when the source moved on with the same model (fetching only added rows,
deleting removed ones), and rebuilds it when the model, dim, backend or catalog differ,
too much changed, a file is missing, unreadable or damaged (its digest differs: rows
swapped or bytes flipped keep the size, not the digest). Files are written under fresh names
(temp file, fsync, ``os.replace``) and only then is the stamp replaced the same way, so
a process killed at any instant leaves the previous stamp and its files intact.
Stale files are deleted after the new stamp is durable. One ``flock`` on ``ann/.lock``
serialises processes.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from clipsearch.atomic import atomic_write
from clipsearch.errors import NotFoundError, UsageError
from clipsearch.index import autotune
from clipsearch.index.base import IndexInfo, ProgressFn, VectorIndex
from clipsearch.index.exact import ExactIndex
from clipsearch.index.faiss_backend import FaissIndex, FaissState
from clipsearch.index.faiss_build import import_faiss
from clipsearch.index.rows import VectorRows
from clipsearch.index.stamp import (
    OWN_FILE,
    STAMP_NAME,
    Stamp,
    cache_lock,
    file_digest,
    ids_checksum,
    is_current,
    now,
    read_stamp,
    same_request,
    stamp_info,
    write_npy,
)

FETCH_CHUNK = 50_000


class VectorSource(Protocol):
    """Where the vectors come from: `clipsearch.store.Catalog` implements it."""

    @property
    def fingerprint(self) -> str | None: ...  # model fingerprint

    def generation(self) -> int: ...

    def vector_ids(self) -> np.ndarray: ...  # (N,) int64 ascending, cheap

    def fetch_vectors(self, ids: np.ndarray) -> np.ndarray: ...  # (n, D) float16, order of ids


@dataclass
class _Loaded:
    stamp: Stamp
    index: ExactIndex | FaissIndex


class _Unusable(Exception):
    """The cache on disk cannot be used (missing, truncated, unreadable): rebuild."""


@dataclass
class IndexCache:
    """The ANN index of one library, kept in ``cache_dir`` (``<library>/ann``).

    memory_budget_bytes: for backend="auto" (default: a quarter of RAM).
    flat_threshold: exact search below this many vectors (default: autotune's).
    rebuild_fraction: FAISS indexes are rebuilt instead of updated when more than this
        fraction of rows was added or removed since the cache was written.
    mmap_bytes: IVF files larger than this are memory-mapped read-only on load.
    tuning_queries, seed: recall measurement (see `FaissIndex`).

    Not thread-safe by itself (use one per thread or a lock); processes are serialised by
    a file lock. The last index returned is kept and updated in place by later `get` calls.
    """

    cache_dir: Path
    memory_budget_bytes: int | None = None
    flat_threshold: int | None = None
    rebuild_fraction: float = 0.2
    mmap_bytes: int = 64 << 20
    tuning_queries: int = 500
    seed: int = 0
    save_error: OSError | None = field(default=None, init=False)
    _current: _Loaded | None = field(default=None, init=False, repr=False)
    _thread_lock: Any = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.cache_dir = Path(self.cache_dir)

    # -- public ------------------------------------------------------------------------------
    def get(
        self,
        source: VectorSource,
        *,
        backend: str = "auto",
        recall_target: float = 0.95,
        progress: ProgressFn | None = None,
        rebuild: bool = False,
    ) -> VectorIndex:
        """A `VectorIndex` over ``source`` as of now: loaded, updated or rebuilt.

        backend: "auto" (`autotune.choose_backend`), "exact", or a FAISS factory string.
        recall_target: for FAISS backends (a different target re-tunes a loaded index).
        progress: optional (stage, fraction) callback; rebuild: ignore any cache.
        Raises UsageError for a bad backend string or recall target; errors of the source
        propagate. A cache that cannot be saved (disk full, read-only) is still returned
        and the error is kept in ``save_error``.
        """
        if not 0.0 < recall_target <= 1.0:
            raise UsageError(f"recall_target must be in (0, 1], got {recall_target}")
        with self._thread_lock, self._file_lock():
            for attempt in range(3):
                try:
                    return self._get(source, backend, recall_target, progress, rebuild)
                except NotFoundError:  # a row vanished between listing and fetching: retry
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")

    def is_current(
        self, source: VectorSource, *, backend: str = "auto", recall_target: float = 0.95
    ) -> bool:
        """True when the cache on disk is what `get` would return for ``source`` as it is
        now (same model, catalog, request, generation and vector ids; its files present at
        their recorded sizes), judged from the stamp without loading the index: a run that
        changed nothing need not load it. Digests are checked when it is loaded."""
        return is_current(self.cache_dir, source, backend=backend, recall_target=recall_target)

    def info(self) -> IndexInfo | None:
        """Facts about the cache on disk (no loading), or None when there is no usable stamp."""
        stamp = self._read_stamp()
        return None if stamp is None else stamp_info(stamp)

    def clear(self) -> None:
        """Delete every cache file (the next `get` rebuilds)."""
        with self._thread_lock, self._file_lock():
            self._current = None
            if self.cache_dir.is_dir():
                for p in self.cache_dir.iterdir():
                    if p.name == STAMP_NAME or OWN_FILE.match(p.name):
                        p.unlink(missing_ok=True)

    # -- the decision ------------------------------------------------------------------------
    def _get(
        self,
        source: VectorSource,
        requested: str,
        recall_target: float,
        progress: ProgressFn | None,
        rebuild: bool,
    ) -> VectorIndex:
        self._remove_temp_files()
        fingerprint = source.fingerprint
        catalog_id = getattr(source, "catalog_id", None)
        generation = int(source.generation())
        ids = np.asarray(source.vector_ids(), dtype=np.int64)
        stamp = None if rebuild else self._read_stamp()
        usable = stamp is not None and (
            stamp.fingerprint == fingerprint
            and stamp.catalog_id == catalog_id
            and same_request(stamp, requested)
        )
        if not usable or stamp is None:
            return self._rebuild(source, ids, generation, requested, recall_target, progress)
        if len(ids) == 0:
            return self._rebuild(source, ids, generation, requested, recall_target, progress)
        up_to_date = (
            stamp.generation == generation
            and stamp.count == len(ids)
            and stamp.ids_checksum == ids_checksum(ids)
        )
        try:
            loaded = self._obtain(stamp, writable=not up_to_date, progress=progress)
        except _Unusable:
            return self._rebuild(source, ids, generation, requested, recall_target, progress)
        if isinstance(loaded.index, FaissIndex) and loaded.stamp.recall_target != recall_target:
            self._retune(loaded, recall_target, progress)
        if up_to_date:
            return loaded.index
        updated = self._update(loaded, source, ids, generation, requested, progress)
        if updated is None:
            return self._rebuild(source, ids, generation, requested, recall_target, progress)
        return updated

    def _obtain(self, stamp: Stamp, *, writable: bool, progress: ProgressFn | None) -> _Loaded:
        """The index of ``stamp``: the one in memory when it is that one, else from disk."""
        cur = self._current
        if cur is not None and cur.stamp.files == stamp.files:
            ro = isinstance(cur.index, FaissIndex) and cur.index.read_only
            if not (writable and ro):
                cur.stamp = stamp
                return cur
        if progress:
            progress("load", 0.0)
        self._current = None
        loaded = _Loaded(stamp, self._load(stamp, writable=writable))
        self._current = loaded
        if progress:
            progress("load", 1.0)
        return loaded

    def _update(
        self,
        loaded: _Loaded,
        source: VectorSource,
        ids: np.ndarray,
        generation: int,
        requested: str,
        progress: ProgressFn | None,
    ) -> VectorIndex | None:
        """Apply the difference between the cached and the current id sets; None = rebuild."""
        index, stamp = loaded.index, loaded.stamp
        cached = index.rows.ids
        added = np.setdiff1d(ids, cached, assume_unique=True)
        removed = np.setdiff1d(cached, ids, assume_unique=True)
        if requested == "auto":  # switch backend family only clearly past a threshold
            fits = {
                _family(c)
                for f in (0.8, 1.0, 1.25)
                for c in self._candidates(max(1, int(len(ids) * f)), stamp.dim)
            }
            if _family(stamp.factory) not in fits:
                return None
        if isinstance(index, FaissIndex):
            if len(added) + len(removed) > self.rebuild_fraction * max(1, len(cached)):
                return None
            if np.isin(added, index.tombstones).any():
                return None
        if len(added) == 0 and len(removed) == 0:  # e.g. only tags changed: restamp
            new = Stamp(**{**asdict(stamp), "generation": generation})
            if self._write_stamp(new):
                loaded.stamp = new
            return index
        vectors = _fetch(source, added, stamp.dim, progress)
        index.remove(removed)
        index.add(added, vectors)
        if isinstance(index, FaissIndex) and index.needs_rebuild:
            self._current = None
            return None
        new = self._save(
            index,
            requested=requested,
            fingerprint=stamp.fingerprint,
            catalog_id=stamp.catalog_id,
            generation=generation,
            built_at=stamp.built_at,
            recall_generation=stamp.recall_generation,
            progress=progress,
        )
        if isinstance(index, FaissIndex) and new.files:  # back to the memory-mapped rows
            with contextlib.suppress(OSError, ValueError, UsageError, _Unusable):
                index.replace_rows(self._rows_from(new, mmap=True))
        self._current = _Loaded(new, index)
        return index

    def _retune(self, loaded: _Loaded, recall_target: float, progress: ProgressFn | None) -> None:
        """Re-tune search parameters for a new target; the files stay, the stamp changes."""
        index = loaded.index
        assert isinstance(index, FaissIndex)
        index.tune(recall_target, n_queries=self.tuning_queries, seed=self.seed, progress=progress)
        stamp = loaded.stamp
        new = Stamp(**{**asdict(stamp), **_recall_fields(index), "faiss": index.state.to_json()})
        new.recall_generation = stamp.generation
        if self._write_stamp(new):
            loaded.stamp = new

    def _rebuild(
        self,
        source: VectorSource,
        ids: np.ndarray,
        generation: int,
        requested: str,
        recall_target: float,
        progress: ProgressFn | None,
    ) -> VectorIndex:
        self._current = None
        if len(ids) == 0:
            return ExactIndex(ids, np.zeros((0, self._empty_dim(source)), dtype=np.float16))
        vectors = _fetch(source, ids, None, progress)
        dim = vectors.shape[1]
        choice = requested
        if requested == "auto":  # exact, or the FAISS candidates in order ("auto")
            choice = "exact" if self._candidates(len(ids), dim) == ["exact"] else "auto"
        index: ExactIndex | FaissIndex
        if choice == "exact":
            index = ExactIndex(ids, vectors)
        else:
            index = FaissIndex(
                ids,
                vectors,
                factory=choice,
                memory_budget_bytes=self.memory_budget_bytes,
                recall_target=recall_target,
                tuning_queries=self.tuning_queries,
                seed=self.seed,
                progress=progress,
            )
        del vectors
        stamp = self._save(
            index,
            requested=requested,
            fingerprint=source.fingerprint,
            catalog_id=getattr(source, "catalog_id", None),
            generation=generation,
            built_at=now(),
            recall_generation=generation,
            progress=progress,
        )
        if isinstance(index, FaissIndex) and stamp.files:  # drop the in-RAM copy of the rows
            with contextlib.suppress(OSError, ValueError, UsageError, _Unusable):
                index.replace_rows(self._rows_from(stamp, mmap=True))
        self._current = _Loaded(stamp, index)
        return index

    def _candidates(self, n: int, dim: int) -> list[str]:
        return autotune.candidate_backends(
            n, dim, self.memory_budget_bytes, flat_threshold=self.flat_threshold
        )

    # -- disk --------------------------------------------------------------------------------
    def _load(self, stamp: Stamp, *, writable: bool) -> ExactIndex | FaissIndex:
        try:
            for role, name in stamp.files.items():
                path = self.cache_dir / name
                if path.stat().st_size != stamp.sizes.get(name):
                    raise _Unusable(f"{role} file {name} has the wrong size")
                if file_digest(path) != stamp.digests.get(name):
                    raise _Unusable(f"{role} file {name} is damaged (digest mismatch)")
            if stamp.backend == "exact":
                rows = self._rows_from(stamp, mmap=False)
                return ExactIndex(rows.ids, rows.vectors)
            faiss = import_faiss()
            rows = self._rows_from(stamp, mmap=True)
            path = self.cache_dir / stamp.files["faiss"]
            shape = autotune.factory_shape(stamp.factory)
            mmap = not writable and shape.family == "ivf" and path.stat().st_size > self.mmap_bytes
            flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
            index = faiss.read_index(str(path), flags)
            tomb = np.empty(0, np.int64)
            if "tombstones" in stamp.files:
                tomb = np.load(self.cache_dir / stamp.files["tombstones"], allow_pickle=False)
            if index.d != stamp.dim or index.ntotal != stamp.count + len(tomb):
                raise _Unusable("the FAISS file does not match its stamp")
            state = FaissState.from_json(stamp.faiss or {"factory": stamp.factory})
            return FaissIndex.from_parts(index, rows, state, tomb, read_only=mmap)
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
            raise _Unusable(str(exc)) from exc

    def _rows_from(self, stamp: Stamp, *, mmap: bool) -> VectorRows:
        ids = np.load(self.cache_dir / stamp.files["ids"], allow_pickle=False)
        if ids.dtype != np.int64 or ids.ndim != 1 or len(ids) != stamp.count:
            raise _Unusable("ids file does not match its stamp")
        if ids_checksum(ids) != stamp.ids_checksum:
            raise _Unusable("ids file checksum does not match its stamp")
        vectors = np.load(
            self.cache_dir / stamp.files["vectors"],
            mmap_mode="r" if mmap else None,
            allow_pickle=False,
        )
        if vectors.shape != (stamp.count, stamp.dim):
            raise _Unusable("vectors file does not match its stamp")
        return VectorRows.trusted(ids, vectors)

    def _save(
        self,
        index: ExactIndex | FaissIndex,
        *,
        requested: str,
        fingerprint: str | None,
        catalog_id: str | None,
        generation: int,
        built_at: str,
        recall_generation: int | None,
        progress: ProgressFn | None,
    ) -> Stamp:
        """Write the index under fresh names, then the stamp; returns the new stamp (also
        when saving failed: then ``files`` is empty and ``save_error`` says why)."""
        rows = index.rows
        info = index.info()
        stamp = Stamp(
            backend=info.backend,
            requested=requested,
            factory=info.factory,
            dim=rows.dim,
            fingerprint=fingerprint,
            catalog_id=catalog_id,
            generation=generation,
            count=len(rows),
            ids_checksum=ids_checksum(rows.ids),
            files={},
            sizes={},
            digests={},
            memory_bytes=info.memory_bytes,
            built_at=built_at,
            recall_at_10=info.recall_at_10,
            recall_queries=info.recall_queries,
            recall_target=info.recall_target,
            recall_generation=recall_generation,
            tombstones=info.tombstones,
            faiss=index.state.to_json() if isinstance(index, FaissIndex) else None,
        )
        if progress:
            progress("save", 0.0)
        tag = f"g{generation}-{secrets.token_hex(4)}"
        files = {"ids": f"{tag}.ids.npy", "vectors": f"{tag}.vectors.npy"}
        if isinstance(index, FaissIndex):
            files["faiss"] = f"{tag}.faiss"
            if index.tombstones.size:
                files["tombstones"] = f"{tag}.tomb.npy"
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.cache_dir / files["ids"], lambda p: write_npy(p, rows.ids, np.int64))
            atomic_write(
                self.cache_dir / files["vectors"],
                lambda p: write_npy(p, rows.vectors, rows.vectors.dtype),
            )
            if isinstance(index, FaissIndex):
                faiss = import_faiss()
                atomic_write(
                    self.cache_dir / files["faiss"],
                    lambda p: faiss.write_index(index.faiss_index, str(p)),
                )
                if "tombstones" in files:
                    tomb = index.tombstones
                    atomic_write(
                        self.cache_dir / files["tombstones"],
                        lambda p: write_npy(p, tomb, np.int64),
                    )
            stamp.files = files
            stamp.sizes = {name: (self.cache_dir / name).stat().st_size for name in files.values()}
            stamp.digests = {name: file_digest(self.cache_dir / name) for name in files.values()}
        except OSError as exc:
            self.save_error = exc
            stamp.files, stamp.sizes, stamp.digests = {}, {}, {}
            return stamp
        if self._write_stamp(stamp):
            self._collect_garbage(stamp)
        if progress:
            progress("save", 1.0)
        return stamp

    def _write_stamp(self, stamp: Stamp) -> bool:
        try:
            text = json.dumps(asdict(stamp), indent=1, sort_keys=True)
            atomic_write(self.cache_dir / STAMP_NAME, lambda p: p.write_text(text))
        except OSError as exc:
            self.save_error = exc
            return False
        self.save_error = None
        return True

    def _read_stamp(self) -> Stamp | None:
        return read_stamp(self.cache_dir)

    def _collect_garbage(self, keep: Stamp) -> None:
        referenced = set(keep.files.values())
        for p in self.cache_dir.iterdir():
            if OWN_FILE.match(p.name) and p.name not in referenced:
                with contextlib.suppress(OSError):
                    p.unlink()

    def _remove_temp_files(self) -> None:
        if self.cache_dir.is_dir():
            for p in self.cache_dir.glob(".tmp-*"):
                with contextlib.suppress(OSError):
                    p.unlink()

    def _empty_dim(self, source: VectorSource) -> int:
        stamp = self._read_stamp()
        if stamp is not None and stamp.fingerprint == source.fingerprint:
            return stamp.dim
        probe = np.asarray(source.fetch_vectors(np.empty(0, dtype=np.int64)))
        return int(probe.shape[1]) if probe.ndim == 2 else 0

    def _file_lock(self) -> contextlib.AbstractContextManager[None]:
        return cache_lock(self.cache_dir)


# -- helpers ------------------------------------------------------------------------------------
def _family(factory: str) -> str:
    if factory.startswith("exact"):
        return "exact"
    shape = autotune.factory_shape(factory)
    return shape.family + ("-lossy" if shape.lossy else "")


def _fetch(
    source: VectorSource, ids: np.ndarray, dim: int | None, progress: ProgressFn | None
) -> np.ndarray:
    """(n, D) vectors of ``ids`` from the source, in chunks; UsageError if malformed."""
    n = len(ids)
    out: np.ndarray | None = None
    if progress:
        progress("fetch", 0.0)
    for s in range(0, n, FETCH_CHUNK):
        chunk = ids[s : s + FETCH_CHUNK]
        v = np.asarray(source.fetch_vectors(chunk))
        if v.ndim != 2 or len(v) != len(chunk) or (dim is not None and v.shape[1] != dim):
            raise UsageError(
                f"the vector source returned shape {v.shape} for {len(chunk)} ids"
                + (f" of dim {dim}" if dim else "")
            )
        if out is None:
            dtype = v.dtype if v.dtype in (np.float16, np.float32) else np.float32
            out = np.empty((n, v.shape[1]), dtype=dtype)
        out[s : s + len(chunk)] = v
        if progress:
            progress("fetch", min(n, s + FETCH_CHUNK) / n)
    if out is None:
        out = np.empty((0, dim or 0), dtype=np.float16)
    return out


def _recall_fields(index: FaissIndex) -> dict[str, Any]:
    info = index.info()
    return {
        "recall_at_10": info.recall_at_10,
        "recall_queries": info.recall_queries,
        "recall_target": info.recall_target,
    }
