"""Export a catalog's vectors in clip-retrieval's layout or as one Parquet table.

See `clipsearch.store.exchange` for the formats. Vectors are written as the catalog
stores them (float16, L2-normalised before rounding, so norms are 1 within ~1e-3) or
widened to float32 without touching their values: an export read back by
`clipsearch.store.importing` gives the catalog the same bytes (a lossless round trip).
Rows are read in chunks, so exporting needs memory for one chunk, not the library.
Every file is written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipsearch.atomic import atomic_write, atomic_write_text
from clipsearch.errors import LibraryError, NotFoundError, UsageError
from clipsearch.store.catalog import Catalog
from clipsearch.store.exchange import (
    EMB_DIR,
    EMBEDDING_COLUMN,
    META_DIR,
    PARQUET_META_KEY,
    SIDECAR,
    ExchangeReport,
    check_format,
    metadata_schema,
    part_name,
    sidecar_json,
)
from clipsearch.store.item_table import TAKEN_COLUMNS, import_pyarrow, taken_values

CHUNK = 20_000  # vector rows read from the catalog at a time
ROWS_PER_FILE = 1_000_000  # clip-retrieval part size

Progress = Callable[[int, int], None]
"""(vector rows written, total)."""


@dataclass
class _Chunk:
    """Consecutive export rows: their vectors and metadata columns."""

    vectors: np.ndarray  # (n, D) float16
    columns: dict[str, list[Any]]  # metadata columns, n values each


def export_catalog(
    catalog: Catalog,
    out: Path | str,
    *,
    fmt: str = "clip-retrieval",
    dtype: str = "float16",
    items_only: bool = False,
    rows_per_file: int = ROWS_PER_FILE,
    progress: Progress | None = None,
) -> ExchangeReport:
    """Write every vector row of ``catalog`` (item-level and video frames; only item-level
    with ``items_only``) to ``out``: a folder for "clip-retrieval", a file for "parquet".

    Raises UsageError for an unknown format/dtype, an unbound (empty) library, or an
    ``out`` that already holds an export; LibraryError when the library changes during the
    export (run it again) or the output cannot be written.
    """
    check_format(fmt, dtype)
    if rows_per_file < 1:
        raise UsageError("rows per file must be at least 1")
    binding = catalog.model_binding()
    if binding is None:
        raise UsageError(f"the library {catalog.path} holds no vectors yet: index a folder first")
    out = Path(out).expanduser().absolute()
    ids, keep, item_count = _rows_to_export(catalog, items_only)
    total = int(keep.sum())
    try:
        if fmt == "clip-retrieval":
            files = _write_clip_retrieval(
                catalog, out, ids[keep], dtype, binding.dim, rows_per_file, progress
            )
            atomic_write_text(
                out / SIDECAR,
                sidecar_json(binding, fmt=fmt, dtype=dtype, items=item_count, vectors=total),
            )
            files.append(str(out / SIDECAR))
        else:
            meta = sidecar_json(binding, fmt=fmt, dtype=dtype, items=item_count, vectors=total)
            _write_parquet(catalog, out, ids[keep], dtype, binding.dim, meta, progress)
            files = [str(out)]
    except OSError as e:
        raise LibraryError(f"cannot write the export to {out}: {e.strerror or e}") from e
    return ExchangeReport(
        path=str(out), format=fmt, items=item_count, vectors=total, dtype=dtype, files=tuple(files)
    )


def _rows_to_export(catalog: Catalog, items_only: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """(all vector ids, mask of the rows to write, number of items they belong to)."""
    ids = catalog.vector_ids()
    keep = np.ones(len(ids), dtype=bool)
    items: set[int] = set()
    for s in range(0, len(ids), CHUNK):
        item_ids, ts = catalog.items_for_vectors(ids[s : s + CHUNK])
        if items_only:
            keep[s : s + CHUNK] = np.isnan(ts)
        items.update(item_ids[item_ids >= 0].tolist())
    return ids, keep, len(items)


def _chunks(catalog: Catalog, ids: np.ndarray) -> Iterator[_Chunk]:
    roots = dict(catalog.roots())
    for s in range(0, len(ids), CHUNK):
        part = ids[s : s + CHUNK]
        try:
            vectors = catalog.fetch_vectors(part)  # (n, D) float16
        except NotFoundError as e:
            raise LibraryError(
                "the library changed while it was being exported (an index run?): "
                "export again once it is done"
            ) from e
        item_ids, ts = catalog.items_for_vectors(part)
        records = catalog.items(item_ids.tolist())
        if len(records) != len(set(item_ids.tolist())):
            raise LibraryError(
                "the library changed while it was being exported: export again once it is done"
            )
        taken = catalog.capture_times(list(records))
        cols: dict[str, list[Any]] = {name: [] for name in metadata_schema().names}
        for item, t in zip(item_ids.tolist(), ts.tolist(), strict=True):
            r = records[item]
            cols["image_path"].append(r.path)
            cols["caption"].append(None)
            cols["kind"].append(r.kind)
            cols["t"].append(None if math.isnan(t) else t)
            cols["width"].append(r.width)
            cols["height"].append(r.height)
            cols["duration"].append(r.duration)
            cols["size"].append(r.size)
            cols["mtime_ns"].append(r.mtime_ns)
            cols["content_hash"].append(r.content_hash)
            cols["root"].append(roots.get(r.root_id) if r.root_id is not None else None)
            for name, value in zip(TAKEN_COLUMNS, taken_values(taken.get(item)), strict=True):
                cols[name].append(value)
        yield _Chunk(vectors=vectors, columns=cols)


class _RowStream:
    """The export rows in order, handed out as exactly-sized runs of chunks."""

    def __init__(self, catalog: Catalog, ids: np.ndarray) -> None:
        self._chunks = _chunks(catalog, ids)
        self._pending: _Chunk | None = None

    def take(self, n: int) -> Iterator[_Chunk]:
        """The next ``n`` rows, as one or more chunks."""
        while n > 0:
            if self._pending is None:
                self._pending = next(self._chunks)
            cur, k = self._pending, min(n, len(self._pending.vectors))
            rest = _Chunk(cur.vectors[k:], {c: v[k:] for c, v in cur.columns.items()})
            self._pending = rest if len(rest.vectors) else None
            n -= k
            yield _Chunk(cur.vectors[:k], {c: v[:k] for c, v in cur.columns.items()})


def _write_part(
    npy: Path, parquet: Path, chunks: Iterator[_Chunk], n: int, dim: int, dtype: str
) -> int:
    """One img_emb/metadata pair of ``n`` rows; returns the rows written."""
    pa = import_pyarrow()
    import pyarrow.parquet as pq

    schema = metadata_schema()
    emb = np.lib.format.open_memmap(npy, mode="w+", dtype=dtype, shape=(n, dim))
    filled = 0
    with pq.ParquetWriter(parquet, schema) as writer:
        for chunk in chunks:
            emb[filled : filled + len(chunk.vectors)] = chunk.vectors
            writer.write_table(pa.table(chunk.columns, schema=schema))
            filled += len(chunk.vectors)
    emb.flush()
    del emb
    return filled


def _write_clip_retrieval(
    catalog: Catalog,
    out: Path,
    ids: np.ndarray,
    dtype: str,
    dim: int,
    rows_per_file: int,
    progress: Progress | None,
) -> list[str]:
    emb_dir, meta_dir = out / EMB_DIR, out / META_DIR
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file: export into a folder")
    for d in (emb_dir, meta_dir):
        if d.exists() and any(d.iterdir()):
            raise UsageError(f"{d} already holds files: export into a new or empty folder")
    emb_dir.mkdir(parents=True, exist_ok=True)
    meta_dir.mkdir(parents=True, exist_ok=True)
    parts = max(1, math.ceil(len(ids) / rows_per_file))
    rows = _RowStream(catalog, ids)
    written: list[str] = []
    done = 0
    for i in range(parts):
        n = min(rows_per_file, len(ids) - i * rows_per_file)
        npy = emb_dir / part_name("img_emb", i, parts, ".npy")
        parquet = meta_dir / part_name("metadata", i, parts, ".parquet")
        chunks = rows.take(n)

        # The .npy and its metadata are written in one pass over the rows, each under a
        # temporary name until both are complete.
        def write_both(tmp_npy: Path, parquet: Path = parquet, chunks=chunks, n: int = n) -> None:
            atomic_write(
                parquet, lambda tmp_pq: _write_part(tmp_npy, tmp_pq, chunks, n, dim, dtype)
            )

        atomic_write(npy, write_both)
        written += [str(npy), str(parquet)]
        done += n
        if progress:
            progress(done, len(ids))
    return written


def _write_parquet(
    catalog: Catalog,
    out: Path,
    ids: np.ndarray,
    dtype: str,
    dim: int,
    meta: str,
    progress: Progress | None,
) -> None:
    pa = import_pyarrow()
    import pyarrow.parquet as pq

    if out.exists():
        raise UsageError(f"{out} already exists: export to a new file")
    if out.suffix != ".parquet":
        raise UsageError(f"{out}: a Parquet export is one file; name it *.parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    element = pa.float16() if dtype == "float16" else pa.float32()
    schema = metadata_schema().append(pa.field(EMBEDDING_COLUMN, pa.list_(element, dim)))
    schema = schema.with_metadata({PARQUET_META_KEY: meta.encode()})

    def write(tmp: Path) -> None:
        done = 0
        with pq.ParquetWriter(tmp, schema) as writer:
            for chunk in _chunks(catalog, ids):
                flat = pa.array(chunk.vectors.astype(dtype).reshape(-1), type=element)
                emb = pa.FixedSizeListArray.from_arrays(flat, dim)
                table = pa.table(chunk.columns, schema=metadata_schema())
                writer.write_table(table.append_column(schema.field(EMBEDDING_COLUMN), emb))
                done += len(chunk.vectors)
                if progress:
                    progress(done, len(ids))

    atomic_write(out, write)
