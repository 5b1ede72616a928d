"""`index --engine ray`: a real local Ray cluster (2 CPUs) embeds, the catalog ends up as
a local run leaves it. Nothing is mocked: Ray Data runs the actor pool, each actor loads
the tiny open_clip checkpoint through `load_encoder`, decodes with PyAV/Pillow.

One Ray instance serves the module (starting one costs ~10-20 s); the CLI test starts and
stops its own in a subprocess and checks that no Ray process outlives it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsearch.ingest import BatchWritten
from clipsearch.ingest.ray_engine import RayEngine, RaySettings
from clipsearch.library import Library
from clipsearch.media import load_image
from clipsearch.media.capture_time import CaptureTime
from clipsearch.store import item_table
from tests.fakes import COLOURS, ColourEncoder, make_image
from tests.videogen import make_video

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray instance with 2 CPUs whose workers import this checkout."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    for i, colour in enumerate(COLOURS[:9]):
        make_image(root / f"{i:02d}-{colour}.jpg", colour)
    make_image(root / "sub" / "wide.png", "green", size=(96, 40))
    (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    make_video(root / "clip.mp4", (("red", 1.0), ("blue", 1.0)), fps=10)
    # One photo says when it was taken (EXIF DateTimeOriginal with its offset).
    photo = root / "01-green.jpg"
    exif = Image.Exif()
    exif.get_ifd(0x8769).update({0x9003: "2019:07:04 10:30:00", 0x9011: "+02:00"})
    with Image.open(photo) as im:
        im.convert("RGB").save(photo, format="JPEG", exif=exif)
    return root


def catalog_rows(lib: Library) -> dict[str, tuple]:
    """path -> (status, error, width, height, timestamps, fp16 vectors) of every item."""
    table = lib.catalog.load_vectors()
    records = lib.catalog.items(table.item_ids.tolist())
    vecs: dict[int, list[int]] = {}
    for row, item in enumerate(table.item_ids.tolist()):
        vecs.setdefault(item, []).append(row)
    out = {}
    st = lib.status(failures=None)
    for f in st.failures:
        out[f["path"]] = ("failed", f["error"], None, None, None, None)
    for item, rows in vecs.items():
        r = records[item]
        out[r.path] = (
            r.status,
            r.error,
            r.width,
            r.height,
            table.timestamps[rows],
            table.vectors[rows],
        )
    return out


def capture_times(lib: Library) -> dict[str, CaptureTime]:
    """path -> capture time of every ok item (all of them must have one)."""
    table = lib.catalog.load_vectors()
    ids = sorted(set(table.item_ids.tolist()))
    times = lib.catalog.capture_times(ids)
    records = lib.catalog.items(ids)
    assert sorted(times) == ids, "items indexed without a capture time"
    return {records[i].path: t for i, t in times.items()}


def shot_cuts(lib: Library) -> dict[str, list[float]]:
    """path -> shot cut times of every video whose shots are known."""
    ids = sorted(set(lib.catalog.load_vectors().item_ids.tolist()))
    records = lib.catalog.items(ids)
    return {records[i].path: c.tolist() for i, c in lib.catalog.cuts(ids).items()}


def assert_same_catalog(a: Library, b: Library) -> None:
    ra, rb = catalog_rows(a), catalog_rows(b)
    assert sorted(ra) == sorted(rb)
    assert capture_times(a) == capture_times(b)
    cuts = shot_cuts(b)
    assert cuts == shot_cuts(a)
    assert [Path(p).name for p in cuts] == ["clip.mp4"]  # found by the workers' decode
    for path, (status, error, w, h, ts, vecs) in ra.items():
        status2, error2, w2, h2, ts2, vecs2 = rb[path]
        assert (status, error, w, h) == (status2, error2, w2, h2), path
        if vecs is None:
            assert vecs2 is None
            continue
        np.testing.assert_array_equal(ts, ts2)
        v1, v2 = vecs.astype(np.float32), vecs2.astype(np.float32)
        cos = (v1 * v2).sum(1) / np.linalg.norm(v1, axis=1) / np.linalg.norm(v2, axis=1)
        assert cos.min() >= 0.999, (path, cos.min())


def test_ray_run_stores_what_a_local_run_stores_and_resumes(
    ray_cluster, media, tmp_path, tiny_checkpoint
):
    spec = str(tiny_checkpoint)
    local = Library(tmp_path / "local", model=spec, precision="fp32")
    local.index([media])
    remote = Library(tmp_path / "ray", model=spec, precision="fp32")
    settings = RaySettings(workers=2, files_per_task=3)

    # First run stopped after its first committed block: resumable, nothing lost.
    blocks: list[BatchWritten] = []

    def on_event(event) -> None:
        if isinstance(event, BatchWritten):
            blocks.append(event)

    report = remote.index(
        [media], ray=settings, on_event=on_event, should_stop=lambda: bool(blocks)
    )
    assert report.interrupted
    first = report.added
    assert 0 < first < 12
    committed = {Path(p).name for p in catalog_rows(remote)}
    assert len(committed) == first

    # Meanwhile a file appears and one disappears: the next run sends only what is missing
    # (the files of the first run are unchanged) and sweeps the deleted file if it was stored.
    make_image(media / "new-yellow.jpg", "yellow")
    (media / "00-red.jpg").unlink()
    red_was_stored = "00-red.jpg" in committed
    report = remote.index([media], ray=settings)
    assert not report.interrupted
    assert report.unchanged == first - red_was_stored
    assert report.added == 12 - first + red_was_stored
    assert report.deleted == red_was_stored
    local.index([media])
    assert_same_catalog(local, remote)
    taken = capture_times(remote)
    assert taken[str(media / "01-green.jpg")].isoformat() == "2019-07-04T10:30:00+02:00"
    assert {t.source for t in taken.values()} == {"exif", "mtime"}
    failed = {Path(f["path"]).name: f["error"] for f in remote.status().failures}
    assert list(failed) == ["broken.jpg"]

    # Same answers from both libraries.
    for query in ("red", "a blue thing", "green"):
        hits_l = [(h.path, round(h.score, 4)) for h in local.search(query, k=5)]
        hits_r = [(h.path, round(h.score, 4)) for h in remote.search(query, k=5)]
        assert hits_l == hits_r

    # Nothing left to do: no file is sent to the cluster.
    again = remote.index([media], ray=settings)
    assert again.added == 0 and again.dated == 0  # capture times came with the vectors
    local.close()
    remote.close()


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(cmd)
    return found


def test_cli_starts_its_own_ray_writes_parquet_shards_and_leaves_no_process(
    media, tmp_path, tiny_checkpoint
):
    """`clipsearch index --engine ray` in a fresh process: a local Ray instance for the run,
    results through Parquet shards that the catalog ingests, and nothing left running."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # short: Ray's socket paths
    shards = tmp_path / "shards"
    env = {
        **os.environ,
        "RAY_TMPDIR": str(ray_tmp),
        "PYTHONPATH": os.pathsep.join(
            [
                str(Path(__file__).resolve().parents[2]),
                *filter(None, [os.environ.get("PYTHONPATH")]),
            ]
        ),
    }
    env.pop("RAY_ADDRESS", None)
    argv = [
        sys.executable,
        "-m",
        "clipsearch",
        "index",
        str(media),
        "--library",
        str(tmp_path / "lib"),
        "--model",
        str(tiny_checkpoint),
        "--precision",
        "fp32",
        "--engine",
        "ray",
        "--workers",
        "2",
        "--parquet-shards",
        str(shards),
        "--json",
    ]
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads(proc.stdout)
        assert report["added"] == 12 and report["failed"] == 1 and report["frames"] > 0
        assert list(shards.glob("*.parquet")) == []  # every shard ingested, then deleted
        assert processes_mentioning(str(ray_tmp)) == []
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    with (
        Library(tmp_path / "lib", model=str(tiny_checkpoint), precision="fp32") as lib,
        Library(tmp_path / "local", model=str(tiny_checkpoint), precision="fp32") as local,
    ):
        local.index([media])
        assert_same_catalog(local, lib)


def test_shards_left_by_an_interrupted_run_are_ingested_first(media, tmp_path):
    """A crash after the workers wrote their shards but before the catalog took them: the
    next run ingests them instead of encoding those files again, and drops a shard the
    crash cut short (its files are encoded again). No cluster is needed for that part."""
    import pyarrow.parquet as pq

    from clipsearch.ingest import Indexer
    from clipsearch.ingest.encode import EncodeLoop
    from clipsearch.ingest.tasks import FileTask
    from clipsearch.media import scan

    lib = Library(tmp_path / "lib", encoder=ColourEncoder())
    root_id = lib.catalog.add_root(str(media))
    shards = tmp_path / "shards"
    shards.mkdir()
    writes: list = []
    tasks = [FileTask(m, root_id) for m in scan([media])]
    EncodeLoop(ColourEncoder()).run(tasks, writes.extend)
    pq.write_table(item_table.writes_to_table(writes), shards / "part-0.parquet")
    (shards / "part-1.parquet").write_bytes(b"PAR1 cut short")
    engine = RayEngine(ColourEncoder, ColourEncoder.fingerprint, RaySettings(shards=shards))
    report = Indexer(lib.catalog, ColourEncoder(), engine=engine).run([media])
    assert report.added == 12 and report.failed == 1  # from the shard, before the scan
    assert report.unchanged == 12  # so the scan sent nothing to a cluster
    assert list(shards.iterdir()) == []
    with Library(tmp_path / "local", encoder=ColourEncoder()) as local:
        local.index([media])
        assert_same_catalog(local, lib)
    lib.close()


def test_ray_run_reads_the_text_in_pictures_as_a_local_run(ray_cluster, tmp_path):
    """`--ocr` on Ray: workers read the text of the pictures they decode (new files) and of
    indexed ones read for their text alone; the catalog stores what a local run stores."""
    pytest.importorskip("rapidocr_onnxruntime")
    from clipsearch.ingest import IndexOptions
    from clipsearch.store.texts import squash
    from tests.textimages import write_sign

    photos = tmp_path / "photos"
    write_sign(photos / "red_pizza.jpg", "PIZZA", "red")
    write_sign(photos / "green_plain.jpg", None, "green")
    settings = RaySettings(workers=2, files_per_task=1, model=ColourEncoder)
    with Library(tmp_path / "ray", encoder=ColourEncoder()) as remote:
        first = remote.index([photos], ray=settings)
        assert (first.encoded, first.read) == (2, 0)  # no text asked for yet
        write_sign(photos / "yellow_exit.jpg", "EXIT", "yellow")
        report = remote.index([photos], options=IndexOptions(ocr=True), ray=settings)
        # One new file encoded and read, two indexed ones read without encoding them again.
        assert (report.encoded, report.unchanged, report.read) == (1, 2, 3)
        assert remote.catalog.texts.settings().ocr  # remembered, as locally
        with Library(tmp_path / "local", encoder=ColourEncoder()) as local:
            local.index([photos], options=IndexOptions(ocr=True))
            texts = {lib: stored_texts(lib) for lib in (local, remote)}
            assert texts[remote] == texts[local]
            assert squash(texts[remote]["red_pizza.jpg"][0][2]) == "pizza"
            assert squash(texts[remote]["yellow_exit.jpg"][0][2]) == "exit"
            assert texts[remote]["green_plain.jpg"] == []
            for lib in (local, remote):
                assert Path(lib.search("a sign saying exit", k=1)[0].path).name == "yellow_exit.jpg"
            assert remote.status().to_dict()["ocr"] == local.status().to_dict()["ocr"]


def stored_texts(lib: Library) -> dict[str, list[tuple]]:
    """file name -> (source, t, text) rows read in it."""
    ids = sorted(set(lib.catalog.load_vectors().item_ids.tolist()))
    records = lib.catalog.items(ids)
    return {Path(records[i].path).name: lib.catalog.texts.texts(i) for i in ids}


def _photos(folder: Path, make_image, n: int, start: int = 0) -> Path:
    for i in range(start, start + n):
        make_image(folder / f"img_{i:03d}.jpg", COLOURS[i % 9], size=(48, 40), seed=i)
    return folder


def test_ray_workers_encode_with_the_librarys_openvino_build(
    ray_cluster, tmp_path, tiny_checkpoint, tiny_encoder, make_image
):
    """A library indexing on OpenVINO (`index --runtime openvino`) does so on Ray too: the
    driver builds and gates the encoder once, the workers load that build from the
    library's runtime cache, and the vectors are a local OpenVINO run's. A worker that
    cannot reach the build encodes on torch and the report says so."""
    pytest.importorskip("openvino")
    from clipsearch.ingest import Indexer
    from clipsearch.ingest.ray_engine import LoopSettings, ModelLoader
    from clipsearch.ingest.runtime_choice import AcceleratedImages, RuntimeChoice

    media = _photos(tmp_path / "media", make_image, 60)
    spec = str(tiny_checkpoint)
    settings = RaySettings(workers=2, files_per_task=16)
    with (
        Library(tmp_path / "local", model=spec, precision="fp32", runtime="openvino") as local,
        Library(tmp_path / "ray", model=spec, precision="fp32", runtime="openvino") as remote,
    ):
        assert local.index([media]).image_encoder == "openvino fp32"
        report = remote.index([media], ray=settings)
        assert report.encoded == 60
        assert report.image_encoder == "openvino fp32", report.image_encoder_reason
        assert report.image_encoder_reason.startswith("passed the accuracy gate")
        assert not report.image_encoder_fell_back
        (build,) = remote.runtime_info()["builds"]
        assert build["gate"]["passed"] is True
        rows_l, rows_r = catalog_rows(local), catalog_rows(remote)
        assert sorted(rows_l) == sorted(rows_r)
        for path, row in rows_r.items():
            v1, v2 = row[5].astype(np.float32), rows_l[path][5].astype(np.float32)
            cos = (v1 * v2).sum(1) / np.linalg.norm(v1, axis=1) / np.linalg.norm(v2, axis=1)
            assert cos.min() >= 0.999, (path, cos.min())

        # The build where the workers cannot see it (another machine's path): they encode
        # on torch, same model and vector space, and the report says why.
        _photos(media, make_image, 3, start=60)
        elsewhere = AcceleratedImages(
            "openvino", "fp32", "fp32", "/elsewhere/model.xml", "/elsewhere/model.bin", (1, 1)
        )
        engine = RayEngine(
            ModelLoader(spec, "fp32"), tiny_encoder.fingerprint, settings, LoopSettings()
        )
        choice = RuntimeChoice(tiny_encoder, "openvino fp32", "passed", images=elsewhere)
        with engine:
            report = Indexer(
                remote.catalog, tiny_encoder, engine=engine, choose_encoder=lambda files: choice
            ).run([media])
        assert report.encoded == 3 and report.image_encoder == "torch fp32"
        assert report.image_encoder_fell_back
        assert "could not load openvino fp32" in report.image_encoder_reason
        assert "/elsewhere/model.xml is not reachable" in report.image_encoder_reason
        rows = catalog_rows(remote)
        for name in ("img_060.jpg", "img_061.jpg", "img_062.jpg"):
            path = str(media / name)
            want = tiny_encoder.encode_images([load_image(path, min_side=32).image])[0]
            got = rows[path][5][0].astype(np.float32)
            assert float(got @ want) / float(np.linalg.norm(got)) > 0.999
