"""Catalog behaviour: binding, writes and upserts, vectors in and out, copy/delete,
generation counter, stats. (Filters: test_store_filters.py; crashes, corruption,
concurrency, disk full: test_store_robustness.py.)"""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest

from clipsearch.errors import (
    LibraryError,
    ModelMismatchError,
    NotFoundError,
    UsageError,
)
from clipsearch.store import (
    CATALOG_FILE,
    SCHEMA_VERSION,
    Catalog,
    ItemFilter,
    ItemWrite,
    ModelBinding,
)

DIM = 16
BINDING = ModelBinding(spec="tiny:seed0", fingerprint="fp-tiny-0", dim=DIM)


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)  # (n, D)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def image(
    path: str, vec: np.ndarray, *, root: int | None = None, size: int = 100, **kw
) -> ItemWrite:
    return ItemWrite(
        path=path,
        root_id=root,
        kind="image",
        size=size,
        mtime_ns=kw.pop("mtime_ns", 1_700_000_000 * 10**9),
        content_hash=kw.pop("content_hash", f"h:{path}"),
        status="ok",
        vectors=vec,
        **kw,
    )


def video(path: str, frames: np.ndarray, ts: np.ndarray, *, root: int | None = None) -> ItemWrite:
    pooled = frames.mean(axis=0)
    pooled /= np.linalg.norm(pooled)
    return ItemWrite(
        path=path,
        root_id=root,
        kind="video",
        size=10_000,
        mtime_ns=1,
        content_hash=f"h:{path}",
        status="ok",
        duration=float(ts.max()) + 0.5,
        width=64,
        height=48,
        vectors=np.vstack([frames, pooled[None]]),
        timestamps=np.append(ts, np.nan),
    )


def failed(path: str, error: str = "cannot identify image file") -> ItemWrite:
    return ItemWrite(
        path=path,
        root_id=None,
        kind="image",
        size=3,
        mtime_ns=1,
        content_hash=None,
        status="failed",
        error=error,
    )


@pytest.fixture
def cat(tmp_path):
    c = Catalog.open(tmp_path / "lib")
    c.bind_model(BINDING)
    yield c
    c.close()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# -- opening, schema ---------------------------------------------------------------------------
def test_open_creates_folder_and_current_schema(tmp_path):
    lib = tmp_path / "a" / "b"
    with Catalog.open(lib) as c:
        assert c.path == lib
        assert (lib / CATALOG_FILE).is_file()
        assert c.stats()["schema_version"] == SCHEMA_VERSION
        assert c.model_binding() is None and c.fingerprint is None
        assert c.generation() == 0
    conn = sqlite3.connect(lib / CATALOG_FILE)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"meta", "roots", "items", "vectors", "tags"} <= tables
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_open_without_create_or_readonly_on_missing_library(tmp_path):
    with pytest.raises(NotFoundError, match="no clipsearch library"):
        Catalog.open(tmp_path / "nope", create=False)
    with pytest.raises(NotFoundError):
        Catalog.open(tmp_path / "nope", readonly=True)
    assert not (tmp_path / "nope").exists()


def test_library_path_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(LibraryError, match="is a file"):
        Catalog.open(f)


def test_closed_catalog_raises_library_error(tmp_path):
    c = Catalog.open(tmp_path / "lib")
    c.close()
    c.close()  # idempotent
    with pytest.raises(LibraryError, match="closed"):
        c.stats()


# -- model binding -----------------------------------------------------------------------------
def test_bind_model_first_time_then_same_fingerprint_ok(tmp_path):
    with Catalog.open(tmp_path / "lib") as c:
        c.bind_model(BINDING)
        c.bind_model(ModelBinding(spec="an alias", fingerprint=BINDING.fingerprint, dim=DIM))
        assert c.model_binding() == BINDING  # the first spec is kept
        assert c.fingerprint == BINDING.fingerprint
    with Catalog.open(tmp_path / "lib", readonly=True) as c:
        assert c.model_binding() == BINDING


def test_bind_other_model_is_a_clear_mismatch(cat):
    other = ModelBinding(spec="ViT-B-32:laion2b_s34b_b79k", fingerprint="fp-other", dim=512)
    with pytest.raises(ModelMismatchError) as e:
        cat.bind_model(other)
    msg = str(e.value)
    assert "tiny:seed0" in msg and "ViT-B-32:laion2b_s34b_b79k" in msg
    assert "--model" in msg and "--library" in msg
    assert cat.model_binding() == BINDING


def test_vectors_of_wrong_width_rejected(cat, rng):
    with pytest.raises(ModelMismatchError, match="16-d"):
        cat.write_items([image("/p/a.jpg", unit(rng, 1, 32))])
    assert cat.stats()["items"]["total"] == 0


# -- writes ------------------------------------------------------------------------------------
def test_write_and_read_items(cat, rng):
    root = cat.add_root("/photos")
    assert cat.add_root("/photos") == root  # idempotent
    assert cat.roots() == [(root, "/photos")]
    v = unit(rng, 2)
    ids = cat.write_items(
        [
            image("/photos/a.jpg", v[0], root=root, width=640, height=480),
            image("/photos/b.jpg", v[1:], root=root),
            failed("/photos/bad.jpg"),
        ]
    )
    assert len(set(ids)) == 3
    a = cat.item(ids[0])
    assert a.path == "/photos/a.jpg" and a.kind == "image" and a.status == "ok"
    assert (a.width, a.height, a.root_id, a.frame_count) == (640, 480, root, None)
    assert cat.item_by_path("/photos/b.jpg").id == ids[1]
    assert cat.item(99999) is None and cat.item_by_path("/nope") is None
    assert set(cat.items([ids[0], ids[2], 12345])) == {ids[0], ids[2]}
    under = cat.file_states_under_root(root)  # what the incremental diff compares
    a_state = (a.id, a.size, a.mtime_ns, "ok")
    assert set(under) == {"/photos/a.jpg", "/photos/b.jpg"} and under[a.path] == a_state
    bad = cat.item(ids[2])
    assert bad.status == "failed" and bad.error == "cannot identify image file"
    vecs = cat.item_vectors(ids)
    assert set(vecs) == {ids[0], ids[1]}  # the failed item has no vector
    assert vecs[ids[0]].dtype == np.float32 and vecs[ids[0]].shape == (DIM,)


def test_fp16_round_trip_precision(cat, rng):
    v = unit(rng, 50)
    ids = cat.write_items([image(f"/p/{i}.jpg", v[i]) for i in range(50)])
    got = cat.item_vectors(ids)
    back = np.stack([got[i] for i in ids])  # (50, D)
    np.testing.assert_allclose(back, v.astype(np.float16).astype(np.float32), rtol=0, atol=0)
    cos = np.sum(back * v, axis=1) / np.linalg.norm(back, axis=1)
    assert cos.min() > 0.9999
    blob = sqlite3.connect(cat.db_path).execute("SELECT vector FROM vectors LIMIT 1").fetchone()[0]
    assert len(blob) == 2 * DIM  # fp16: 2 bytes per dimension
    assert np.array_equal(np.frombuffer(blob, "<f2"), v[0].astype("<f2"))


def test_upsert_keeps_item_id_and_replaces_vectors(cat, rng):
    v = unit(rng, 3)
    (item,) = cat.write_items([image("/p/a.jpg", v[0], size=10)])
    old_ids = cat.vector_ids()
    (again,) = cat.write_items([image("/p/a.jpg", v[1], size=20)])
    assert again == item
    assert cat.item(item).size == 20
    new_ids = cat.vector_ids()
    assert len(new_ids) == 1 and new_ids[0] not in old_ids  # ids are never reused
    np.testing.assert_allclose(cat.item_vectors([item])[item], v[1], atol=1e-3)
    # The file became unreadable: the failed write drops its vectors.
    cat.write_items([failed("/p/a.jpg", "truncated")])
    assert cat.item(item).status == "failed" and cat.item_vectors([item]) == {}
    assert len(cat.vector_ids()) == 0


def test_vector_id_array_lists_the_vector_ids_without_numpy(cat, rng):
    v = unit(rng, 6)
    cat.write_items([image(f"/p/{i}.jpg", v[i]) for i in range(5)])
    cat.write_items([image("/p/0.jpg", v[5])])  # its row replaced: ids are not contiguous
    ids = cat.vector_id_array()
    assert ids.typecode == "q" and ids.tolist() == cat.vector_ids().tolist()
    assert len(ids) == 5 and ids.tolist() == sorted(ids.tolist()) and ids[-1] > 5


def test_video_frames_sorted_by_time_with_meanp_item_vector(cat, rng):
    frames = unit(rng, 5)
    ts = np.array([4.0, 0.0, 2.0, 1.0, 3.0])
    (vid,) = cat.write_items([video("/v/clip.mp4", frames, ts)])
    rec = cat.item(vid)
    assert rec.kind == "video" and rec.frame_count == 5 and rec.duration == 4.5
    got_ts, got_v = cat.frames([vid])[vid]
    order = np.argsort(ts)
    np.testing.assert_array_equal(got_ts, ts[order])
    np.testing.assert_allclose(got_v, frames[order], atol=1e-3)
    assert got_v.dtype == np.float32 and got_ts.dtype == np.float64
    pooled = frames.mean(0) / np.linalg.norm(frames.mean(0))
    np.testing.assert_allclose(cat.item_vectors([vid])[vid], pooled, atol=1e-3)
    table = cat.load_vectors()
    assert np.isnan(table.timestamps).sum() == 1
    assert cat.frames([vid, 777]).keys() == {vid}


def test_malformed_writes_are_usage_errors_and_write_nothing(cat, rng):
    v = unit(rng, 3)
    bad = [
        ItemWrite("/p/x", None, "audio", 1, 1, None, "ok", vectors=v[:1]),
        ItemWrite("/p/x", None, "image", 1, 1, None, "done", vectors=v[:1]),
        ItemWrite("/p/x", None, "image", 1, 1, None, "ok"),  # ok without vectors
        ItemWrite("/p/x", None, "image", 1, 1, None, "failed", vectors=v[:1]),
        ItemWrite("/p/x", None, "image", 1, 1, None, "ok", vectors=v),  # 3 rows, no timestamps
        ItemWrite(
            "/p/x", None, "video", 1, 1, None, "ok", vectors=v, timestamps=np.array([0.0, 1.0])
        ),
        ItemWrite(
            "/p/x",
            None,
            "video",
            1,
            1,
            None,
            "ok",
            vectors=v,
            timestamps=np.array([np.nan, np.nan, 1]),
        ),
        ItemWrite("/p/x", None, "image", 1, 1, None, "ok", vectors=np.full((1, DIM), np.nan)),
    ]
    for w in bad:
        with pytest.raises(UsageError):
            cat.write_items([image("/p/good.jpg", v[0]), w])
    assert cat.stats()["items"]["total"] == 0 and cat.generation() == 0


def test_foreign_key_violation_rolls_back_the_whole_batch(cat, rng):
    v = unit(rng, 2)
    with pytest.raises(UsageError, match="FOREIGN KEY"):
        cat.write_items([image("/p/a.jpg", v[0]), image("/p/b.jpg", v[1], root=424242)])
    assert cat.item_by_path("/p/a.jpg") is None and cat.generation() == 0


# -- reuse: copy_item, find_reusable -----------------------------------------------------------
def test_copy_item_reuses_vectors_without_encoding(cat, rng):
    frames = unit(rng, 4)
    (src,) = cat.write_items([video("/v/a.mp4", frames, np.arange(4.0))])
    found = cat.find_reusable("h:/v/a.mp4", 10_000, "video")
    assert found is not None and found.id == src
    assert cat.find_reusable("h:/v/a.mp4", 10_000, "image") is None
    assert cat.find_reusable("h:/v/a.mp4", 9_999, "video") is None
    dst = cat.copy_item(
        src,
        ItemWrite("/moved/a.mp4", None, "video", 10_000, 5, "h:/v/a.mp4", "ok"),
    )
    assert dst != src
    rec = cat.item(dst)
    assert (rec.duration, rec.width, rec.frame_count, rec.mtime_ns) == (3.5, 64, 4, 5)
    a_ts, a_v = cat.frames([src])[src]
    b_ts, b_v = cat.frames([dst])[dst]
    np.testing.assert_array_equal(a_ts, b_ts)
    np.testing.assert_array_equal(a_v, b_v)
    np.testing.assert_array_equal(cat.item_vectors([src])[src], cat.item_vectors([dst])[dst])
    assert len(cat.vector_ids()) == 10
    # A move: the old path is swept; the copy keeps its vectors.
    cat.delete_items([src])
    assert dst in cat.frames([dst]) and len(cat.vector_ids()) == 5


def test_copy_item_onto_its_own_path_keeps_vectors(cat, rng):
    (src,) = cat.write_items([image("/p/a.jpg", unit(rng, 1), size=5)])
    before = cat.vector_ids()
    same = cat.copy_item(src, ItemWrite("/p/a.jpg", None, "image", 5, 999, "h:/p/a.jpg", "ok"))
    assert same == src and cat.item(src).mtime_ns == 999
    np.testing.assert_array_equal(cat.vector_ids(), before)


def test_copy_item_errors(cat, rng):
    (ok,) = cat.write_items([image("/p/a.jpg", unit(rng, 1))])
    (bad,) = cat.write_items([failed("/p/bad.jpg")])
    w = ItemWrite("/p/c.jpg", None, "image", 5, 1, "h", "ok")
    with pytest.raises(NotFoundError):
        cat.copy_item(bad, w)
    with pytest.raises(NotFoundError):
        cat.copy_item(12345, w)
    with pytest.raises(UsageError):
        cat.copy_item(ok, ItemWrite("/p/c.mp4", None, "video", 5, 1, "h", "ok"))
    with pytest.raises(UsageError):
        cat.copy_item(
            ok, ItemWrite("/p/c.jpg", None, "image", 5, 1, "h", "ok", vectors=unit(rng, 1))
        )
    assert cat.item_by_path("/p/c.jpg") is None and cat.item_by_path("/p/c.mp4") is None


# -- delete, generation ------------------------------------------------------------------------
def test_shot_cuts_are_stored_replaced_copied_and_deleted_with_the_video(cat, rng):
    import dataclasses

    ts = np.arange(8) + 0.5
    w = dataclasses.replace(video("/v/a.mp4", unit(rng, 8), ts), cuts=np.array([5.1, 2.05]))
    (vid,) = cat.write_items([w])
    (img,) = cat.write_items([image("/p/x.jpg", unit(rng, 1))])
    got = cat.cuts([vid, img, 999])
    assert list(got) == [vid]
    np.testing.assert_array_equal(got[vid], [2.05, 5.1])  # sorted, exact float64
    one_shot = dataclasses.replace(w, cuts=np.zeros(0))
    cat.write_items([one_shot])  # re-indexed: replaced (a video of one shot: no cuts)
    assert cat.cuts([vid])[vid].size == 0
    cat.write_items([dataclasses.replace(w, cuts=None)])  # re-indexed without detection
    assert cat.cuts([vid]) == {}
    cat.write_items([w])
    moved = dataclasses.replace(w, path="/v/moved.mp4", vectors=None, timestamps=None, cuts=None)
    new_id = cat.copy_item(vid, moved)  # a moved file keeps its shots with its vectors
    np.testing.assert_array_equal(cat.cuts([new_id])[new_id], [2.05, 5.1])
    cat.delete_items([vid, new_id])
    assert cat.cuts([vid, new_id]) == {}


def test_shot_cuts_only_for_indexed_videos(cat, rng):
    import dataclasses

    with pytest.raises(UsageError, match="only an indexed video"):
        cat.write_items([dataclasses.replace(image("/p/x.jpg", unit(rng, 1)), cuts=[1.0])])
    bad = dataclasses.replace(video("/v/a.mp4", unit(rng, 2), np.array([0.5, 1.5])), cuts=[-1.0])
    with pytest.raises(UsageError, match="finite times"):
        cat.write_items([bad])


def test_delete_cascades_to_vectors_and_tags(cat, rng):
    ids = cat.write_items(
        [video("/v/a.mp4", unit(rng, 3), np.arange(3.0)), image("/p/b.jpg", unit(rng, 1))]
    )
    cat.set_tags({ids[0]: {"Beach": 0.9}}, source="zeroshot")
    assert cat.tags([ids[0]]) == {ids[0]: {"beach": pytest.approx(0.9)}}
    assert cat.delete_items([ids[0], ids[0], 4242]) == 1
    assert cat.item(ids[0]) is None
    table = cat.load_vectors()
    assert set(table.item_ids.tolist()) == {ids[1]}
    assert cat.tags([ids[0]]) == {}
    conn = sqlite3.connect(cat.db_path)
    assert (
        conn.execute("SELECT count(*) FROM vectors WHERE item_id = ?", (ids[0],)).fetchone()[0] == 0
    )
    assert conn.execute("SELECT count(*) FROM tags").fetchone()[0] == 0


def test_generation_bumps_once_per_committed_change_only(cat, rng):
    g0 = cat.generation()
    cat.write_items([])
    cat.delete_items([])
    cat.delete_items([9999])
    cat.add_root("/r")
    cat.bind_model(BINDING)
    assert cat.generation() == g0  # nothing changed
    ids = cat.write_items([image(f"/p/{i}.jpg", unit(rng, 1)) for i in range(5)])
    assert cat.generation() == g0 + 1  # one batch, one bump
    cat.copy_item(ids[0], ItemWrite("/p/copy.jpg", None, "image", 100, 1, "h", "ok"))
    assert cat.generation() == g0 + 2
    cat.delete_items(ids[:2])
    assert cat.generation() == g0 + 3
    with pytest.raises(UsageError):
        cat.write_items([image("/p/z.jpg", unit(rng, 1), root=777)])  # rolled back
    assert cat.generation() == g0 + 3
    assert cat.load_vectors().generation == g0 + 3


# -- vector source API -------------------------------------------------------------------------
def test_vector_ids_fetch_and_items_for_vectors(cat, rng):
    v = unit(rng, 6)
    ids = cat.write_items(
        [image(f"/p/{i}.jpg", v[i]) for i in range(3)]
        + [video("/v/a.mp4", v[3:], np.array([0.0, 1, 2]))]
    )
    vid = cat.vector_ids()
    assert vid.dtype == np.int64 and len(vid) == 7 and np.all(np.diff(vid) > 0)
    table = cat.load_vectors()
    np.testing.assert_array_equal(table.ids, vid)
    assert table.vectors.dtype == np.float16 and table.vectors.shape == (7, DIM)
    # fetch in an arbitrary order, with a duplicate
    pick = vid[[5, 0, 3, 0]]
    got = cat.fetch_vectors(pick)
    assert got.dtype == np.float16 and got.shape == (4, DIM)
    row = {int(i): k for k, i in enumerate(table.ids)}
    np.testing.assert_array_equal(got, table.vectors[[row[int(i)] for i in pick]])
    assert cat.fetch_vectors(np.array([], dtype=np.int64)).shape == (0, DIM)
    with pytest.raises(NotFoundError, match="not in the catalog"):
        cat.fetch_vectors(np.array([vid[0], 10**9]))
    items, ts = cat.items_for_vectors(np.array([vid[4], 10**9, vid[0]]))
    assert items[1] == -1 and np.isnan(ts[1])
    assert items[2] == ids[0] and np.isnan(ts[2])
    assert items[0] == ids[3] and ts[0] in (0.0, 1.0, 2.0)
    np.testing.assert_array_equal(table.item_ids, cat.items_for_vectors(table.ids)[0])


def test_fetch_vectors_dense_and_sparse_id_runs(cat, rng):
    """Many ids cross both read strategies (range scan for dense runs, IN lists otherwise)."""
    n = 3000
    v = unit(rng, n)
    for s in range(0, n, 1000):
        cat.write_items([image(f"/p/{i}.jpg", v[i]) for i in range(s, s + 1000)])
    table = cat.load_vectors()
    sparse = table.ids[::7]
    dense = table.ids[100:2600]
    shuffled = rng.permutation(table.ids)
    for ids in (sparse, dense, shuffled):
        pos = np.searchsorted(table.ids, ids)
        np.testing.assert_array_equal(cat.fetch_vectors(ids), table.vectors[pos])
        np.testing.assert_array_equal(cat.items_for_vectors(ids)[0], table.item_ids[pos])


def test_load_vectors_100k_rows(tmp_path):
    """A 100k-row catalog (1000 videos x 99 frames + their pooled vectors) loads
    completely, in id order, with the right timestamps (timed in the benchmark, not here)."""
    n_items, n_frames, dim = 1000, 99, 32
    rng = np.random.default_rng(1)
    v = rng.standard_normal((n_items, n_frames + 1, dim)).astype(np.float16)  # (I, F+1, D)
    ts = np.append(np.arange(n_frames, dtype=np.float64), np.nan)  # frames, then meanP
    with Catalog.open(tmp_path / "lib") as c:
        c.bind_model(ModelBinding("t", "fp", dim))
        for s in range(0, n_items, 250):
            c.write_items(
                [
                    ItemWrite(
                        f"/v/{i:04d}.mp4",
                        None,
                        "video",
                        i,
                        i,
                        None,
                        "ok",
                        vectors=v[i],
                        timestamps=ts,
                    )
                    for i in range(s, s + 250)
                ]
            )
        table = c.load_vectors()
    assert len(table) == n_items * (n_frames + 1) == 100_000
    assert np.all(np.diff(table.ids) > 0)
    order = np.lexsort((np.nan_to_num(table.timestamps, nan=-1.0), table.item_ids))
    item_level_first = np.concatenate([v[:, -1:], v[:, :-1]], axis=1).reshape(-1, dim)
    np.testing.assert_array_equal(table.vectors[order], item_level_first)
    assert np.isnan(table.timestamps).sum() == n_items


# -- tags, stats, failures ---------------------------------------------------------------------
def test_stats_and_failures(cat, rng):
    root = cat.add_root("/media")
    cat.write_items(
        [
            image("/media/a.jpg", unit(rng, 1), root=root),
            video("/media/v.mp4", unit(rng, 4), np.arange(4.0), root=root),
            failed("/media/z.jpg", "truncated"),
            failed("/media/b.jpg", "empty file"),
        ]
    )
    s = cat.stats()
    assert s["items"] == {
        "total": 4,
        "ok": 2,
        "failed": 2,
        "by_kind": {"image": {"ok": 1, "failed": 2}, "video": {"ok": 1, "failed": 0}},
    }
    assert s["vectors"] == 6 and s["frames"] == 4
    assert s["roots"] == ["/media"]
    assert s["model"] == {"spec": BINDING.spec, "fingerprint": BINDING.fingerprint, "dim": DIM}
    assert s["generation"] == cat.generation() and s["db_bytes"] > 0
    fails = cat.failures()
    assert [f.path for f in fails] == ["/media/b.jpg", "/media/z.jpg"]
    assert [f.error for f in fails] == ["empty file", "truncated"]
    assert len(cat.failures(limit=1)) == 1


def test_set_tags_replaces_per_source(cat, rng):
    (a,) = cat.write_items([image("/p/a.jpg", unit(rng, 1))])
    cat.set_tags({a: {"dog": 0.8, "beach": 0.3}}, source="zs")
    cat.set_tags({a: {"dog": 0.5}}, source="user")
    cat.set_tags({a: {"cat": 0.7}}, source="zs")  # replaces zs tags
    assert cat.tags([a]) == {a: {"dog": 0.5, "cat": pytest.approx(0.7)}}
    assert len(cat.vector_ids_where(ItemFilter(tags=("cat",)))) == 1
    assert len(cat.vector_ids_where(ItemFilter(tags=("beach",)))) == 0


# -- read-only and threads -----------------------------------------------------------------------
def test_readonly_catalog_reads_but_refuses_writes(tmp_path, rng):
    with Catalog.open(tmp_path / "lib") as c:
        c.bind_model(BINDING)
        c.write_items([image("/p/a.jpg", unit(rng, 1))])
    with Catalog.open(tmp_path / "lib", readonly=True) as ro:
        assert ro.stats()["items"]["ok"] == 1
        assert len(ro.load_vectors()) == 1
        with pytest.raises(LibraryError, match="read-only"):
            ro.write_items([image("/p/b.jpg", unit(rng, 1))])
        with pytest.raises(LibraryError, match="read-only"):
            ro.add_root("/x")


def test_catalog_shared_by_threads(cat, rng):
    """The server shares one Catalog between request threads: calls must not interleave
    inside a transaction."""
    v = unit(rng, 400)
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for b in range(5):
                cat.write_items(
                    [image(f"/t{k}/{b}/{i}.jpg", v[(k * 50 + b * 10 + i) % 400]) for i in range(10)]
                )
        except BaseException as e:
            errors.append(e)

    def reader() -> None:
        try:
            for _ in range(20):
                t = cat.load_vectors()
                assert len(t) == len(np.unique(t.item_ids))
                cat.stats()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cat.stats()["items"]["ok"] == 200 and cat.generation() == 20


def test_readonly_catalog_checks_its_model_without_writing(tmp_path):
    Catalog.open(tmp_path / "unbound").close()
    with Catalog.open(tmp_path / "lib") as c:
        c.bind_model(BINDING)
    with Catalog.open(tmp_path / "lib", readonly=True) as ro:
        ro.bind_model(BINDING)  # same model: fine
        with pytest.raises(ModelMismatchError):
            ro.bind_model(ModelBinding("other", "fp-other", DIM))
    with (
        Catalog.open(tmp_path / "unbound", readonly=True) as ro,
        pytest.raises(LibraryError, match="read-only"),
    ):
        ro.bind_model(BINDING)


def test_catalog_id_is_stable_and_differs_for_a_rebuilt_catalog(tmp_path):
    """A cache stamped (catalog_id, generation) must not mistake a rebuilt catalog —
    which starts again at generation 0 and vector id 1 — for the one it was built from."""
    lib = tmp_path / "lib"
    with Catalog.open(lib) as c:
        first = c.catalog_id
        assert c.stats()["catalog_id"] == first
    with Catalog.open(lib, readonly=True) as c:
        assert c.catalog_id == first
    (lib / CATALOG_FILE).unlink()
    with Catalog.open(lib) as c:
        assert c.catalog_id != first and len(c.catalog_id) == 32


def test_sqlite_errors_become_actionable_library_errors(tmp_path):
    from clipsearch.errors import DiskFullError
    from clipsearch.store.connection import translate

    db = tmp_path / CATALOG_FILE
    locked = translate(sqlite3.OperationalError("database is locked"), db, action="writing a batch")
    assert isinstance(locked, LibraryError) and "another `clipsearch index`" in str(locked)
    full = translate(
        sqlite3.OperationalError("database or disk is full"), db, action="writing a batch"
    )
    assert isinstance(full, DiskFullError) and "Free some disk space" in str(full)
    bad = translate(
        sqlite3.DatabaseError("database disk image is malformed"), db, action="loading vectors"
    )
    assert isinstance(bad, LibraryError) and str(db) in str(bad) and "backup" in str(bad)


def test_vector_ids_fall_back_past_sqlite_string_limit(cat, rng):
    """Huge id lists exceed SQLite's string limit for the fast group_concat path; the
    row-by-row fallback must return the same ids."""
    cat.write_items([image(f"/p/{i}.jpg", unit(rng, 1)) for i in range(300)])
    fast = cat.vector_ids()
    fast_where = cat.vector_ids_where(ItemFilter.parse(["path:/p/1*"]))
    cat._conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 100)  # ~25 ids' worth of text
    np.testing.assert_array_equal(cat.vector_ids(), fast)
    np.testing.assert_array_equal(
        cat.vector_ids_where(ItemFilter.parse(["path:/p/1*"])), fast_where
    )
    assert len(fast) == 300 and len(fast_where) == 111


def test_item_records_from_rows_equal_records_built_field_by_field():
    """Bulk reads build records without the frozen __init__: the same value, hash and
    fields, in the column order every SELECT uses."""
    import dataclasses

    from clipsearch.store.records import ITEM_COLUMNS, ItemRecord

    names = [f.name for f in dataclasses.fields(ItemRecord)]
    assert ", ".join(names) == ITEM_COLUMNS
    row = (7, "/p/a.jpg", 1, "image", 10, 123, "h", "ok", None, 640, 480, None, None, 1.5)
    fast, slow = ItemRecord.from_row(row), ItemRecord(*row)
    assert fast == slow and hash(fast) == hash(slow)
    assert dataclasses.astuple(fast) == row and dataclasses.replace(fast, size=11).size == 11
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.size = 1  # type: ignore[misc]
    with pytest.raises(ValueError):
        ItemRecord.from_row(row[:-1])
