"""clipsearch.store: the catalog, the library's source of truth (docs/architecture.md#the-catalog).

``Catalog`` (SQLite: roots, items, vectors, tags, texts, model binding, generation counter),
the records it reads and writes, and ``ItemFilter`` for metadata-filtered search.
"""

from clipsearch.store.catalog import Catalog
from clipsearch.store.connection import CATALOG_FILE
from clipsearch.store.filters import ItemFilter
from clipsearch.store.migrations import SCHEMA_VERSION
from clipsearch.store.records import ItemRecord, ItemWrite, ModelBinding, VectorTable

__all__ = [
    "CATALOG_FILE",
    "SCHEMA_VERSION",
    "Catalog",
    "ItemFilter",
    "ItemRecord",
    "ItemWrite",
    "ModelBinding",
    "VectorTable",
]
