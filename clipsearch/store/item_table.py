"""`ItemWrite`s as Arrow tables: how encoded files travel between processes and through
Parquet shards before the catalog stores them.

One row per file, the columns of `ItemWrite`:

    path string, root_id int64?, kind string, size int64, mtime_ns int64,
    content_hash string?, status string, error string?, width int32?, height int32?,
    duration float64?, dim int32?, vectors binary?  (n·dim little-endian float16, row-major),
    timestamps list<float64>?  (n values, NaN for the item-level row; null for an image),
    cuts list<float64>?  (a video's shot cut times found while decoding; null: not known),
    taken_ns int64?, taken_offset_min int32?, taken_source string?  (its capture time)
    text_source string?, text_reader string?, text_frames bool?,
    text_rows list<struct<t float64?, text string>>?  (the text read in it; null: not read)
    item_id int64?  (set: an indexed item only read for its text, a `TextWrite`)
    image_encoder string?, image_encoder_note string?  (what encoded its pixels, and why
        not the encoder asked for, when a worker could not use it)

Vectors travel as the float16 the catalog stores (``encode_vectors``), so a row read back
gives the catalog exactly the bytes a local run would have written. Failed files have
null vectors and their error. The capture-time columns are optional when reading (a
shard written before they existed): its items get theirs on the next index run; so is
``cuts`` (such a video's moments follow the frame-score segmentation alone), and so are
the text, ``item_id`` and image-encoder columns (no text read, every row encoded as
asked). pyarrow is imported on first use (extra ``parquet``).
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
from clipsearch.store.records import VECTOR_DTYPE, ItemWrite, TextRead, TextWrite

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
            ("text_source", pa.string()),
            ("text_reader", pa.string()),
            ("text_frames", pa.bool_()),
            ("text_rows", pa.list_(pa.struct([("t", pa.float64()), ("text", pa.string())]))),
            ("item_id", pa.int64()),
            ("image_encoder", pa.string()),
            ("image_encoder_note", pa.string()),
        ]
    )


TAKEN_COLUMNS = ("taken_ns", "taken_offset_min", "taken_source")
TEXT_COLUMNS = ("text_source", "text_reader", "text_frames", "text_rows")
ENCODER_COLUMNS = ("image_encoder", "image_encoder_note")
# Columns a table written before they existed lacks (read as "not known").
OPTIONAL_COLUMNS = frozenset({*TAKEN_COLUMNS, "cuts", *TEXT_COLUMNS, "item_id", *ENCODER_COLUMNS})


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


def writes_to_table(
    writes: Sequence[ItemWrite | TextWrite],
    *,
    image_encoder: str | None = None,
    image_encoder_note: str | None = None,
) -> Any:
    """A pyarrow Table of ``writes`` (vectors converted to float16, as the catalog stores
    them); ``image_encoder`` (and why it is not the one asked for: ``image_encoder_note``)
    is recorded on every row encoded here."""
    pa = import_pyarrow()
    cols: dict[str, list[Any]] = {name: [] for name in item_schema().names}
    for w in writes:
        if isinstance(w, TextWrite):
            _text_only_row(cols, w)
            continue
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
        _append_text(cols, w.text)
        cols["item_id"].append(None)
        encoded = vecs is not None
        cols["image_encoder"].append(image_encoder if encoded else None)
        cols["image_encoder_note"].append(image_encoder_note if encoded else None)
    return pa.table(cols, schema=item_schema())


def _text_only_row(cols: dict[str, list[Any]], w: TextWrite) -> None:
    """The row of an item only read for its text: its id, path, kind and text."""
    values = {"path": w.path, "kind": w.kind, "size": 0, "mtime_ns": 0, "status": "ok"}
    values["item_id"] = int(w.item_id)
    for name in cols:
        if name not in TEXT_COLUMNS:
            cols[name].append(values.get(name))
    _append_text(cols, w.text)


def _append_text(cols: dict[str, list[Any]], text: TextRead | None) -> None:
    cols["text_source"].append(None if text is None else text.source)
    cols["text_reader"].append(None if text is None else text.reader)
    cols["text_frames"].append(None if text is None else bool(text.frames))
    cols["text_rows"].append(
        None if text is None else [{"t": t, "text": line} for t, line in text.rows]
    )


def _text_from_row(row: dict[str, Any]) -> TextRead | None:
    """The text read in a row's item (None when not read, or read by no reader)."""
    reader = row.get("text_reader")
    if reader is None:
        return None
    rows = tuple((r["t"], r["text"]) for r in row.get("text_rows") or ())
    return TextRead(row["text_source"], reader, bool(row.get("text_frames")), rows)


def table_to_writes(table: Any) -> list[ItemWrite | TextWrite]:
    """The `ItemWrite`s (and `TextWrite`s: items only read for their text) of an item table
    (any object with ``to_pylist``, e.g. a RecordBatch). Raises LibraryError for a row
    whose vectors do not match its ``dim``."""
    out: list[ItemWrite | TextWrite] = []
    for row in table.to_pylist():
        if row.get("item_id") is not None:
            out.append(TextWrite(row["item_id"], row["path"], row["kind"], _text_from_row(row)))
            continue
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
                text=_text_from_row(row),
            )
        )
    return out


def image_encoders(table: Any) -> dict[str, str | None]:
    """The image encoders that encoded a table's rows: label -> why it is not the one
    asked for (None: as asked). Empty for a table without the columns."""
    names = set(getattr(table, "schema", table).names)
    if not set(ENCODER_COLUMNS) <= names:
        return {}
    labels = table.column("image_encoder").to_pylist()
    notes = table.column("image_encoder_note").to_pylist()
    out: dict[str, str | None] = {}
    for label, note in zip(labels, notes, strict=True):
        if label is not None:
            out[label] = out.get(label) or note
    return out


def shard_files(folder: Path) -> list[Path]:
    """The Parquet shards in ``folder`` (none if it does not exist), by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == ".parquet" and p.is_file())


def read_shard(
    path: Path, *, batch: int = SHARD_BATCH, encoders: dict[str, str | None] | None = None
) -> Iterator[list[ItemWrite | TextWrite]]:
    """The writes of one Parquet shard, ``batch`` files at a time (``encoders``, when
    given, is updated with `image_encoders` of each batch). Raises DamagedShardError when
    the file is not a readable item table (e.g. cut short by a crash)."""
    import_pyarrow()
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        missing = set(item_schema().names) - OPTIONAL_COLUMNS - set(pf.schema_arrow.names)
        if missing:
            raise DamagedShardError(
                f"{path} is not a clipsearch item shard (no {', '.join(sorted(missing))})"
            )
        for rb in pf.iter_batches(batch_size=batch):
            if encoders is not None:
                for label, note in image_encoders(rb).items():
                    encoders[label] = encoders.get(label) or note
            yield table_to_writes(rb)
    except (OSError, ValueError) as e:  # ArrowInvalid is a ValueError
        raise DamagedShardError(f"cannot read the shard {path}: {e}") from e


def remove_shard(path: Path) -> None:
    """Delete an ingested shard (already gone is fine)."""
    with contextlib.suppress(FileNotFoundError):
        Path(path).unlink()
