"""The catalog's named choices for export and import, as ``Literal`` types that import
nothing (the command line declares its options from them without loading the store):
the file layouts and vector dtypes of `clipsearch.store.exchange`, which re-exports them."""

from __future__ import annotations

from typing import Literal

ExportFormat = Literal["clip-retrieval", "parquet"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("clip-retrieval", "parquet")
ExportDtype = Literal["float16", "float32"]
EXPORT_DTYPES: tuple[ExportDtype, ...] = ("float16", "float32")
