"""IndexCache: load / incremental update / rebuild decisions, corrupt files, atomic saves
under simulated crashes, memory-mapped loading, and the stamp's facts (info)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from clipsearch.index import ExactIndex, FaissIndex, IndexCache
from clipsearch.index import cache as cache_mod

faiss = pytest.importorskip("faiss")

D = 32
ROOT = Path(__file__).resolve().parents[2]


def clustered(n: int, *, seed: int) -> np.ndarray:
    centres = np.random.default_rng(77).standard_normal((40, D)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, 40, n)] + 0.8 * rng.standard_normal((n, D)).astype(
        np.float32
    ) / np.sqrt(D)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


class FakeSource:
    """In-memory stand-in for the catalog (the VectorSource protocol). Counts fetched rows."""

    def __init__(
        self, n: int, *, seed: int = 0, fingerprint: str = "model-a", catalog_id: str = "cat-1"
    ):
        self._fingerprint = fingerprint
        self.catalog_id = catalog_id
        self._ids = np.arange(1, n + 1, dtype=np.int64)
        self._vectors = clustered(n, seed=seed)
        self._generation = 1
        self._next = n + 1
        self.fetched = 0

    @property
    def fingerprint(self) -> str | None:
        return self._fingerprint

    def generation(self) -> int:
        return self._generation

    def vector_ids(self) -> np.ndarray:
        return self._ids.copy()

    def fetch_vectors(self, ids: np.ndarray) -> np.ndarray:
        self.fetched += len(ids)
        pos = np.searchsorted(self._ids, ids)
        assert (self._ids[pos] == ids).all()
        return self._vectors[pos]

    # -- changes, as the catalog would make them ----------------------------------------------
    def add(self, n: int, *, seed: int) -> np.ndarray:
        new = np.arange(self._next, self._next + n, dtype=np.int64)
        self._next += n
        self._ids = np.concatenate([self._ids, new])
        self._vectors = np.concatenate([self._vectors, clustered(n, seed=seed)])
        self._generation += 1
        return new

    def delete(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self._ids, ids)
        self._ids, self._vectors = self._ids[keep], self._vectors[keep]
        self._generation += 1

    def set_fingerprint(self, fp: str) -> None:
        self._fingerprint = fp
        self._generation += 1

    def brute_force(self, queries: np.ndarray, k: int) -> np.ndarray:
        return ExactIndex(self._ids, self._vectors, precision="fp32").search(queries, k).ids


@pytest.fixture(autouse=True)
def one_thread():
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def queries(n: int = 20) -> np.ndarray:
    return clustered(n, seed=1000).astype(np.float32)


def cache(tmp_path: Path, **kw) -> IndexCache:
    kw.setdefault("tuning_queries", 100)
    return IndexCache(tmp_path / "ann", **kw)


def test_build_then_load_without_fetching(tmp_path):
    src = FakeSource(2000)
    first = cache(tmp_path).get(src)
    assert isinstance(first, ExactIndex) and src.fetched == 2000
    again = cache(tmp_path).get(src)  # a new process: loads the files
    assert src.fetched == 2000
    np.testing.assert_array_equal(again.search(queries(), 10).ids, src.brute_force(queries(), 10))
    info = cache(tmp_path).info()
    assert info.backend == "exact" and info.vectors == 2000 and info.generation == 1
    assert info.recall_at_10 == 1.0


@pytest.mark.parametrize("backend", ["exact", "HNSW16", "IVF16,Flat"])
def test_incremental_update_fetches_only_new_rows(tmp_path, backend):
    src = FakeSource(3000)
    c = cache(tmp_path)
    c.get(src, backend=backend)
    gone = src.vector_ids()[::50]  # 60 rows
    src.delete(gone)
    new = src.add(100, seed=5)
    before = src.fetched
    index = cache(tmp_path).get(src, backend=backend)  # from disk, in a "new process"
    assert src.fetched - before == 100
    assert len(index) == 3000 - 60 + 100
    m = index.search(queries(), 10)
    assert not np.isin(m.ids, gone).any()
    found = index.search(src.fetch_vectors(new).astype(np.float32), 1).ids[:, 0]
    assert (found == new).mean() >= 0.95
    info = cache(tmp_path).info()
    assert info.generation == src.generation() and info.vectors == len(index)
    # and a third process sees the updated cache without fetching anything
    before = src.fetched
    cache(tmp_path).get(src, backend=backend)
    assert src.fetched == before


def test_the_same_cache_object_updates_in_place(tmp_path):
    src = FakeSource(1500)
    c = cache(tmp_path)
    index = c.get(src, backend="HNSW16")
    src.add(50, seed=9)
    assert c.get(src, backend="HNSW16") is index and len(index) == 1550


def test_hnsw_tombstones_survive_a_reload(tmp_path):
    src = FakeSource(3000)
    cache(tmp_path).get(src, backend="HNSW16")
    gone = src.vector_ids()[:100]
    src.delete(gone)
    cache(tmp_path).get(src, backend="HNSW16")
    index = cache(tmp_path).get(src, backend="HNSW16")
    assert isinstance(index, FaissIndex) and index.tombstones.size == 100
    assert cache(tmp_path).info().tombstones == 100
    m = index.search(src_vectors_of(gone), 10)
    assert not np.isin(m.ids, gone).any()


def src_vectors_of(ids: np.ndarray) -> np.ndarray:
    return clustered(3000, seed=0)[ids - 1].astype(np.float32)


def test_too_many_changes_rebuild(tmp_path):
    src = FakeSource(1000)
    cache(tmp_path).get(src, backend="IVF8,Flat")
    src.add(600, seed=3)  # 60% > rebuild_fraction
    before = src.fetched
    cache(tmp_path).get(src, backend="IVF8,Flat")
    assert src.fetched - before == 1600


def test_model_change_rebuilds(tmp_path):
    src = FakeSource(1000)
    cache(tmp_path).get(src)
    src.set_fingerprint("model-b")
    before = src.fetched
    cache(tmp_path).get(src)
    assert src.fetched - before == 1000


def test_other_catalog_rebuilds(tmp_path):
    src = FakeSource(800)
    cache(tmp_path).get(src)
    other = FakeSource(800, seed=3, catalog_id="cat-2")  # same generation, same ids
    index = cache(tmp_path).get(other)
    assert other.fetched == 800
    np.testing.assert_array_equal(index.search(queries(), 5).ids, other.brute_force(queries(), 5))


def test_backend_change_rebuilds_and_auto_follows_the_size(tmp_path):
    src = FakeSource(1200)
    c = cache(tmp_path, flat_threshold=1000)
    assert isinstance(c.get(src), FaissIndex)  # auto, above the exact threshold
    assert c.info().factory.startswith("HNSW")
    assert isinstance(c.get(src, backend="exact"), ExactIndex)
    assert c.info().backend == "exact"
    small = FakeSource(500)
    assert isinstance(cache(tmp_path / "s", flat_threshold=1000).get(small), ExactIndex)


def test_stale_generation_with_same_ids_only_rewrites_the_stamp(tmp_path):
    src = FakeSource(500)
    cache(tmp_path).get(src)
    src._generation += 3  # e.g. tags changed: generation moves, vectors do not
    before = src.fetched
    cache(tmp_path).get(src)
    assert src.fetched == before and cache(tmp_path).info().generation == src.generation()


@pytest.mark.parametrize(
    "damage", ["truncate-vectors", "garbage-faiss", "garbage-stamp", "delete-ids", "flip-ids"]
)
def test_corrupt_cache_is_rebuilt(tmp_path, damage):
    src = FakeSource(2000)
    cache(tmp_path).get(src, backend="IVF16,Flat")
    ann = tmp_path / "ann"
    stamp = json.loads((ann / "stamp.json").read_text())
    files = stamp["files"]
    if damage == "truncate-vectors":
        p = ann / files["vectors"]
        p.write_bytes(p.read_bytes()[:1000])
    elif damage == "garbage-faiss":
        p = ann / files["faiss"]
        p.write_bytes(np.random.default_rng(0).bytes(p.stat().st_size))
    elif damage == "garbage-stamp":
        (ann / "stamp.json").write_text("{not json")
    elif damage == "delete-ids":
        (ann / files["ids"]).unlink()
    else:
        p = ann / files["ids"]
        raw = bytearray(p.read_bytes())
        raw[-3] ^= 0xFF  # same size, different ids
        p.write_bytes(bytes(raw))
    before = src.fetched
    index = cache(tmp_path).get(src, backend="IVF16,Flat")
    assert src.fetched - before == 2000  # rebuilt from the source
    m = index.search(queries(), 10)
    assert np.isin(m.ids[m.ids >= 0], src.vector_ids()).all()
    assert cache(tmp_path).info() is not None


def _npy_payload(path: Path) -> tuple[bytearray, int]:
    """A .npy file's bytes and where its array data starts."""
    raw = bytearray(path.read_bytes())
    with path.open("rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        return raw, f.tell()


@pytest.mark.parametrize(
    ("backend", "damage"),
    [
        (backend, damage)
        for backend in ("exact", "HNSW16", "IVF16,Flat")
        for damage in ("swap-rows", "nan-block", "flip-faiss")
        if not (backend == "exact" and damage == "flip-faiss")  # exact has no FAISS file
    ],
)
def test_same_size_damage_to_the_payload_is_detected_and_rebuilt(tmp_path, backend, damage):
    """Damage that keeps every file's size and the ids intact: rows 0-99 swapped with
    100-199 of the vector matrix (plausible scores, wrong answers), 4 KB of 0xFF (NaN in
    fp16), or bytes flipped inside the FAISS file."""
    src = FakeSource(2000)
    cache(tmp_path).get(src, backend=backend)
    ann = tmp_path / "ann"
    files = json.loads((ann / "stamp.json").read_text())["files"]
    if damage == "flip-faiss":
        p = ann / files["faiss"]
        raw = bytearray(p.read_bytes())
        mid = len(raw) // 2
        raw[mid : mid + 64] = bytes(b ^ 0x5A for b in raw[mid : mid + 64])
    else:
        p = ann / files["vectors"]
        raw, start = _npy_payload(p)
        if damage == "swap-rows":
            row = D * 2  # fp16
            a = raw[start : start + 100 * row]
            raw[start : start + 100 * row] = raw[start + 100 * row : start + 200 * row]
            raw[start + 100 * row : start + 200 * row] = a
        else:
            raw[start + 8192 : start + 8192 + 4096] = b"\xff" * 4096
    size = p.stat().st_size
    p.write_bytes(bytes(raw))
    assert p.stat().st_size == size

    before = src.fetched
    index = cache(tmp_path).get(src, backend=backend)
    assert src.fetched - before == 2000  # not trusted: rebuilt from the source
    if backend == "exact":
        np.testing.assert_array_equal(
            index.search(queries(), 10).ids, src.brute_force(queries(), 10)
        )
    else:
        m = index.search(queries(), 10)
        assert np.isin(m.ids[m.ids >= 0], src.vector_ids()).all()
    again = cache(tmp_path).get(src, backend=backend)  # the rebuilt cache is whole again
    assert src.fetched - before == 2000
    assert again.search(queries(), 3).ids.shape == (20, 3)


def test_failed_save_keeps_the_old_cache_usable(tmp_path, monkeypatch):
    src = FakeSource(1500)
    cache(tmp_path).get(src, backend="IVF16,Flat")
    old_files = set(json.loads((tmp_path / "ann" / "stamp.json").read_text())["files"].values())
    new = src.add(40, seed=4)
    real = cache_mod.atomic_write

    def failing(path, write):
        if path.name.endswith(".faiss"):
            write(path.with_name(".tmp-half-" + path.name))  # half done, then the disk fails
            raise OSError(28, "No space left on device")
        real(path, write)

    monkeypatch.setattr(cache_mod, "atomic_write", failing)
    c = cache(tmp_path)
    index = c.get(src, backend="IVF16,Flat")
    assert isinstance(c.save_error, OSError)
    assert len(index) == 1540  # the in-memory index is up to date anyway
    monkeypatch.setattr(cache_mod, "atomic_write", real)
    stamp = json.loads((tmp_path / "ann" / "stamp.json").read_text())
    assert set(stamp["files"].values()) == old_files and stamp["generation"] == 1
    assert all((tmp_path / "ann" / f).exists() for f in old_files)
    # the next process updates from the old, intact cache
    before = src.fetched
    index = cache(tmp_path).get(src, backend="IVF16,Flat")
    assert src.fetched - before == 40 and len(index) == 1540
    assert not list((tmp_path / "ann").glob(".tmp-*"))  # leftovers swept
    assert (
        index.search(src.fetch_vectors(new).astype(np.float32), 1).ids[:, 0] == new
    ).mean() > 0.9


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {root!r})
    from tests.unit.test_index_cache import FakeSource
    from clipsearch.index import IndexCache
    from clipsearch.index import cache as cache_mod
    import faiss
    faiss.omp_set_num_threads(1)
    src = FakeSource(1500)
    c = IndexCache({ann!r}, tuning_queries=100)
    c.get(src, backend={backend!r})          # generation 1, saved completely
    src.add(40, seed=4)                      # generation 2
    real = cache_mod.atomic_write
    def crash(path, write):
        if path.name.endswith({victim!r}):
            write(path.with_name(".tmp-crash-" + path.name))
            os._exit(17)                     # killed mid-save: no cleanup, no stamp
        real(path, write)
    cache_mod.atomic_write = crash
    c.get(src, backend={backend!r})
    """
)


@pytest.mark.parametrize(("backend", "victim"), [("IVF16,Flat", ".faiss"), ("exact", "stamp.json")])
def test_process_killed_during_save_leaves_the_old_index_usable(tmp_path, backend, victim):
    ann = tmp_path / "ann"
    script = CRASH_SCRIPT.format(root=str(ROOT), ann=str(ann), backend=backend, victim=victim)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=240
    )
    assert proc.returncode == 17, proc.stderr.decode()[-2000:]
    assert list(ann.glob(".tmp-crash-*"))  # the crash really happened mid-save
    src = FakeSource(1500)  # the catalog as of generation 1
    index = cache(tmp_path).get(src, backend=backend)
    assert src.fetched == 0  # loaded the old cache as it was
    assert cache(tmp_path).info().generation == 1
    np.testing.assert_array_equal(
        index.search(queries(), 10).ids[:, :1], src.brute_force(queries(), 10)[:, :1]
    )
    src.add(40, seed=4)  # and moving on to generation 2 is an ordinary update
    cache(tmp_path).get(src, backend=backend)
    assert src.fetched == 40


def test_large_ivf_loads_memory_mapped_and_reloads_writable_to_update(tmp_path):
    src = FakeSource(3000)
    cache(tmp_path, mmap_bytes=0).get(src, backend="IVF16,Flat")
    loaded = cache(tmp_path, mmap_bytes=0).get(src, backend="IVF16,Flat")
    assert isinstance(loaded, FaissIndex) and loaded.read_only
    assert isinstance(loaded.rows.vectors, np.memmap)
    in_memory = cache(tmp_path, mmap_bytes=1 << 40).get(src, backend="IVF16,Flat")
    assert not in_memory.read_only
    q = queries()
    np.testing.assert_array_equal(loaded.search(q, 10).ids, in_memory.search(q, 10).ids)
    c = cache(tmp_path, mmap_bytes=0)
    assert c.get(src, backend="IVF16,Flat").read_only
    src.add(30, seed=8)
    updated = c.get(src, backend="IVF16,Flat")
    assert not updated.read_only and len(updated) == 3030


def test_info_reports_the_measured_recall_and_parameters(tmp_path):
    src = FakeSource(2500)
    index = cache(tmp_path).get(src, backend="HNSW16", recall_target=0.9)
    info = cache(tmp_path).info()
    assert info.backend == "faiss" and info.factory == "HNSW16"
    assert info.params == index.info().params and "efSearch" in info.params
    assert info.recall_at_10 == index.info().recall_at_10 >= 0.9
    assert info.recall_target == 0.9 and info.recall_queries == 100
    assert info.vectors == 2500 and info.memory_bytes > 2500 * D * 4
    assert info.built_at and info.generation == 1


def test_new_recall_target_retunes_without_rebuilding(tmp_path):
    src = FakeSource(2500)
    cache(tmp_path).get(src, backend="IVF32,Flat", recall_target=0.6)
    low = cache(tmp_path).info()
    before = src.fetched
    cache(tmp_path).get(src, backend="IVF32,Flat", recall_target=0.99)
    info = cache(tmp_path).info()
    assert src.fetched == before
    assert info.recall_target == 0.99 and info.params["nprobe"] > low.params["nprobe"]
    # Stored: the recall of queries that did not tune nprobe (near the target, not at it).
    assert low.recall_at_10 < info.recall_at_10 and info.recall_at_10 >= 0.97


def test_empty_source_gives_an_empty_index(tmp_path):
    src = FakeSource(0)
    index = cache(tmp_path).get(src)
    m = index.search(np.ones(D, np.float32) / np.sqrt(D), 5)
    assert len(index) == 0 and (m.ids == -1).all()


def test_atomic_write_never_exposes_a_half_written_file(tmp_path):
    target = tmp_path / "stamp.json"
    target.write_text("old")

    def half(p: Path) -> None:
        p.write_text("new but trunc")
        raise OSError(5, "I/O error")

    with pytest.raises(OSError):
        cache_mod.atomic_write(target, half)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["stamp.json"]
    cache_mod.atomic_write(target, lambda p: p.write_text("new"))
    assert target.read_text() == "new"


def test_old_files_are_swept_after_updates(tmp_path):
    src = FakeSource(1000)
    for step in range(3):
        cache(tmp_path).get(src, backend="HNSW16")
        src.add(20, seed=step)
    cache(tmp_path).get(src, backend="HNSW16")
    stamp = json.loads((tmp_path / "ann" / "stamp.json").read_text())
    on_disk = {p.name for p in (tmp_path / "ann").iterdir()} - {"stamp.json", ".lock"}
    assert on_disk == set(stamp["files"].values())


def test_the_stamp_check_agrees_with_get_and_reads_ids_without_numpy(tmp_path):
    """An index run that changed nothing asks `stamp.is_current` (ids as plain ints, no
    numpy) whether to touch the cache: it must say what `IndexCache.is_current` says, and
    be False exactly when `get` would have work to do."""
    from array import array

    from clipsearch.index.stamp import ids_checksum, is_current

    src = FakeSource(500)
    c = cache(tmp_path)

    def both() -> tuple[bool, bool, bool]:
        plain = lambda: array("q", src.vector_ids().tolist())  # noqa: E731 - no numpy
        return (
            c.is_current(src),
            is_current(c.cache_dir, src, backend="auto", recall_target=0.95),
            is_current(c.cache_dir, src, backend="auto", recall_target=0.95, vector_ids=plain),
        )

    assert both() == (False, False, False)  # no cache yet
    c.get(src)
    assert both() == (True, True, True)
    assert is_current(c.cache_dir, src, backend="exact", recall_target=0.95)  # it is exact
    assert not is_current(c.cache_dir, src, backend="HNSW16", recall_target=0.95)
    src.add(3, seed=5)
    assert both() == (False, False, False)  # the catalog moved on
    c.get(src)
    assert both() == (True, True, True)
    # Same generation, other ids (a catalog rewritten behind the stamp's back): not current.
    src._ids[-1] += 1000
    assert both() == (False, False, False)

    ids = np.array([9, 2**40, 3, 1], dtype=np.int64)
    assert ids_checksum(ids.tolist()) == ids_checksum(ids)  # the same sum without numpy
    assert ids_checksum(array("q", [1, 3, 9, 2**40])) == ids_checksum(ids)
    assert ids_checksum([1, 2]) != ids_checksum([1, 3])
