"""Moving a library's vectors out and in: clip-retrieval's layout or one Parquet table
(`clipsearch.store.exporting`, `clipsearch.store.importing`), with the model binding
checked on the way in."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from clipsearch.library.ann import LibraryAnn
from clipsearch.library.models import ModelSource
from clipsearch.store import Catalog, ModelBinding
from clipsearch.store.exchange import ExchangeReport
from clipsearch.store.writer_lock import WriterLock


def export_library(
    catalog: Catalog,
    out: Path | str,
    *,
    fmt: str,
    dtype: str,
    items_only: bool,
    progress: Callable[[int, int], None] | None,
) -> ExchangeReport:
    """`Library.export`."""
    from clipsearch.store.exporting import export_catalog

    return export_catalog(
        catalog, out, fmt=fmt, dtype=dtype, items_only=items_only, progress=progress
    )


def import_into_library(
    path: Path,
    catalog: Catalog,
    source: Path | str,
    *,
    models: ModelSource,
    named: bool,
    ann: LibraryAnn,
    lock: threading.RLock,
    progress: Callable[[int, int], None] | None,
) -> ExchangeReport:
    """`Library.import_embeddings`: when the library was opened with a model (``named``)
    the source's model is checked against it (loaded to learn its fingerprint); the ANN
    index is refreshed afterwards."""
    from clipsearch.store.importing import import_embeddings

    binding = None
    if named:
        enc = models.encoder
        binding = ModelBinding(spec=enc.spec, fingerprint=enc.fingerprint, dim=enc.dim)
    # One writer at a time: an indexing run and an import would race for the same paths.
    with WriterLock(path, action="importing"):
        report = import_embeddings(catalog, source, binding=binding, progress=progress)
        with lock:
            ann.current()
    return report
