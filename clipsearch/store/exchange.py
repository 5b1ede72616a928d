"""Embedding exchange formats: clip-retrieval's folder layout and one Parquet table.

clip-retrieval (rom1504/clip-retrieval, ``clip_inference/writer.py``) writes

    OUT/img_emb/img_emb_{i}.npy          (n_i, D) embeddings, L2-normalised (float16 there)
    OUT/metadata/metadata_{i}.parquet    n_i rows, row j describing embedding j

with ``i`` zero-padded to ``int(log10(parts)) + 1`` digits. autofaiss
(``build_index(embeddings="OUT/img_emb")``) reads the .npy files in name order; the
clip-retrieval back end reads ``metadata/*.parquet`` in name order and returns the columns
it is asked for (by default ``image_path``, ``caption``, ``url``). We write those names and
add our own columns:

    image_path string    the file (clip-retrieval's column name)
    caption string?      null: the catalog holds no captions
    kind string          image | video
    t float64?           frame time in seconds; null for an item-level row (an image's
                         vector, a video's meanP vector)
    width int32?, height int32?, duration float64?, size int64, mtime_ns int64,
    content_hash string?, root string?,
    taken_ns int64?, taken_offset_min int32?, taken_source string?  (its capture time;
                         null when not read yet: an import dates it on its next index run)

An item's rows are consecutive (item-level row first, then its frames by time), so an
importer can rebuild the item. ``OUT/clipsearch.json`` records the model (spec,
fingerprint, dim), the dtype and the counts; clip-retrieval ignores it.

``--format parquet`` writes the same columns plus ``embedding`` (fixed_size_list of
float16 or float32, length D) into one Parquet file, with the same JSON in the schema
metadata under ``clipsearch``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipsearch.errors import UsageError
from clipsearch.store.choices import EXPORT_DTYPES, EXPORT_FORMATS
from clipsearch.store.item_table import import_pyarrow, taken_fields
from clipsearch.store.records import ModelBinding

EMB_DIR = "img_emb"
META_DIR = "metadata"
SIDECAR = "clipsearch.json"
PARQUET_META_KEY = b"clipsearch"
EMBEDDING_COLUMN = "embedding"
PATH_COLUMN = "image_path"


@dataclass(frozen=True)
class ExchangeReport:
    """What an export or import did."""

    path: str  # the folder or file written / read
    format: str  # "clip-retrieval" | "parquet"
    items: int  # items written (export) or stored (import)
    vectors: int  # vector rows written / stored
    dtype: str | None = None  # element type of the embeddings
    files: tuple[str, ...] = ()  # files written (export)
    skipped: tuple[tuple[str, str], ...] = ()  # (path, why) rows an import left out
    normalised: int = 0  # import: vectors that were not unit-length and were normalised

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "items": self.items,
            "vectors": self.vectors,
            "dtype": self.dtype,
            "files": list(self.files),
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "normalised": self.normalised,
        }


def part_name(prefix: str, index: int, parts: int, suffix: str) -> str:
    """clip-retrieval's part file name: ``img_emb_0.npy``, ``metadata_07.parquet``."""
    width = int(math.log10(max(1, parts))) + 1
    return f"{prefix}_{str(index).zfill(width)}{suffix}"


def metadata_schema() -> Any:
    """Arrow schema of the metadata columns (see the module doc)."""
    pa = import_pyarrow()
    return pa.schema(
        [
            (PATH_COLUMN, pa.string()),
            ("caption", pa.string()),
            ("kind", pa.string()),
            ("t", pa.float64()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("duration", pa.float64()),
            ("size", pa.int64()),
            ("mtime_ns", pa.int64()),
            ("content_hash", pa.string()),
            ("root", pa.string()),
            *taken_fields(),
        ]
    )


def sidecar_json(binding: ModelBinding, *, fmt: str, dtype: str, items: int, vectors: int) -> str:
    return json.dumps(
        {
            "format": fmt,
            "model": {"spec": binding.spec, "fingerprint": binding.fingerprint, "dim": binding.dim},
            "dtype": dtype,
            "items": items,
            "vectors": vectors,
        },
        indent=1,
    )


def binding_from_json(text: str | bytes | None, where: str) -> ModelBinding | None:
    """The model recorded by an export (None when there is no record). Raises UsageError
    for a record that cannot be read."""
    if text is None:
        return None
    try:
        model = json.loads(text)["model"]
        return ModelBinding(
            spec=str(model["spec"]), fingerprint=str(model["fingerprint"]), dim=int(model["dim"])
        )
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{where} is not a readable clipsearch export record: {e}") from e


def check_format(fmt: str, dtype: str) -> None:
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"unknown export format {fmt!r}; use {' or '.join(EXPORT_FORMATS)}")
    if dtype not in EXPORT_DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; use {' or '.join(EXPORT_DTYPES)}")


def parts_of(folder: Path, prefix: str, suffix: str) -> dict[int, Path]:
    """part number -> file for ``prefix_<n><suffix>`` files in ``folder``."""
    out: dict[int, Path] = {}
    if folder.is_dir():
        for p in folder.iterdir():
            stem = p.name.removeprefix(prefix + "_").removesuffix(suffix)
            if p.name.startswith(prefix + "_") and p.name.endswith(suffix) and stem.isdigit():
                out[int(stem)] = p
    return out
