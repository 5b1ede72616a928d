"""Import embeddings made elsewhere into a catalog: clip-retrieval's layout or our Parquet.

See `clipsearch.store.exchange` for the formats. The source may come from clipsearch
(``export``: it records its model, and every item is rebuilt with its frames and
metadata) or from clip-retrieval itself (``image_path`` and an embedding per row; the
caller names the model that made them). Either way the library is bound to that model:
importing vectors of another model into a bound library is a ModelMismatchError, never a
silent mix of spaces.

Rows are grouped into items by consecutive ``image_path``; ``t`` (null = item-level row)
separates a video's frames from its meanP vector (recomputed from the frames when an
export has none). Vectors that are not unit-length within 1e-2 are normalised (fp16
rounding stays within ~1e-3, so clipsearch's own exports pass through unchanged). Size
and mtime come from the metadata, else from the file when it exists here, so a later
``clipsearch index`` of the same folder sees imported files as unchanged. Rows that
cannot be stored (no path, non-finite values, a path seen before) are skipped and
reported; one bad row never stops an import.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipsearch.errors import ModelMismatchError, NotFoundError, UsageError
from clipsearch.media.scan import kind_of
from clipsearch.store.catalog import Catalog
from clipsearch.store.exchange import (
    EMB_DIR,
    EMBEDDING_COLUMN,
    META_DIR,
    PARQUET_META_KEY,
    PATH_COLUMN,
    SIDECAR,
    ExchangeReport,
    binding_from_json,
    parts_of,
)
from clipsearch.store.item_table import import_pyarrow, taken_from_row
from clipsearch.store.records import ItemWrite, ModelBinding

CHUNK = 20_000  # rows read at a time
WRITE_BATCH = 256  # items per catalog transaction
NORM_TOLERANCE = 1e-2

Progress = Callable[[int, int], None]
"""(rows read, total rows)."""


@dataclass
class _Group:
    """Consecutive rows of one path."""

    path: str
    meta: dict[str, Any]
    ts: list[float] = field(default_factory=list)
    vecs: list[np.ndarray] = field(default_factory=list)


def import_embeddings(
    catalog: Catalog,
    source: Path | str,
    *,
    binding: ModelBinding | None = None,
    progress: Progress | None = None,
) -> ExchangeReport:
    """Store the embeddings of ``source`` (a clip-retrieval folder or a Parquet export).

    binding: the model that made them; needed when the source does not record it, and
        checked against the record when it does.
    Raises NotFoundError for a missing source, UsageError for one that is neither format
    or carries no model, ModelMismatchError for a model or width other than the library's.
    """
    src = Path(source).expanduser().absolute()
    if not src.exists():
        raise NotFoundError(f"not found: {src}")
    if src.is_dir() and (src / EMB_DIR).is_dir():
        fmt, (recorded, total, dim, rows) = "clip-retrieval", _clip_retrieval(src)
    elif src.is_file() and src.suffix == ".parquet":
        fmt, (recorded, total, dim, rows) = "parquet", _parquet(src)
    else:
        raise UsageError(
            f"{src} is neither a clip-retrieval export (a folder with {EMB_DIR}/ and "
            f"{META_DIR}/) nor a Parquet export (a .parquet file)"
        )
    if recorded is not None and binding is not None and recorded.fingerprint != binding.fingerprint:
        raise ModelMismatchError(
            f"{src} was made with {recorded.spec} (fingerprint {recorded.fingerprint}), not "
            f"with {binding.spec} ({binding.fingerprint}); leave out --model to use its model"
        )
    model = recorded or binding
    if model is None:
        raise UsageError(
            f"{src} does not record which model made its embeddings: pass --model SPEC "
            "naming that model (its vectors must come from the same weights)"
        )
    if dim not in (None, model.dim):
        raise ModelMismatchError(
            f"{src} holds {dim}-d embeddings but the model {model.spec} makes {model.dim}-d ones"
        )
    catalog.bind_model(model)
    return _Importer(catalog, model.dim).run(src, fmt, total, rows, progress)


# -- readers: (recorded binding, total rows, width or None, (vectors (n, D), metadata rows)...)
Rows = Iterator[tuple[np.ndarray, list[dict[str, Any]]]]
Source = tuple[ModelBinding | None, int, int | None, Rows]


def _clip_retrieval(src: Path) -> Source:
    import_pyarrow()
    import pyarrow.parquet as pq

    sidecar = src / SIDECAR
    recorded = binding_from_json(sidecar.read_text() if sidecar.is_file() else None, str(sidecar))
    embs = parts_of(src / EMB_DIR, "img_emb", ".npy")
    metas = parts_of(src / META_DIR, "metadata", ".parquet")
    if not embs:
        raise UsageError(f"{src / EMB_DIR} holds no img_emb_N.npy files")
    if sorted(embs) != sorted(metas):
        raise UsageError(
            f"{src}: the img_emb and metadata parts do not pair up "
            f"(img_emb {sorted(embs)}, metadata {sorted(metas)})"
        )
    arrays = {i: np.load(embs[i], mmap_mode="r", allow_pickle=False) for i in embs}
    for i, a in arrays.items():
        n_meta = pq.ParquetFile(metas[i]).metadata.num_rows
        if a.ndim != 2 or len(a) != n_meta:
            raise UsageError(
                f"{embs[i].name} has shape {a.shape} but {metas[i].name} has {n_meta} rows"
            )
        if PATH_COLUMN not in pq.ParquetFile(metas[i]).schema_arrow.names:
            raise UsageError(f"{metas[i]} has no {PATH_COLUMN} column")

    def rows() -> Rows:
        for i in sorted(embs):
            emb = arrays[i]
            start = 0
            for batch in pq.ParquetFile(metas[i]).iter_batches(batch_size=CHUNK):
                n = batch.num_rows
                yield np.asarray(emb[start : start + n]), batch.to_pylist()
                start += n

    dim = int(arrays[min(arrays)].shape[1])
    return recorded, sum(len(a) for a in arrays.values()), dim, rows()


def _parquet(src: Path) -> Source:
    import_pyarrow()
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(src)
    schema = pf.schema_arrow
    for col in (PATH_COLUMN, EMBEDDING_COLUMN):
        if col not in schema.names:
            raise UsageError(f"{src} has no {col} column")
    meta = (schema.metadata or {}).get(PARQUET_META_KEY)
    recorded = binding_from_json(meta, f"{src} (schema metadata)")

    def rows() -> Rows:
        for batch in pf.iter_batches(batch_size=CHUNK):
            emb = batch.column(EMBEDDING_COLUMN)
            width = emb.type.list_size if hasattr(emb.type, "list_size") else -1
            flat = emb.flatten().to_numpy(zero_copy_only=False)
            if width <= 0:  # variable-length lists: every row must have the same length
                width = len(flat) // max(1, batch.num_rows)
            table = batch.drop_columns([EMBEDDING_COLUMN])
            yield flat.reshape(batch.num_rows, width), table.to_pylist()

    emb_type = schema.field(EMBEDDING_COLUMN).type
    dim = emb_type.list_size if getattr(emb_type, "list_size", 0) > 0 else None
    return recorded, pf.metadata.num_rows, dim, rows()


# -- grouping rows into items ---------------------------------------------------------------
class _Importer:
    def __init__(self, catalog: Catalog, dim: int) -> None:
        self.catalog = catalog
        self.dim = dim
        self.roots: dict[str, int] = {}
        self.seen: set[str] = set()
        self.skipped: list[tuple[str, str]] = []
        self.normalised = 0
        self.items = 0
        self.vectors = 0
        self.batch: list[ItemWrite] = []

    def run(self, src: Path, fmt: str, total: int, rows: Rows, progress: Progress | None):
        group: _Group | None = None
        done = 0
        for vecs, metas in rows:
            if vecs.ndim != 2 or vecs.shape[1] != self.dim:
                raise ModelMismatchError(
                    f"{src} holds {vecs.shape[-1]}-d embeddings; the library's model makes "
                    f"{self.dim}-d ones"
                )
            for vec, meta in zip(vecs, metas, strict=True):
                path = meta.get(PATH_COLUMN)
                if group is not None and path == group.path:
                    group.ts.append(_time(meta))
                    group.vecs.append(vec)
                    continue
                if group is not None:
                    self._add(group)
                group = _Group(str(path or ""), meta, [_time(meta)], [vec])
            done += len(metas)
            if progress:
                progress(done, total)
        if group is not None:
            self._add(group)
        self._flush()
        return ExchangeReport(
            path=str(src),
            format=fmt,
            items=self.items,
            vectors=self.vectors,
            skipped=tuple(self.skipped),
            normalised=self.normalised,
        )

    def _add(self, g: _Group) -> None:
        write = self._write_for(g)
        if write is None:
            return
        self.seen.add(g.path)
        self.batch.append(write)
        if len(self.batch) >= WRITE_BATCH:
            self._flush()

    def _flush(self) -> None:
        if self.batch:
            self.catalog.write_items(self.batch)
            self.items += len(self.batch)
            self.vectors += sum(len(w.vectors) for w in self.batch if w.vectors is not None)
            self.batch = []

    def _write_for(self, g: _Group) -> ItemWrite | None:
        if not g.path:
            self.skipped.append(("", f"{len(g.vecs)} rows without an {PATH_COLUMN}"))
            return None
        if g.path in self.seen:
            self.skipped.append((g.path, "the path appears twice; the first rows were kept"))
            return None
        vecs = np.asarray(g.vecs, dtype=np.float32)  # (n, D)
        if not np.isfinite(vecs).all():
            self.skipped.append((g.path, "non-finite embedding values"))
            return None
        norms = np.linalg.norm(vecs, axis=1)
        if (norms == 0).any():
            self.skipped.append((g.path, "an all-zero embedding"))
            return None
        off = np.abs(norms - 1) > NORM_TOLERANCE
        if off.any():
            vecs[off] /= norms[off, None]
            self.normalised += int(off.sum())
        else:
            vecs = np.asarray(g.vecs)  # keep the exact values (fp16 round trip)
        ts = np.asarray(g.ts, dtype=np.float64)
        m = g.meta
        kind = m.get("kind") or kind_of(g.path) or "image"
        if kind not in ("image", "video"):
            self.skipped.append((g.path, f"unknown kind {kind!r}"))
            return None
        item_level = np.isnan(ts)
        if kind == "image" and (len(ts) != 1 or not item_level[0]):
            self.skipped.append((g.path, "an image needs exactly one row without a time t"))
            return None
        if kind == "video" and item_level.sum() > 1:
            self.skipped.append((g.path, "more than one video-level row (t null)"))
            return None
        if kind == "video" and not item_level.any():  # frames only: add their meanP vector
            mean = vecs.astype(np.float32).mean(axis=0)
            vecs = np.vstack([vecs, (mean / max(np.linalg.norm(mean), 1e-12))[None, :]])
            ts = np.append(ts, np.nan)
        size, mtime_ns = m.get("size"), m.get("mtime_ns")
        if size is None or mtime_ns is None:
            try:
                st = os.stat(g.path)
                size, mtime_ns = st.st_size, st.st_mtime_ns
            except OSError:
                size, mtime_ns = size or 0, mtime_ns or 0
        return ItemWrite(
            path=g.path,
            root_id=self._root(m.get("root")),
            kind=kind,
            size=int(size),
            mtime_ns=int(mtime_ns),
            content_hash=m.get("content_hash"),
            status="ok",
            width=m.get("width"),
            height=m.get("height"),
            duration=m.get("duration"),
            vectors=vecs,
            timestamps=None if kind == "image" else ts,
            taken=taken_from_row(m),
        )

    def _root(self, path: str | None) -> int | None:
        if not path:
            return None
        if path not in self.roots:
            self.roots[path] = self.catalog.add_root(path)
        return self.roots[path]


def _time(meta: dict[str, Any]) -> float:
    t = meta.get("t")
    return math.nan if t is None else float(t)
