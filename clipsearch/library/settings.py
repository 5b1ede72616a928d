"""Where a library lives by default (`default_library_path`, defined import-free in
`clipsearch.store.location`), and how its nearest-neighbour index is built
(``<library>/ann.json``, the choice `Library.reindex` remembers)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from clipsearch.atomic import atomic_write_text
from clipsearch.store.location import default_library_path

__all__ = ["AnnSettings", "default_library_path"]


@dataclass(frozen=True)
class AnnSettings:
    """How the library's nearest-neighbour index is built (persisted by ``reindex``)."""

    backend: str = (
        "auto"  # "auto", "exact", a FAISS factory string, or "milvus[:HNSW|IVF_FLAT|FLAT]"
    )
    recall_target: float = 0.95  # search parameters are raised until recall@10 >= this
    milvus_uri: str | None = (
        None  # a Milvus server (http://host:19530); None: Milvus Lite in the library
    )

    FILE = "ann.json"
    MILVUS_LITE = "milvus.db"  # Milvus Lite's folder inside the library

    @property
    def milvus_index_type(self) -> str | None:
        """The Milvus index type ("HNSW", "IVF_FLAT", "FLAT") of a Milvus backend, else None.
        Unspecified: HNSW on a Milvus server; FLAT on Milvus Lite, whose HNSW builds slowly
        and, measured (docs/scale.md), searches no faster than its exact scan."""
        name, _, kind = self.backend.partition(":")
        if name.lower() != "milvus":
            return None
        server = self.milvus_uri is not None and "://" in self.milvus_uri
        return kind.upper() or ("HNSW" if server else "FLAT")

    @classmethod
    def load(cls, library: Path) -> AnnSettings:
        try:
            data = json.loads((library / cls.FILE).read_text())
            uri = data.get("milvus_uri")
            return cls(
                backend=str(data["backend"]),
                recall_target=float(data["recall_target"]),
                milvus_uri=None if uri is None else str(uri),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return cls()  # missing or damaged: the defaults (the file is only a preference)

    def save(self, library: Path) -> None:
        data = {"backend": self.backend, "recall_target": self.recall_target}
        if self.milvus_uri is not None:
            data["milvus_uri"] = self.milvus_uri
        atomic_write_text(library / self.FILE, json.dumps(data))
