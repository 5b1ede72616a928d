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

from clipsearch.ingest import BatchWritten
from clipsearch.ingest.ray_engine import RayEngine, RaySettings
from clipsearch.library import Library
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


def assert_same_catalog(a: Library, b: Library) -> None:
    ra, rb = catalog_rows(a), catalog_rows(b)
    assert sorted(ra) == sorted(rb)
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
    failed = {Path(f["path"]).name: f["error"] for f in remote.status().failures}
    assert list(failed) == ["broken.jpg"]

    # Same answers from both libraries.
    for query in ("red", "a blue thing", "green"):
        hits_l = [(h.path, round(h.score, 4)) for h in local.search(query, k=5)]
        hits_r = [(h.path, round(h.score, 4)) for h in remote.search(query, k=5)]
        assert hits_l == hits_r

    # Nothing left to do: no file is sent to the cluster.
    assert remote.index([media], ray=settings).added == 0
    local.close()
    remote.close()
