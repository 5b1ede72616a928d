"""Orchestration: scan → decode → encode → store, pipelined and resumable, with events.

Importing this package imports no submodule; each name below loads its module on
first use (the command line reads the event types without loading the pipeline).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipsearch.lazy import lazy_names

if TYPE_CHECKING:
    from clipsearch.ingest.events import (
        AnnProgress,
        BatchWritten,
        DatesRead,
        FileDone,
        IndexEvent,
        IndexReport,
        RuntimeChosen,
        RuntimeProgress,
        ScanDone,
        ScanProgress,
    )
    from clipsearch.ingest.pipeline import Indexer, IndexOptions

__all__ = [
    "AnnProgress",
    "BatchWritten",
    "DatesRead",
    "FileDone",
    "IndexEvent",
    "IndexOptions",
    "IndexReport",
    "Indexer",
    "RuntimeChosen",
    "RuntimeProgress",
    "ScanDone",
    "ScanProgress",
]

_LAZY = {
    **dict.fromkeys(
        (
            "AnnProgress",
            "BatchWritten",
            "DatesRead",
            "FileDone",
            "IndexEvent",
            "IndexReport",
            "RuntimeChosen",
            "RuntimeProgress",
            "ScanDone",
            "ScanProgress",
        ),
        "clipsearch.ingest.events",
    ),
    **dict.fromkeys(("Indexer", "IndexOptions"), "clipsearch.ingest.pipeline"),
}


__getattr__ = lazy_names(__name__, _LAZY)
