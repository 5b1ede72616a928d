"""The catalog: one SQLite file per library, the source of truth (docs/architecture.md#the-catalog).

It holds the roots, one row per file (``items``: path, kind, size, mtime, partial content
hash, status, error, media metadata), the vectors (``vectors``: one item-level row per
ok item — an image's vector or a video's meanP vector — plus one row per sampled video
frame with its timestamp, as little-endian fp16 blobs), tags, texts found in items
(``Catalog.texts``: texts.py), and ``meta`` (model binding, generation counter). Schema and
migrations: migrations.py; SQLite settings and the crash-safety argument: connection.py;
the ``meta`` helpers: meta.py; validating and upserting items: writes.py.

Concurrency: one writer (the indexer) and any number of readers (the server, another
``clipsearch search``), each with its own ``Catalog``. Every write method is one
``BEGIN IMMEDIATE`` transaction, so readers see a batch entirely or not at all. A
``Catalog`` object may be shared by threads (calls are serialised by a lock).

Derived caches: ``generation()`` increases with every committed change to items,
vectors, tags or texts, vector ids are never reused (AUTOINCREMENT), and commits are durable
(connection.py), so a cache stamped with (catalog_id, fingerprint, generation) is
exactly as fresh as its stamp says. ``catalog_id`` is random per catalog file: a
catalog deleted and rebuilt at the same path starts again at generation 0 and id 1.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from array import array
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipsearch.errors import (
    LibraryError,
    ModelMismatchError,
    NotFoundError,
    UsageError,
)
from clipsearch.media.capture_time import CaptureTime
from clipsearch.media.scan import MediaKind
from clipsearch.store import capture_times, meta, statistics, vector_io
from clipsearch.store import tags as tag_rows
from clipsearch.store import writes as item_writes
from clipsearch.store.connection import CATALOG_FILE, connect, translate
from clipsearch.store.migrations import (
    check_version,
    migrate,
    schema_version,
)
from clipsearch.store.records import (
    ITEM_COLUMNS,
    ItemRecord,
    ItemWrite,
    ModelBinding,
    VectorTable,
)
from clipsearch.store.texts import TextStore
from clipsearch.store.writes import check_item, prepare

# numpy is imported by the functions that read or write vectors, the filter grammar by
# those that filter: opening the catalog and comparing files with it (an index run over
# unchanged files) imports neither.
if TYPE_CHECKING:
    import numpy as np

    from clipsearch.store.filters import ItemFilter


class Catalog:
    """A library's catalog. Open with ``Catalog.open(library_dir)``; close (or use as a
    context manager) when done. See the module docstring for the model."""

    def __init__(self, library_dir: Path, conn: sqlite3.Connection, *, readonly: bool) -> None:
        self.path = library_dir
        self.db_path = library_dir / CATALOG_FILE
        self.readonly = readonly
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.RLock()

    # -- lifecycle ------------------------------------------------------------------------------
    @classmethod
    def open(
        cls, library_dir: Path | str, *, create: bool = True, readonly: bool = False
    ) -> Catalog:
        """Open (and with ``create``, create) the catalog of ``library_dir``.

        Creates the folder (mkdir -p) and an empty catalog when ``create`` and not
        ``readonly``; migrates an older schema (not when ``readonly``).
        Raises NotFoundError when there is no catalog and it may not be created;
        LibraryError for a file that is not a clipsearch catalog or is damaged, a schema
        newer than this code, or an unusable folder.
        """
        library_dir = Path(os.path.expanduser(str(library_dir))).absolute()
        db_path = library_dir / CATALOG_FILE
        if library_dir.exists() and not library_dir.is_dir():
            raise LibraryError(
                f"{library_dir} is a file, not a library folder. Pick another --library path."
            )
        if not db_path.exists():
            if readonly or not create:
                raise NotFoundError(
                    f"no clipsearch library at {library_dir} (no {CATALOG_FILE} there). "
                    f"Index a folder into it first: clipsearch index --library {library_dir} FOLDER"
                )
            try:
                library_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise LibraryError(
                    f"cannot create the library folder {library_dir}: {e.strerror or e}. "
                    "Choose a writable --library path."
                ) from e
        try:
            conn = connect(db_path, readonly=readonly)
        except sqlite3.Error as e:
            raise translate(e, db_path, action="opening the catalog") from e
        try:
            meta.check_identity(conn, db_path)
            if readonly:
                check_version(schema_version(conn), db_path, readonly=True)
            else:
                migrate(conn, db_path)
        except sqlite3.Error as e:
            conn.close()
            raise translate(e, db_path, action="opening the catalog") from e
        except BaseException:
            conn.close()
            raise
        return cls(library_dir, conn, readonly=readonly)

    def close(self) -> None:
        """Close the connection (idempotent). The last connection to close checkpoints
        the WAL into the main file."""
        with self._lock:
            if self._conn is None:
                return
            conn, self._conn = self._conn, None
            conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "ro" if self.readonly else "rw"
        return f"Catalog({str(self.path)!r}, {mode}{', closed' if self._conn is None else ''})"

    # -- model binding ------------------------------------------------------------------------
    @property
    def texts(self) -> TextStore:
        """Text found in items (OCR): writing, matching, coverage (store/texts.py)."""
        return TextStore(self)

    def model_binding(self) -> ModelBinding | None:
        """The model this library is bound to, or None before the first index run."""
        with self._reading("reading the model binding") as conn:
            return meta.read_binding(conn)

    @property
    def fingerprint(self) -> str | None:
        """The bound model's fingerprint (VectorSource protocol), None when unbound."""
        binding = self.model_binding()
        return binding.fingerprint if binding else None

    @property
    def catalog_id(self) -> str:
        """Random id of this catalog file, fixed at creation (part of a cache's stamp)."""
        with self._reading("reading the catalog id") as conn:
            return str(
                conn.execute("SELECT value FROM meta WHERE key = 'catalog_id'").fetchone()[0]
            )

    def bind_model(self, binding: ModelBinding) -> None:
        """Bind the library to ``binding`` the first time; afterwards accept only a model
        with the same fingerprint (nothing is written then, so a read-only catalog can
        check its model too). Raises ModelMismatchError for another model."""
        if binding.dim <= 0 or not binding.fingerprint:
            raise UsageError(f"invalid model binding {binding!r}: needs a fingerprint and dim > 0")
        with self._reading("reading the model binding") as conn:
            current = meta.read_binding(conn)
        if current is None:
            with self._writing("binding the model") as conn:
                current = meta.read_binding(conn)  # another process may have bound it meanwhile
                if current is None:
                    stored = meta.stored_dim(conn)
                    if stored is not None and stored != binding.dim:
                        raise ModelMismatchError(
                            f"the library {self.path} already holds {stored}-d vectors, but the "
                            f"model {binding.spec!r} makes {binding.dim}-d ones. Use a new "
                            "library (--library NEW_PATH)."
                        )
                    conn.executemany(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                        [
                            ("model_spec", binding.spec),
                            ("model_fingerprint", binding.fingerprint),
                            ("model_dim", int(binding.dim)),
                        ],
                    )
                    return
        if current.fingerprint != binding.fingerprint or current.dim != binding.dim:
            raise ModelMismatchError(
                f"the library {self.path} was indexed with the model {current.spec!r} "
                f"(fingerprint {current.fingerprint}, {current.dim}-d), not with "
                f"{binding.spec!r} (fingerprint {binding.fingerprint}, {binding.dim}-d); "
                "vectors of two models cannot be mixed. Use the library's model "
                f"(--model {current.spec}), or index with the new model into a new "
                "library (--library NEW_PATH)."
            )

    def choose_model(self, spec: str) -> None:
        """Record the model an unbound library's first index runs with, before the model
        is loaded (which may mean a long download): a run interrupted then resumes with
        the same model. A no-op once bound; a later choice replaces an unused one."""
        with self._reading("reading the model binding") as conn:
            if meta.read_binding(conn) is not None or meta.read_chosen_model(conn) == spec:
                return
        with self._writing("recording the chosen model") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('model_chosen', ?)", (spec,)
            )

    def chosen_model(self) -> str | None:
        """The spec `choose_model` recorded, or None."""
        with self._reading("reading the model binding") as conn:
            return meta.read_chosen_model(conn)

    # -- roots ----------------------------------------------------------------------------------
    def add_root(self, path: Path | str) -> int:
        """Register a root folder (idempotent); returns its id."""
        text = str(Path(path))
        with self._writing("adding a root") as conn:
            conn.execute(
                "INSERT INTO roots (path, added_at) VALUES (?, ?) ON CONFLICT (path) DO NOTHING",
                (text, time.time()),
            )
            return int(conn.execute("SELECT id FROM roots WHERE path = ?", (text,)).fetchone()[0])

    def roots(self) -> list[tuple[int, str]]:
        """(id, path) of every root, in the order they were added."""
        with self._reading("listing roots") as conn:
            return [(int(i), p) for i, p in conn.execute("SELECT id, path FROM roots ORDER BY id")]

    # -- items ----------------------------------------------------------------------------------
    def item(self, item_id: int) -> ItemRecord | None:
        with self._reading("reading an item") as conn:
            row = conn.execute(
                f"SELECT {ITEM_COLUMNS} FROM items WHERE id = ?", (int(item_id),)
            ).fetchone()
        return ItemRecord.from_row(row) if row else None

    def item_by_path(self, path: str) -> ItemRecord | None:
        with self._reading("reading an item") as conn:
            row = conn.execute(
                f"SELECT {ITEM_COLUMNS} FROM items WHERE path = ?", (str(path),)
            ).fetchone()
        return ItemRecord.from_row(row) if row else None

    def items(self, ids: Sequence[int]) -> dict[int, ItemRecord]:
        """id -> record for the ids that exist (unknown ids are absent)."""
        sql = f"SELECT {ITEM_COLUMNS} FROM items WHERE id IN ({{ids}})"
        with self._reading("reading items") as conn:
            return {row[0]: ItemRecord.from_row(row) for row in vector_io.select_in(conn, sql, ids)}

    def file_states_under_root(self, root_id: int) -> dict[str, tuple[int, int, int, str]]:
        """path -> (id, size, mtime_ns, status) of every item found under the root: what
        the incremental diff compares a scan with (plain tuples: no record is built for
        the thousands of files a run leaves alone)."""
        with self._reading("reading items") as conn:
            cur = conn.execute(
                "SELECT path, id, size, mtime_ns, status FROM items WHERE root_id = ?",
                (int(root_id),),
            )
            return {row[0]: row[1:] for row in cur}

    def find_reusable(self, content_hash: str, size: int, kind: MediaKind) -> ItemRecord | None:
        """An ok item with the same content hash, size and kind (oldest first): a moved or
        copied file whose vectors ``copy_item`` can reuse. None if there is none."""
        with self._reading("looking up a content hash") as conn:
            row = conn.execute(
                f"SELECT {ITEM_COLUMNS} FROM items WHERE content_hash = ? AND size = ? "
                "AND kind = ? AND status = 'ok' ORDER BY id LIMIT 1",
                (content_hash, int(size), kind),
            ).fetchone()
        return ItemRecord.from_row(row) if row else None

    def failures(self, limit: int | None = None) -> list[ItemRecord]:
        """Failed items with their error, by path; at most ``limit``."""
        sql = f"SELECT {ITEM_COLUMNS} FROM items WHERE status = 'failed' ORDER BY path"
        params: tuple = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (max(0, int(limit)),)
        with self._reading("listing failures") as conn:
            return [ItemRecord.from_row(row) for row in conn.execute(sql, params)]

    # -- writes ---------------------------------------------------------------------------------
    def write_items(self, writes: Sequence[ItemWrite]) -> list[int]:
        """Store a batch in ONE transaction; returns the item ids, in order.

        Each write upserts its path (the item id of a known path is kept), replaces all
        vectors of that path with ``write.vectors`` (none for failed items), and the
        generation is bumped once. All or nothing: on any failure the batch is rolled
        back. Raises UsageError for a malformed write, ModelMismatchError for vectors of
        the wrong width, DiskFullError when the disk fills (the message says to free
        space and re-run), LibraryError for other catalog failures.
        """
        if not writes:
            return []
        dim = self._expected_dim()
        prepared = [prepare(w, dim) for w in writes]
        dims = {p.dim for p in prepared if p.dim is not None}
        if len(dims) > 1:
            raise ModelMismatchError(f"one batch holds vectors of different widths {sorted(dims)}")
        with self._writing("writing a batch") as conn:
            return item_writes.write_batch(conn, writes, prepared, bound_dim=dim)

    def copy_item(self, src_item_id: int, write: ItemWrite) -> int:
        """Store ``write.path`` reusing the vectors of ``src_item_id`` (a moved or copied
        file; the vectors are copied in SQL, never decoded). Width/height/duration and
        the frame count come from the source when ``write`` leaves them None. If
        ``write.path`` is the source's own path, only its metadata is updated.
        Returns the item id of ``write.path``. Raises NotFoundError for an unknown or
        failed source, UsageError when ``write`` carries vectors or another kind."""
        check_item(write)
        if write.vectors is not None:
            raise UsageError("copy_item reuses the source's vectors; pass write.vectors=None")
        if write.status != "ok":
            raise UsageError(f"copy_item stores an ok item, got status {write.status!r}")
        with self._writing("copying an item") as conn:
            return item_writes.copy_item(conn, src_item_id, write)

    def delete_items(self, ids: Sequence[int]) -> int:
        """Delete items (their vectors and tags cascade). Returns how many existed; the
        generation is bumped only if that is > 0."""
        ids = list(dict.fromkeys(int(i) for i in ids))
        if not ids:
            return 0
        with self._writing("deleting items") as conn:
            return item_writes.delete_items(conn, ids)

    def set_tags(self, tags: Mapping[int, Mapping[str, float]], *, source: str) -> None:
        """Replace the tags from ``source`` (e.g. "zeroshot:imagenet") of the given items:
        item id -> {tag: score}. Tags are stored lower-cased and stay with the item id
        when its file is re-indexed (a tagger re-tags changed items). Bumps the generation."""
        if not tags:
            return
        with self._writing("writing tags") as conn:
            tag_rows.replace(conn, tags, source)
            meta.bump_generation(conn)

    def tags(self, item_ids: Sequence[int]) -> dict[int, dict[str, float]]:
        """item id -> {tag: best score over sources}; items without tags are absent."""
        with self._reading("reading tags") as conn:
            return tag_rows.read(conn, item_ids)

    def tagged_items(self) -> dict[int, tuple[str, ...]]:
        """item id -> its tags (sorted, over all sources) for every item that has any."""
        with self._reading("reading tags") as conn:
            return tag_rows.tagged(conn)

    # -- capture times ----------------------------------------------------------------------------
    def capture_times(self, item_ids: Sequence[int]) -> dict[int, CaptureTime]:
        """item id -> when it was taken, for items whose capture time has been read
        (store/capture_times.py); the others are absent (their mtime stands in)."""
        with self._reading("reading capture times") as conn:
            return capture_times.read(conn, item_ids)

    def undated_items(self, root_id: int) -> set[int]:
        """Ids of the ok items under a root whose capture time has not been read yet."""
        with self._reading("listing undated items") as conn:
            return capture_times.undated(conn, root_id)

    def set_capture_times(self, times: Mapping[int, CaptureTime]) -> int:
        """Store capture times (item id -> time) in one transaction, skipping ids that
        are no longer items; returns how many were stored. Bumps the generation."""
        if not times:
            return 0
        with self._writing("writing capture times") as conn:
            live = capture_times.existing(conn, times)
            capture_times.write(conn, ((i, times[i]) for i in live))
            if live:
                meta.bump_generation(conn)
        return len(live)

    # -- vectors --------------------------------------------------------------------------------
    def frames(self, item_ids: Sequence[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """item -> (timestamps (F,) float64 ascending, vectors (F, D) float32) of its frame
        rows. Items without frame rows (images, failed or unknown ids) are absent."""
        with self._snapshot("reading frames") as conn:
            return vector_io.per_item_vectors(conn, item_ids, self._dim(conn), frames=True)

    def cuts(self, item_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """video item -> its shot cut times (s, ascending; empty: one shot). Videos whose
        shots are not known (indexed by an older clipsearch) and other items are absent."""
        import numpy as np

        sql = "SELECT item_id, cuts FROM shots WHERE item_id IN ({ids})"
        with self._reading("reading shot boundaries") as conn:
            return {
                int(item): np.frombuffer(blob, dtype="<f8").astype(np.float64)
                for item, blob in vector_io.select_in(conn, sql, item_ids)
            }

    def item_vectors(self, item_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """item -> its item-level vector (D,) float32 (image vector or video meanP vector).
        Items without one are absent."""
        with self._snapshot("reading vectors") as conn:
            got = vector_io.per_item_vectors(conn, item_ids, self._dim(conn), frames=False)
        return {item: vecs[0] for item, (_, vecs) in got.items()}

    def load_vectors(self) -> VectorTable:
        """Every vector row (item-level and frames) in one consistent snapshot, ascending
        by id; ``generation`` says which catalog state it is."""
        with self._snapshot("loading vectors") as conn:
            return vector_io.load_table(conn, self._dim(conn), meta.generation(conn))

    def generation(self) -> int:
        """Increases with every committed change to items, vectors, tags or texts."""
        with self._reading("reading the generation") as conn:
            return meta.generation(conn)

    def vector_ids(self) -> np.ndarray:
        """(N,) int64 ascending ids of all vector rows. Cheap: reads an index, no blobs."""
        with self._reading("listing vector ids") as conn:
            return vector_io.vector_ids(conn)

    def vector_id_array(self) -> array:
        """The ids of `vector_ids` as a standard-library ``array("q")``, read without
        numpy (for checks that only compare id sets)."""
        with self._reading("listing vector ids") as conn:
            return vector_io.vector_id_array(conn)

    def item_vector_ids(self) -> np.ndarray:
        """(N,) int64 ascending ids of the item-level vector rows (an image's vector, a
        video's meanP vector). Cheap: reads an index, no blobs."""
        with self._reading("listing vector ids") as conn:
            return vector_io.vector_ids(conn, "v.t IS NULL")

    def fetch_vectors(self, ids: np.ndarray) -> np.ndarray:
        """(n, D) float16 vectors in the order of ``ids``. Raises NotFoundError if any id
        no longer exists."""
        with self._snapshot("fetching vectors") as conn:
            return vector_io.fetch_vectors(conn, ids, self._dim(conn))

    def vector_ids_where(self, flt: ItemFilter) -> np.ndarray:
        """(n,) int64 ascending ids of the vector rows whose item matches ``flt``. An empty
        filter returns every id; an unsatisfiable one an empty array."""
        import numpy as np

        from clipsearch.store.filter_sql import filter_condition

        cond = filter_condition(flt)
        if cond is None:
            return np.empty(0, dtype=np.int64)
        sql, params = cond
        with self._reading("filtering items") as conn:
            return vector_io.vector_ids(conn, "" if flt.is_empty else sql, params)

    def items_where(self, ids: Sequence[int], flt: ItemFilter | None) -> list[int]:
        """The indexed (ok) items among ``ids`` that match ``flt`` (None: any), in order."""
        from clipsearch.store.filter_sql import filter_condition
        from clipsearch.store.filters import ItemFilter

        cond = filter_condition(flt or ItemFilter())
        if cond is None:
            return []
        where, params = cond
        found: set[int] = set()
        with self._reading("filtering items") as conn:
            for chunk in vector_io.chunks(list(dict.fromkeys(int(i) for i in ids))):
                sql = (
                    f"SELECT i.id FROM items i WHERE i.status = 'ok' "
                    f"AND i.id IN ({', '.join('?' * len(chunk))}) AND {where}"
                )
                found.update(i for (i,) in conn.execute(sql, [*chunk, *params]))
        return [int(i) for i in ids if int(i) in found]

    def items_for_vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(item_ids (n,) int64, timestamps (n,) float64) aligned with vector ``ids``;
        timestamp NaN for item-level rows; item -1 (and NaN) for ids that no longer exist."""
        with self._snapshot("mapping vectors to items") as conn:
            return vector_io.items_for_vectors(conn, ids)

    # -- status ---------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counts and facts for ``clipsearch status``: items by kind and status, vectors,
        frames, roots, model binding, generation, schema version, bytes on disk."""
        with self._snapshot("reading statistics") as conn:
            counts = statistics.count(conn)
        return {
            "library": str(self.path),
            "catalog": str(self.db_path),
            **counts,
            "db_bytes": self._bytes_on_disk(),
        }

    # -- internals ------------------------------------------------------------------------------
    def _bytes_on_disk(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with suppress(OSError):
                total += os.stat(f"{self.db_path}{suffix}").st_size
        return total

    def _expected_dim(self) -> int | None:
        binding = self.model_binding()
        return binding.dim if binding else None

    def _dim(self, conn: sqlite3.Connection) -> int:
        binding = meta.read_binding(conn)
        if binding is not None:
            return binding.dim
        return meta.stored_dim(conn) or 0

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LibraryError(f"the catalog {self.db_path} is closed")
        return self._conn

    @contextmanager
    def _reading(self, action: str) -> Iterator[sqlite3.Connection]:
        """Serialise access and translate SQLite errors; statements autocommit."""
        with self._lock:
            conn = self._live()
            try:
                yield conn
            except sqlite3.DatabaseError as e:
                if isinstance(e, sqlite3.ProgrammingError):
                    raise
                raise translate(e, self.db_path, action=action) from e

    @contextmanager
    def _snapshot(self, action: str) -> Iterator[sqlite3.Connection]:
        """A read transaction: every statement inside sees the same committed state."""
        with self._reading(action) as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    @contextmanager
    def _writing(self, action: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE takes the write lock up front, so two
        writers queue on busy_timeout instead of deadlocking). Any exception rolls back."""
        if self.readonly:
            raise LibraryError(
                f"the catalog {self.db_path} was opened read-only; cannot do {action}"
            )
        with self._reading(action) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    # SQLite may have rolled back by itself (e.g. after SQLITE_FULL).
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
