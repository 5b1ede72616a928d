"""Orchestration: scan → decode → encode → store, pipelined and resumable, with events."""

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
