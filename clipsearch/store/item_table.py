"""`ItemWrite`s as Arrow tables: how encoded files travel between processes and through
Parquet shards before the catalog stores them.

One row per file, the columns of `ItemWrite`:

    path string, root_id int64?, kind string, size int64, mtime_ns int64,
    content_hash string?, status string, error string?, width int32?, height int32?,
    duration float64?, dim int32?, vectors binary?  (n·dim little-endian float16, row-major),
    timestamps list<float64>?  (n values, NaN for the item-level row; null for an image),
    cuts list<float64>?  (a video's shot cut times found while decoding; null: not known),
    taken_ns int64?, taken_offset_min int32?, taken_source string?  (its capture time)

Vectors travel as the float16 the catalog stores (``encode_vectors``), so a row read back
gives the catalog exactly the bytes a local run would have written. Failed files have
null vectors and their error. The capture-time columns are optional when reading (a
shard written before they existed): its items get theirs on the next index run; so is
``cuts`` (such a video's moments follow the frame-score segmentation alone). pyarrow is imported on first use (extra ``parquet``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clipsearch.errors import LibraryError, MissingDependencyError
from clipsearch.media.capture_time import TAKEN_SOURCES, CaptureTime
from clipsearch.store.records import VECTOR_DTYPE, ItemWrite

SHARD_BATCH = 256  # files per catalog transaction when ingesting shards


class DamagedShardError(LibraryError):
    """A Parquet shard that is not a readable item table (e.g. cut short by a crash)."""


def import_pyarrow() -> Any:
    """pyarrow, or MissingDependencyError naming the extra that installs it."""
    try:
        import pyarrow
    except ImportError:
        raise MissingDependencyError("pyarrow", "parquet") from None
    return pyarrow


def item_schema() -> Any:
    """The Arrow schema of an item table (see the module doc)."""
    pa = import_pyarrow()
    return pa.schema(
        [
            ("path", pa.string()),
            ("root_id", pa.int64()),
            ("kind", pa.string()),
            ("size", pa.int64()),
            ("mtime_ns", pa.int64()),
            ("content_hash", pa.string()),
            ("status", pa.string()),
            ("error", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("duration", pa.float64()),
            ("dim", pa.int32()),
            ("vectors", pa.binary()),
            ("timestamps", pa.list_(pa.float64())),
            ("cuts", pa.list_(pa.float64())),
            *taken_fields(),
        ]
    )


TAKEN_COLUMNS = ("taken_ns", "taken_offset_min", "taken_source")


def taken_fields() -> list[tuple[str, Any]]:
    """The Arrow fields of a capture time (`CaptureTime`), all nullable."""
    pa = import_pyarrow()
    return list(zip(TAKEN_COLUMNS, (pa.int64(), pa.int32(), pa.string()), strict=True))


def taken_values(taken: CaptureTime | None) -> tuple[int | None, int | None, str | None]:
    """A capture time as the values of the `TAKEN_COLUMNS`."""
    if taken is None:
        return None, None, None
    return taken.ns, taken.offset_min, taken.source


def taken_from_row(row: dict[str, Any]) -> CaptureTime | None:
    """The capture time of a row with the `TAKEN_COLUMNS` (None when absent or not read)."""
    ns, source = row.get("taken_ns"), row.get("taken_source")
    if ns is None or source not in TAKEN_SOURCES:
        return None
    return CaptureTime(int(ns), row.get("taken_offset_min"), source)


def writes_to_table(writes: Sequence[ItemWrite]) -> Any:
    """A pyarrow Table of ``writes`` (vectors converted to float16, as the catalog stores them)."""
    pa = import_pyarrow()
    cols: dict[str, list[Any]] = {name: [] for name in item_schema().names}
    for w in writes:
        vecs = None if w.vectors is None else np.atleast_2d(np.asarray(w.vectors))
        cols["path"].append(str(w.path))
        cols["root_id"].append(w.root_id)
        cols["kind"].append(w.kind)
        cols["size"].append(int(w.size))
        cols["mtime_ns"].append(int(w.mtime_ns))
        cols["content_hash"].append(w.content_hash)
        cols["status"].append(w.status)
        cols["error"].append(w.error)
        cols["width"].append(w.width)
        cols["height"].append(w.height)
        cols["duration"].append(w.duration)
        cols["dim"].append(None if vecs is None else int(vecs.shape[1]))
        cols["vectors"].append(
            None if vecs is None else np.ascontiguousarray(vecs, dtype=VECTOR_DTYPE).tobytes()
        )
        cols["timestamps"].append(
            None if w.timestamps is None else np.asarray(w.timestamps, np.float64).tolist()
        )
        cols["cuts"].append(None if w.cuts is None else np.asarray(w.cuts, np.float64).tolist())
        for name, value in zip(TAKEN_COLUMNS, taken_values(w.taken), strict=True):
            cols[name].append(value)
    return pa.table(cols, schema=item_schema())


def table_to_writes(table: Any) -> list[ItemWrite]:
    """The `ItemWrite`s of an item table (any object with ``to_pylist``, e.g. a RecordBatch).
    Raises LibraryError for a row whose vectors do not match its ``dim``."""
    out: list[ItemWrite] = []
    for row in table.to_pylist():
        vectors = None
        if row["vectors"] is not None:
            dim = int(row["dim"] or 0)
            raw = row["vectors"]
            if dim <= 0 or len(raw) % (2 * dim):
                raise LibraryError(
                    f"encoded vectors of {row['path']!r} do not match their width {dim}: "
                    "the shard is damaged; delete it and index again"
                )
            vectors = np.frombuffer(raw, dtype=VECTOR_DTYPE).reshape(-1, dim).astype(np.float16)
        ts, cuts = row["timestamps"], row.get("cuts")
        out.append(
            ItemWrite(
                path=row["path"],
                root_id=row["root_id"],
                kind=row["kind"],
                size=row["size"],
                mtime_ns=row["mtime_ns"],
                content_hash=row["content_hash"],
                status=row["status"],
                error=row["error"],
                width=row["width"],
                height=row["height"],
                duration=row["duration"],
                vectors=vectors,
                timestamps=None
                if ts is None
                else np.array([math.nan if t is None else t for t in ts], dtype=np.float64),
                cuts=None if cuts is None else np.array(cuts, dtype=np.float64),
                taken=taken_from_row(row),
            )
        )
    return out


def shard_files(folder: Path) -> list[Path]:
    """The Parquet shards in ``folder`` (none if it does not exist), by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == ".parquet" and p.is_file())


def read_shard(path: Path, *, batch: int = SHARD_BATCH) -> Iterator[list[ItemWrite]]:
    """The writes of one Parquet shard, ``batch`` files at a time. Raises DamagedShardError
    when the file is not a readable item table (e.g. cut short by a crash)."""
    import_pyarrow()
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        optional = {*TAKEN_COLUMNS, "cuts"}
        missing = set(item_schema().names) - optional - set(pf.schema_arrow.names)
        if missing:
            raise DamagedShardError(
                f"{path} is not a clipsearch item shard (no {', '.join(sorted(missing))})"
            )
        for rb in pf.iter_batches(batch_size=batch):
            yield table_to_writes(rb)
    except (OSError, ValueError) as e:  # ArrowInvalid is a ValueError
        raise DamagedShardError(f"cannot read the shard {path}: {e}") from e


def remove_shard(path: Path) -> None:
    """Delete an ingested shard (already gone is fine)."""
    with contextlib.suppress(FileNotFoundError):
        Path(path).unlink()
