"""`export` / `import`: clip-retrieval's layout and one Parquet table, round trips that
lose nothing, and foreign clip-retrieval output read into a library of the same model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from clipsearch.errors import LibraryError, ModelMismatchError, UsageError
from clipsearch.library import Library
from clipsearch.media.capture_time import CaptureTime
from clipsearch.store.exporting import export_catalog
from clipsearch.store.writer_lock import WriterLock
from tests.fakes import COLOURS, ColourEncoder, make_image
from tests.videogen import make_video

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


class OtherEncoder(ColourEncoder):
    fingerprint = "fake-colour-other-v1"


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    for i, colour in enumerate(COLOURS[:6]):
        make_image(root / f"{i}-{colour}.jpg", colour)
    make_image(root / "deep" / "wide.png", "pink", size=(90, 30))
    (root / "broken.jpg").write_bytes(b"not an image")
    make_video(root / "clip.mp4", (("red", 1.0), ("blue", 1.0)), fps=10)
    return root


@pytest.fixture
def source(tmp_path: Path, media: Path) -> Library:
    lib = Library(tmp_path / "source", encoder=ColourEncoder())
    lib.index([media])
    # One item dated by its metadata, with the offset where it was taken (the others by
    # their mtime): an export carries both kinds.
    first = lib.catalog.load_vectors().item_ids[0]
    lib.catalog.set_capture_times({int(first): CaptureTime(1_500_000_000 * 10**9, 120, "exif")})
    yield lib
    lib.close()


def snapshot(lib: Library) -> dict[str, tuple]:
    """path -> (item metadata, root path, timestamps, fp16 vector bytes, capture time) of
    every ok item."""
    table = lib.catalog.load_vectors()
    records = lib.catalog.items(table.item_ids.tolist())
    roots = dict(lib.catalog.roots())
    out: dict[str, tuple] = {}
    for item in dict.fromkeys(table.item_ids.tolist()):
        rows = table.item_ids == item
        r = records[item]
        meta = (r.kind, r.size, r.mtime_ns, r.width, r.height, r.duration, r.content_hash)
        ts = table.timestamps[rows]
        taken = lib.catalog.capture_times([item]).get(item)
        out[r.path] = (
            meta,
            roots.get(r.root_id),
            ts.tobytes(),
            table.vectors[rows].tobytes(),
            taken,
        )
    return out


def test_clip_retrieval_layout_is_what_its_back_end_and_autofaiss_read(source, tmp_path):
    out = tmp_path / "export"
    report = source.export(out)
    vectors = len(source.catalog.vector_ids())
    assert report.vectors == vectors and report.items == 8  # the broken file has no vectors
    emb = np.load(out / "img_emb" / "img_emb_0.npy")
    assert emb.dtype == np.float16 and emb.shape == (vectors, 32)
    np.testing.assert_allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1, atol=2e-3)
    # clip-retrieval's back end: every metadata/*.parquet in name order, row i = embedding i.
    meta = pq.read_table(out / "metadata" / "metadata_0.parquet").to_pylist()
    assert len(meta) == vectors
    assert {"image_path", "caption"} <= set(meta[0])
    # Each row describes its own vector: the catalog's vector for that path (and time).
    by_path = {r.path: r.id for r in (source.catalog.item_by_path(m["image_path"]) for m in meta)}
    for i, m in enumerate(meta):
        item = by_path[m["image_path"]]
        if m["t"] is None:
            want = source.catalog.item_vectors([item])[item]
        else:
            ts, fv = source.catalog.frames([item])[item]
            want = fv[int(np.argmin(np.abs(ts - m["t"])))]
        np.testing.assert_allclose(emb[i].astype(np.float32), want, atol=1e-3)
    video_rows = [m for m in meta if m["kind"] == "video"]
    assert video_rows[0]["t"] is None and all(m["t"] is not None for m in video_rows[1:])
    assert [m["t"] for m in video_rows[1:]] == sorted(m["t"] for m in video_rows[1:])
    # autofaiss builds a FAISS index over img_emb/*.npy: a flat IP index finds row i first.
    import faiss

    index = faiss.IndexFlatIP(32)
    index.add(emb.astype(np.float32))
    _, found = index.search(emb[:5].astype(np.float32), 1)
    assert found[:, 0].tolist() == list(range(5))


def test_round_trip_through_clip_retrieval_layout_loses_nothing(source, tmp_path):
    source.export(tmp_path / "export")
    with Library(tmp_path / "copy") as copy:  # the export records its model: none needed
        report = copy.import_embeddings(tmp_path / "export")
        assert report.items == 8 and report.skipped == () and report.normalised == 0
        assert copy.catalog.model_binding() == source.catalog.model_binding()
        assert snapshot(copy) == snapshot(source)
    with Library(tmp_path / "copy", encoder=ColourEncoder()) as copy:
        for query in ("red", "blue", "pink"):
            assert [(h.path, h.score) for h in copy.search(query, k=4)] == [
                (h.path, h.score) for h in source.search(query, k=4)
            ]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip_through_one_parquet_table_loses_nothing(source, tmp_path, dtype):
    out = tmp_path / "all.parquet"
    source.export(out, fmt="parquet", dtype=dtype)
    table = pq.read_table(out)
    assert table.schema.field("embedding").type.list_size == 32
    assert str(table.schema.field("embedding").type.value_type) == (
        "halffloat" if dtype == "float16" else "float"
    )
    with Library(tmp_path / "copy") as copy:
        copy.import_embeddings(out)
        assert snapshot(copy) == snapshot(source)


def test_many_parts_are_numbered_like_clip_retrieval_and_read_back_in_order(source, tmp_path):
    out = tmp_path / "parts"
    n = len(source.catalog.vector_ids())
    report = export_catalog(source.catalog, out, rows_per_file=4)
    parts = math.ceil(n / 4)
    width = int(math.log10(parts)) + 1  # clip-retrieval's zfill width
    names = sorted(p.name for p in (out / "img_emb").iterdir())
    assert names == [f"img_emb_{str(i).zfill(width)}.npy" for i in range(parts)]
    assert len(report.files) == 2 * parts + 1
    with Library(tmp_path / "copy") as copy:
        copy.import_embeddings(out)
        assert snapshot(copy) == snapshot(source)


def test_items_only_export_has_one_row_per_item(source, tmp_path):
    report = source.export(tmp_path / "items", items_only=True)
    meta = pq.read_table(tmp_path / "items" / "metadata" / "metadata_0.parquet").to_pylist()
    assert report.vectors == len(meta) == 8
    assert all(m["t"] is None for m in meta)


def test_export_never_overwrites(source, tmp_path):
    out = tmp_path / "export"
    (out / "img_emb").mkdir(parents=True)
    (out / "img_emb" / "mine.npy").write_bytes(b"keep me")
    with pytest.raises(UsageError, match="already holds files"):
        source.export(out)
    assert (out / "img_emb" / "mine.npy").read_bytes() == b"keep me"
    target = tmp_path / "x.parquet"
    target.write_bytes(b"keep")
    with pytest.raises(UsageError, match="already exists"):
        source.export(target, fmt="parquet")
    assert target.read_bytes() == b"keep"


def foreign_export(folder: Path, images: list[Path]) -> np.ndarray:
    """What `clip-retrieval inference` writes: fp16 embeddings, image_path + caption, no
    record of the model. The vectors here are ColourEncoder's, scaled off unit length."""
    enc = ColourEncoder()
    from PIL import Image

    vecs = enc.encode_images([Image.open(p).convert("RGB") for p in images]) * 3.0
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    np.save(folder / "img_emb" / "img_emb_0.npy", vecs.astype(np.float16))
    pq.write_table(
        pa.table({"image_path": [str(p) for p in images], "caption": [p.stem for p in images]}),
        folder / "metadata" / "metadata_0.parquet",
    )
    return vecs / 3.0


def test_foreign_clip_retrieval_output_needs_its_model_named(tmp_path, media):
    images = sorted(media.glob("*.jpg"))[:4]  # includes broken.jpg: only a path to clipsearch
    images = [p for p in images if p.name != "broken.jpg"]
    foreign_export(tmp_path / "cr", images)
    with Library(tmp_path / "lib") as lib, pytest.raises(UsageError, match="--model"):
        lib.import_embeddings(tmp_path / "cr")
    with Library(tmp_path / "lib", encoder=OtherEncoder()) as lib:
        lib.index([media])  # bound to another model
    with (
        Library(tmp_path / "lib", encoder=ColourEncoder()) as lib,
        pytest.raises(ModelMismatchError),
    ):
        lib.import_embeddings(tmp_path / "cr")

    with Library(tmp_path / "fresh", encoder=ColourEncoder()) as lib:
        report = lib.import_embeddings(tmp_path / "cr")
        assert report.items == len(images) and report.normalised == len(images)
        rec = lib.catalog.item_by_path(str(images[0]))
        st = images[0].stat()
        assert (rec.kind, rec.size, rec.mtime_ns) == ("image", st.st_size, st.st_mtime_ns)
        # The files are on disk unchanged: indexing their folder encodes only the others.
        report = lib.index([media])
        assert report.unchanged == len(images)
        # Queries find the imported images like encoded ones: the same answers as a library
        # that encoded every file itself.
        with Library(tmp_path / "native", encoder=ColourEncoder()) as native:
            native.index([media])
            for image in images:
                colour = image.stem.split("-")[1]
                # (items scoring 0 tie, and ties go by item id, which differ)
                got = [(h.path, round(h.score, 3)) for h in lib.search(colour, k=4) if h.score]
                want = [(h.path, round(h.score, 3)) for h in native.search(colour, k=4) if h.score]
                assert got == want
                assert str(image) in [path for path, _ in got]


def test_embeddings_of_another_width_are_refused(tmp_path, media):
    folder = tmp_path / "cr"
    (folder / "img_emb").mkdir(parents=True)
    (folder / "metadata").mkdir()
    np.save(folder / "img_emb" / "img_emb_0.npy", np.ones((2, 16), np.float16))
    pq.write_table(
        pa.table({"image_path": ["/a.jpg", "/b.jpg"]}), folder / "metadata" / "metadata_0.parquet"
    )
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        with pytest.raises(ModelMismatchError, match="16-d"):
            lib.import_embeddings(folder)
        assert lib.catalog.model_binding() is None  # nothing was bound or written


def test_cli_export_then_import(source, tmp_path, capsys):
    from clipsearch.cli.app import main

    out = tmp_path / "export"
    assert main(["export", str(out), "--library", str(source.path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "clip-retrieval" and report["items"] == 8
    assert (out / "img_emb" / "img_emb_0.npy").exists()
    assert main(["import", str(out), "--library", str(tmp_path / "copy"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["items"] == 8 and report["skipped"] == []
    with Library(tmp_path / "copy") as copy:
        assert snapshot(copy) == snapshot(source)
    # Bad choices are usage errors (exit 2) before anything is written.
    assert (
        main(["export", str(tmp_path / "x"), "--library", str(source.path), "--format", "npy"]) == 2
    )
    assert not (tmp_path / "x").exists()


def test_import_is_refused_while_another_run_writes_the_library(source, tmp_path):
    out = tmp_path / "export"
    source.export(out)
    with Library(tmp_path / "copy", encoder=ColourEncoder()) as copy:
        with (
            WriterLock(copy.path, action="indexing"),  # as a concurrent `clipsearch index`
            pytest.raises(LibraryError, match="already indexing"),
        ):
            copy.import_embeddings(out)
        assert copy.catalog.vector_ids().size == 0  # nothing written
        copy.import_embeddings(out)
        assert snapshot(copy) == snapshot(source)
