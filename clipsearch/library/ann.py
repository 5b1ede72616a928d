"""The nearest-neighbour index of one library: the backend chosen by ``reindex``
(`AnnSettings`, ``<library>/ann.json``), its cache under ``ann/`` (exact or FAISS:
`clipsearch.index.IndexCache`) or its Milvus collection (`MilvusCache`), and the copy in
memory, refreshed when the catalog's generation moves (docs/architecture.md#caches)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from clipsearch.library.settings import AnnSettings
from clipsearch.store import Catalog

if TYPE_CHECKING:
    from clipsearch.index.base import IndexInfo, VectorIndex

Progress = Callable[[str, float], None]


class LibraryAnn:
    """The ANN index of the library at ``path`` over its ``catalog``; ``lock`` is the
    library's lock (the index in memory is swapped under it)."""

    def __init__(self, path: Path, catalog: Catalog, lock: threading.RLock) -> None:
        self.path = path
        self.catalog = catalog
        self._lock = lock
        self._index: VectorIndex | None = None
        self._index_generation: int | None = None
        self._cache = None
        self._milvus_cache = None

    @property
    def settings(self) -> AnnSettings:
        """The library's ANN choice (``reindex --ann``), kept in ``<library>/ann.json``."""
        return AnnSettings.load(self.path)

    def current(self, *, progress: Progress | None = None) -> VectorIndex:
        """The index over the catalog as it is now (`Library.vector_index`)."""
        with self._lock:
            generation = self.catalog.generation()
            if self._index is None or self._index_generation != generation:
                self._index = self._get(self.settings, progress, rebuild=False)
                self._index_generation = generation
            return self._index

    def rebuild(
        self,
        *,
        backend: str | None,
        recall_target: float | None,
        milvus_uri: str | None,
        progress: Progress | None,
    ) -> None:
        """Rebuild with these settings over the remembered ones, and remember them once the
        build succeeded (`Library.reindex`)."""
        old = self.settings
        ann = AnnSettings(
            backend=backend or old.backend,
            recall_target=old.recall_target if recall_target is None else recall_target,
            milvus_uri=milvus_uri or old.milvus_uri,
        )
        with self._lock:
            self._index = self._get(ann, progress, rebuild=True)
            self._index_generation = self.catalog.generation()
            ann.save(self.path)  # only once the build succeeded (a bad string raised above)

    def cache_is_current(self) -> bool:
        """Whether the exact/FAISS cache on disk already reflects the catalog with these
        settings (checked from its stamp, without loading it)."""
        from clipsearch.index.stamp import is_current

        ann = self.settings
        return is_current(
            self.path / "ann",
            self.catalog,
            backend=ann.backend,
            recall_target=ann.recall_target,
            vector_ids=self.catalog.vector_id_array,  # no numpy for a run that changed nothing
        )

    def info(self) -> IndexInfo | None:
        """Backend, parameters, vectors, memory and measured recall@10 of the cache."""
        if self.settings.milvus_index_type is not None:
            return self._milvus().info()
        return self._index_cache().info()

    def close(self) -> None:
        if self._milvus_cache is not None:
            self._milvus_cache.close()  # Milvus Lite: lets another process open it

    def _index_cache(self):
        if self._cache is None:
            from clipsearch.index import IndexCache

            self._cache = IndexCache(self.path / "ann")
        return self._cache

    def _get(self, ann: AnnSettings, progress: Progress | None, *, rebuild: bool) -> VectorIndex:
        kind = ann.milvus_index_type
        if kind is None:
            return self._index_cache().get(
                self.catalog,
                backend=ann.backend,
                recall_target=ann.recall_target,
                progress=progress,
                rebuild=rebuild,
            )
        from clipsearch.store.vector_meta import CatalogMetadata

        return self._milvus().get(
            CatalogMetadata(self.catalog),
            uri=ann.milvus_uri or str(self.path / AnnSettings.MILVUS_LITE),
            index_type=kind,
            recall_target=ann.recall_target,
            progress=progress,
            rebuild=rebuild,
        )

    def _milvus(self):
        if self._milvus_cache is None:
            from clipsearch.index.milvus_cache import MilvusCache

            self._milvus_cache = MilvusCache(self.path / "ann")
        return self._milvus_cache
