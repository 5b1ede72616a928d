"""clipsearch.store: the catalog, the library's source of truth (docs/architecture.md#the-catalog).

``Catalog`` (SQLite: roots, items, vectors, tags, texts, model binding, generation counter),
the records it reads and writes, and ``ItemFilter`` for metadata-filtered search.

Importing this package imports no submodule; each name below loads its module on
first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipsearch.lazy import lazy_names

if TYPE_CHECKING:
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

_LAZY = {
    **dict.fromkeys(("Catalog",), "clipsearch.store.catalog"),
    **dict.fromkeys(("CATALOG_FILE",), "clipsearch.store.connection"),
    **dict.fromkeys(("ItemFilter",), "clipsearch.store.filters"),
    **dict.fromkeys(("SCHEMA_VERSION",), "clipsearch.store.migrations"),
    **dict.fromkeys(
        ("ItemRecord", "ItemWrite", "ModelBinding", "VectorTable"), "clipsearch.store.records"
    ),
}


__getattr__ = lazy_names(__name__, _LAZY)
