"""The catalog seen as rows with metadata: what a vector store holding its own filter
fields (Milvus) copies from the catalog.

`CatalogMetadata` wraps a `Catalog` (it stays the source of truth) and adds, per vector
row, the scalar fields a filter needs — item id, frame time, kind, path, size, mtime,
root folder, tags — in the shape `clipsearch.index.milvus_cache.MetadataSource` asks for.
"""

from __future__ import annotations

import math

import numpy as np

from clipsearch.store.catalog import Catalog

NO_FRAME_TIME = -1.0  # ``t`` of an item-level row (Milvus has no NaN-friendly filters)


class CatalogMetadata:
    """A `Catalog` as a metadata source for a vector store (see the module doc)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    @property
    def fingerprint(self) -> str | None:
        return self.catalog.fingerprint

    @property
    def catalog_id(self) -> str:
        return self.catalog.catalog_id

    def generation(self) -> int:
        return self.catalog.generation()

    def vector_ids(self) -> np.ndarray:
        return self.catalog.vector_ids()

    def fetch_vectors(self, ids: np.ndarray) -> np.ndarray:
        return self.catalog.fetch_vectors(ids)

    def tagged_items(self) -> dict[int, tuple[str, ...]]:
        return self.catalog.tagged_items()

    def vector_metadata(self, ids: np.ndarray) -> dict[str, list]:
        """Scalar fields of vector rows ``ids``, one list per field, aligned with ``ids``.
        Rows whose item vanished meanwhile get kind "" and path "" (no filter matches
        them; the next refresh deletes them)."""
        item_ids, ts = self.catalog.items_for_vectors(np.asarray(ids, dtype=np.int64))
        live = [int(i) for i in dict.fromkeys(item_ids.tolist()) if i >= 0]
        records = self.catalog.items(live)
        tags = self.catalog.tags(live)
        roots = dict(self.catalog.roots())
        out: dict[str, list] = {
            f: [] for f in ("item_id", "t", "kind", "path", "size", "mtime_ns", "root", "tags")
        }
        for item, t in zip(item_ids.tolist(), ts.tolist(), strict=True):
            r = records.get(item)
            out["item_id"].append(int(item))
            out["t"].append(NO_FRAME_TIME if math.isnan(t) else float(t))
            out["kind"].append(r.kind if r else "")
            out["path"].append(r.path if r else "")
            out["size"].append(int(r.size) if r else -1)
            out["mtime_ns"].append(int(r.mtime_ns) if r else 0)
            out["root"].append(roots.get(r.root_id, "") if r and r.root_id is not None else "")
            out["tags"].append(sorted(tags.get(item, {})))
        return out
