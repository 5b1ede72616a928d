"""`reindex --ann milvus`: Milvus Lite (a folder in the library, real pymilvus + milvus-lite,
nothing mocked) answers like exact search, filters inside Milvus, follows the catalog
incrementally, rebuilds when its copy cannot be trusted, and reports its recall."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from clipsearch.library import Library
from clipsearch.media.capture_time import CaptureTime
from clipsearch.store.filters import ItemFilter
from tests.fakes import COLOURS, ColourEncoder, make_image
from tests.videogen import make_video

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

DAY = 86_400


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    for i in range(40):
        colour = COLOURS[i % len(COLOURS)]
        sub = "a" if i % 3 else "b_%"  # LIKE's wildcards in a folder name must stay literal
        p = make_image(root / sub / f"{i:02d}-{colour}.jpg", colour, size=(64 + i, 48))
        t = 1_600_000_000 + i * 30 * DAY
        os.utime(p, (t, t))
    (root / "v").mkdir()
    make_video(root / "v" / "clip.mp4", (("red", 1.0), ("blue", 1.0)), fps=10)
    return root


@pytest.fixture
def lib(tmp_path: Path, media: Path):
    library = Library(tmp_path / "lib", encoder=ColourEncoder())
    library.index([media])
    library.reindex(backend="milvus:HNSW")  # a server's default; Milvus Lite's is FLAT
    yield library
    library.close()


def reference(lib: Library, tmp_path: Path) -> Library:
    """A copy of the catalog searched exactly (no Milvus): the answer to compare with."""
    copy = tmp_path / "reference"
    copy.mkdir()
    src = sqlite3.connect(lib.path / "catalog.sqlite")
    dst = sqlite3.connect(copy / "catalog.sqlite")
    src.backup(dst)
    src.close()
    dst.close()
    ref = Library(copy, encoder=ColourEncoder())
    ref.reindex(backend="exact")
    return ref


def hits(lib: Library, query: str | Path, **kw) -> list[tuple[str, float]]:
    """Top 8 for a text or (a Path) an example image. Image queries: the colour encoder
    gives texts exact ties (0.0) against every image of another colour, and an ANN may
    return any of the tied rows; example images score every item differently."""
    if isinstance(query, Path):
        found = lib.search(image=query, k=8, **kw)
    else:
        found = lib.search(query, k=8, **kw)
    return [(h.path, round(h.score, 5)) for h in found]


def stamp(lib: Library) -> dict:
    return json.loads((lib.path / "ann" / "milvus.json").read_text())


def test_milvus_index_reports_backend_params_and_measured_recall(lib):
    info = lib.index_info()
    assert info.backend == "milvus" and info.factory == "HNSW"
    assert info.params["M"] == 16 and info.params["ef"] >= 16
    assert info.params["uri"] == str(lib.path / "milvus.db")
    assert info.vectors == len(lib.catalog.vector_ids())
    assert info.recall_queries > 0 and info.recall_at_10 >= 0.95
    assert (lib.path / "milvus.db").exists()


def test_answers_like_exact_search_with_filters(lib, media, tmp_path):
    lib.catalog.set_tags(
        {
            lib.catalog.item_by_path(str(p)).id: {"beach": 0.9}
            for p in sorted(media.glob("a/1*.jpg"))
        },
        source="test",
    )
    ref = reference(lib, tmp_path)
    clauses = [
        [],
        ["kind:video"],
        [f"path:{media}/a/*"],
        [f"path:{media}/b_%"],  # a folder prefix, wildcards literal
        ["path:*/[0-1]?-*.jpg"],  # a character class: Milvus cannot say it, ids are used
        ["after:2021-06-01", "before:2022-06-01"],
        ["size>1000", "size<=1600"],
        [f"root:{media}"],
        ["tag:beach"],
        ["tag:beach", "kind:image", "after:2020"],
        ["after:2030"],  # nothing
    ]
    examples = [sorted(media.glob("a/*.jpg"))[i] for i in (0, 7)] + [
        media / "b_%" / "03-yellow.jpg"
    ]
    for where in clauses:
        for query in examples:
            got = hits(lib, query, where=where)
            want = hits(ref, query, where=where)
            assert got == want, (where, query)
            allowed = set(ref.catalog.vector_ids_where(ItemFilter.parse(where)).tolist())
            assert bool(got) == bool(allowed), where
    # Filters keeping many rows search the graph inside Milvus (here forced: at this size
    # every filter is selective enough to be answered exactly from the catalog's rows).
    index = lib.vector_index()
    index.exact_filter_rows = 0
    wide = (["kind:image"], [f"path:{media}/a/*"], [f"root:{media}"], ["size>1000"])
    beyond_int64 = (
        ["after:1000", "size<99999999999999999999999999"],
        ["after:2263"],
        ["size>=9223372036854775808"],
        ["before:1000"],
    )
    for where in wide + beyond_int64:
        for query in examples:
            assert hits(lib, query, where=where) == hits(ref, query, where=where), where
    ref.close()


def test_capture_time_filters_answer_like_exact_search(lib, media, tmp_path):
    """taken> / taken< select by the catalog's capture times, not the collection's mtimes:
    here every image is dated in the reverse order of its mtime, so a filter translated
    to mtime, or dropped, would give other answers."""
    images = sorted(media.glob("*/*.jpg"), key=lambda p: p.name)
    start = 1_600_000_000 * 10**9
    lib.catalog.set_capture_times(
        {
            lib.catalog.item_by_path(str(p)).id: CaptureTime(
                start + (len(images) - i) * 30 * DAY * 10**9, None, "exif"
            )
            for i, p in enumerate(images)
        }
    )
    ref = reference(lib, tmp_path)
    examples = [images[0], images[9], images[25]]
    clauses = (
        ["taken>2022-06"],
        ["taken>=2021", "taken<2022", "kind:image"],
        ["taken<2021-03", f"path:{media}/a/*"],
        ["taken:2022"],
        ["taken>2030"],
    )
    index = lib.vector_index()
    for exact_filter_rows in (index.exact_filter_rows, 0):  # catalog rows, then Milvus graph
        index.exact_filter_rows = exact_filter_rows
        for where in clauses:
            allowed = set(ref.catalog.vector_ids_where(ItemFilter.parse(where)).tolist())
            for query in examples:
                got = hits(lib, query, where=where)
                assert got == hits(ref, query, where=where), where
                assert bool(got) == bool(allowed), where
    # The capture times decide, not the mtimes: the newest by capture time are the oldest
    # files, which an mtime bound would exclude.
    recent = {p for p, _ in hits(lib, images[0], where=["taken>2022-06"])}
    assert recent and recent == {p for p, _ in hits(ref, images[0], where=["taken>2022-06"])}
    assert str(images[0]) in recent
    assert str(images[0]) not in {p for p, _ in hits(lib, images[0], where=["after:2022-06"])}
    ref.close()


def test_follows_the_catalog_incrementally(lib, media, tmp_path):
    before = stamp(lib)
    make_image(media / "a" / "new-cyan.jpg", "cyan", size=(200, 100))
    gone = next(iter(sorted((media / "a").glob("0*.jpg"))))
    gone.unlink()
    lib.index([media])  # refreshes the collection as part of indexing
    after = stamp(lib)
    assert not after["dirty"] and after["generation"] > before["generation"]
    assert after["recall_generation"] == before["recall_generation"]  # updated, not rebuilt
    assert lib.vector_index().count() == len(lib.catalog.vector_ids())
    paths = [h.path for h in lib.search("cyan", k=50)]
    assert str(media / "a" / "new-cyan.jpg") in paths and str(gone) not in paths
    # Tags written after indexing reach Milvus's copy without re-encoding anything.
    item = lib.catalog.item_by_path(str(media / "a" / "new-cyan.jpg")).id
    lib.catalog.set_tags({item: {"sea": 1.0}}, source="test")
    assert [h.path for h in lib.search("cyan", where=["tag:sea"])] == [
        str(media / "a" / "new-cyan.jpg")
    ]
    lib.catalog.set_tags({item: {}}, source="test")
    assert lib.search("cyan", where=["tag:sea"]) == []


def test_a_collection_that_cannot_be_trusted_is_rebuilt(lib, tmp_path, media):
    example = sorted(media.glob("a/*.jpg"))[5]
    with reference(lib, tmp_path) as ref:
        want = hits(ref, example)
    index = lib.vector_index()
    index.client.drop_collection(index.state.collection)  # lost behind clipsearch's back
    lib.close()
    with Library(lib.path, encoder=ColourEncoder()) as again:
        assert hits(again, example) == want
        assert again.vector_index().count() == len(again.catalog.vector_ids())
    # An update cut short leaves the stamp dirty: the next use rebuilds.
    data = json.loads((lib.path / "ann" / "milvus.json").read_text())
    data["dirty"] = True
    (lib.path / "ann" / "milvus.json").write_text(json.dumps(data))
    with Library(lib.path, encoder=ColourEncoder()) as again:
        again.search("red", k=1)
        assert not stamp(again)["dirty"]
        assert stamp(again)["recall_generation"] == again.catalog.generation()


def test_a_damaged_id_list_leads_to_a_rebuild_not_a_wrong_update(lib, media):
    ids_file = lib.path / "ann" / "milvus-ids.npy"
    data = bytearray(ids_file.read_bytes())
    data[-3] ^= 0x40  # one flipped bit in the last stored id: the size stays the same
    ids_file.write_bytes(bytes(data))
    make_image(media / "a" / "late-cyan.jpg", "cyan", size=(90, 70))
    lib.index([media])
    after = stamp(lib)
    assert after["recall_generation"] == lib.catalog.generation()  # rebuilt, not patched
    assert after["ids_digest"].startswith("xxh3_128:")
    assert lib.vector_index().count() == len(lib.catalog.vector_ids())
    paths = [h.path for h in lib.search("cyan", k=50)]
    assert str(media / "a" / "late-cyan.jpg") in paths


def test_other_index_types_and_back_to_faiss(lib, media):
    example = sorted(media.glob("a/*.jpg"))[3]
    want = hits(lib, example, exact=True)  # from the catalog's rows, whatever the backend
    info = lib.reindex(backend="milvus:IVF_FLAT")
    assert info.factory == "IVF_FLAT" and "nprobe" in info.params and info.recall_at_10 >= 0.95
    assert hits(lib, example) == want
    info = lib.reindex(backend="auto")
    assert info.backend == "exact"
    assert hits(lib, example) == want


def test_cli_reindex_milvus_and_index_info(tmp_path, media, capsys):
    from clipsearch.cli.app import main

    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        lib.index([media])
    path = str(tmp_path / "lib")
    assert main(["reindex", "--library", path, "--ann", "milvus", "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert main(["index-info", "--library", path, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    # index-info also names the image encoder indexing uses; the index part is what reindex built
    assert info.pop("runtime")["runtime"] == "auto"
    assert info == built
    assert info["backend"] == "milvus" and info["factory"] == "FLAT"  # Milvus Lite's default
    assert info["params"]["uri"] == str(tmp_path / "lib" / "milvus.db")
    assert info["recall_at_10"] >= 0.95 and info["recall_queries"] > 0
    assert json.loads((tmp_path / "lib" / "ann.json").read_text())["backend"] == "milvus"
    # An unreachable server is an engine error (exit 1) and the old choice stays.
    code = main(
        ["reindex", "--library", path, "--ann", "milvus", "--milvus-uri", "http://127.0.0.1:9"]
    )
    assert code == 1
    assert "Milvus" in capsys.readouterr().err
    assert json.loads((tmp_path / "lib" / "ann.json").read_text()).get("milvus_uri") is None


def test_path_globs_select_in_milvus_what_they_select_in_sqlite(tmp_path):
    """The LIKE translation means what the SQL GLOB one means, on names full of the
    characters either language treats specially."""
    import numpy as np

    from clipsearch.index.milvus_backend import MilvusIndex, MilvusState, connect
    from clipsearch.store.filter_milvus import path_expression
    from clipsearch.store.filter_sql import path_condition

    paths = [
        "/a/x.jpg",
        "/a/b/y.png",
        "/a%b/z.jpg",
        "/a_b/q.jpg",
        "/axb/q.jpg",
        '/a"q/\\w.jpg',
        "/A/x.jpg",
        "/a/[x].jpg",
        "/a*b/c.jpg",
        "/a",
    ]
    patterns = [
        "/a/*",
        "/a",
        "/a/",
        "/a%b",
        "/a_b/*",
        "/a?b/*",
        '/a"q/*',
        '/a"q/\\\\w.jpg',
        "*.jpg",
        "/a/?.jpg",
        "/a/\\[x].jpg",
        "/a\\*b/*",
        "/",
        "*",
    ]
    uri = str(tmp_path / "m.db")
    index = MilvusIndex.create(connect(uri), MilvusState(uri=uri, collection="paths", dim=2))
    n = len(paths)
    meta = {
        "item_id": list(range(n)),
        "t": [-1.0] * n,
        "kind": ["image"] * n,
        "path": paths,
        "size": [1] * n,
        "mtime_ns": [0] * n,
        "root": [""] * n,
        "tags": [[] for _ in range(n)],
    }
    index.insert(np.arange(n), np.ones((n, 2), np.float32) / np.sqrt(2), meta)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE items (id INTEGER, path TEXT)")
    db.executemany("INSERT INTO items VALUES (?, ?)", list(enumerate(paths)))
    for pattern in patterns:
        sql, args = path_condition(pattern)
        want = [i for (i,) in db.execute(f"SELECT id FROM items i WHERE {sql} ORDER BY id", args)]
        expr = path_expression(pattern)
        assert expr is not None, pattern
        assert index.ids_matching(expr).tolist() == want, (pattern, expr)
    index.close()
    from milvus_lite.server_manager import server_manager_instance

    assert uri not in server_manager_instance._servers  # the folder is free for others
