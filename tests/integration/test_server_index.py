"""Indexing from the page: a background job with progress, one at a time, stoppable, and
searches that keep answering (never a 500) while it runs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from clipsearch.library import Library
from clipsearch.server import create_app
from tests.fakes import ColourEncoder, make_image

COLOURS = ["red", "green", "blue", "yellow"]
N_SECOND = 100  # more than the pipeline keeps in flight (2 x batch size), so a stop shows


class GatedEncoder(ColourEncoder):
    """Blocks image encoding until ``gate`` is set, so a test can act mid-job.
    Text encoding is never blocked (searches must keep working)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(timeout=20), "test never opened the gate"
        return super().encode_pixels(pixels)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "first", tmp_path / "second"
    for c in COLOURS:
        make_image(first / f"{c}.jpg", c)
    for i in range(N_SECOND):
        make_image(second / f"{i:03d}-{COLOURS[i % 4]}.jpg", COLOURS[i % 4], size=(32, 24))
    return first, second


def wait_for(client: TestClient, predicate, timeout: float = 20.0) -> dict:
    end = time.monotonic() + timeout
    while True:
        p = client.get("/api/index").json()
        if predicate(p):
            return p
        assert time.monotonic() < end, f"timed out; last progress: {p}"
        time.sleep(0.02)


def finished(p: dict) -> bool:
    return p["state"] in ("done", "failed", "stopped")


def test_index_a_folder_from_the_page_then_search_it(tmp_path, folders):
    first, _ = folders
    with (
        Library(tmp_path / "lib", encoder=ColourEncoder()) as lib,
        TestClient(create_app(lib), base_url="http://127.0.0.1") as c,
    ):
        assert c.get("/api/index").json()["state"] == "idle"
        r = c.post("/api/index", json={"roots": [str(first)]})
        assert r.status_code == 202
        assert r.json()["state"] == "running" and r.json()["roots"] == [str(first)]
        p = wait_for(c, finished)
        assert p["state"] == "done", p
        assert p["report"]["added"] == len(COLOURS) and p["report"]["failed"] == 0
        assert p["found"] == len(COLOURS) and p["to_encode"] == len(COLOURS)
        assert p["done"] == len(COLOURS)
        hits = c.get("/api/search", params={"q": "yellow", "k": 1}).json()["hits"]
        assert hits[0]["name"] == "yellow.jpg"
        st = c.get("/api/status").json()
        assert st["roots"] == [str(first)] and st["indexing"] is False
        # re-index the known folders: nothing changed, nothing encoded
        r = c.post("/api/index", json={})
        assert r.status_code == 202
        p = wait_for(c, finished)
        assert p["report"]["unchanged"] == len(COLOURS) and p["report"]["added"] == 0


def test_one_job_at_a_time_and_search_keeps_working(tmp_path, folders):
    first, second = folders
    enc = GatedEncoder()
    enc.gate.set()
    with Library(tmp_path / "lib", encoder=enc) as lib:
        lib.index([first])
        enc.gate.clear()
        enc.entered.clear()
        with TestClient(
            create_app(lib), base_url="http://127.0.0.1", raise_server_exceptions=False
        ) as c:
            assert c.post("/api/index", json={"roots": [str(second)]}).status_code == 202
            assert enc.entered.wait(10)
            p = c.get("/api/index").json()
            assert p["state"] == "running" and p["phase"] == "encoding"
            assert p["to_encode"] == N_SECOND
            r = c.post("/api/index", json={"roots": [str(first)]})
            assert r.status_code == 409 and r.json()["error"]["code"] == "index_running"
            assert c.get("/api/status").json()["indexing"] is True
            # searches while the job is mid-batch: all answered, none a 500
            codes = []
            for colour in COLOURS * 3:
                r = c.get("/api/search", params={"q": colour, "k": 5})
                codes.append(r.status_code)
                assert r.status_code == 200, r.text
            enc.gate.set()
            p = wait_for(c, finished)
            assert p["state"] == "done" and p["done"] == N_SECOND
            hits = c.get("/api/search", params={"q": "blue", "k": 500, "where": f"root:{second}"})
            assert len(hits.json()["hits"]) == N_SECOND


def test_concurrent_searches_from_threads_during_indexing(tmp_path, folders):
    first, second = folders
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        lib.index([first])
        with TestClient(
            create_app(lib), base_url="http://127.0.0.1", raise_server_exceptions=False
        ) as c:
            assert c.post("/api/index", json={"roots": [str(second)]}).status_code == 202
            statuses: list[int] = []
            lock = threading.Lock()

            def hammer(colour: str) -> None:
                for _ in range(10):
                    r = c.get("/api/search", params={"q": colour, "k": 3})
                    with lock:
                        statuses.append(r.status_code)

            threads = [threading.Thread(target=hammer, args=(col,)) for col in COLOURS]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            wait_for(c, finished)
    assert statuses and set(statuses) == {200}


def test_stop_a_running_job(tmp_path, folders):
    _, second = folders
    enc = GatedEncoder()
    with (
        Library(tmp_path / "lib", encoder=enc) as lib,
        TestClient(create_app(lib), base_url="http://127.0.0.1") as c,
    ):
        c.post("/api/index", json={"roots": [str(second)]})
        assert enc.entered.wait(10)
        r = c.delete("/api/index")
        assert r.status_code == 200 and r.json()["state"] == "stopping"
        enc.gate.set()
        p = wait_for(c, finished)
        assert p["state"] == "stopped", p
        assert p["report"]["interrupted"] is True
        assert 0 < p["done"] < N_SECOND  # what was in flight was kept, the rest skipped
        assert lib.status().to_dict()["items"]["ok"] == p["done"]


def test_bad_index_requests(tmp_path, folders):
    first, _ = folders
    with (
        Library(tmp_path / "lib", encoder=ColourEncoder()) as lib,
        TestClient(create_app(lib), base_url="http://127.0.0.1") as c,
    ):
        r = c.post("/api/index", json={})
        assert r.status_code == 400 and "no folders" in r.json()["error"]["message"]
        r = c.post("/api/index", json={"roots": [str(tmp_path / "nope")]})
        assert r.status_code == 404 and "nope" in r.json()["error"]["message"]
        r = c.post("/api/index", json={"roots": [""]})
        assert r.status_code == 400
        r = c.post("/api/index", json={"roots": [str(first)], "video_sampler": "every:3"})
        assert r.status_code == 400
        r = c.post("/api/index", json={"roots": [str(first)], "threads": 4})
        assert r.status_code == 422
        r = c.post("/api/index", content=b"{oops", headers={"content-type": "application/json"})
        assert r.status_code == 422
        assert c.get("/api/index").json()["state"] == "idle"  # nothing started


@pytest.mark.parametrize(
    "root",
    [
        "a" * 300,  # one component longer than the file system allows (ENAMETOOLONG)
        "/tmp/" + "b" * 300,
        "/tmp/" + "/".join(["c" * 200] * 30),  # a path longer than PATH_MAX
        "photos",  # relative: would resolve against the server's working directory
        "./first",
        "../first",
    ],
)
def test_malformed_and_relative_folders_are_400_and_do_not_reveal_the_cwd(
    tmp_path, folders, monkeypatch, root
):
    monkeypatch.chdir(tmp_path)  # "first" exists relative to here
    with (
        Library(tmp_path / "lib", encoder=ColourEncoder()) as lib,
        TestClient(create_app(lib), base_url="http://127.0.0.1") as c,
    ):
        r = c.post("/api/index", json={"roots": [root]})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "bad_request"
        assert str(tmp_path) not in r.json()["error"]["message"]
        assert c.get("/api/index").json()["state"] == "idle"


def test_new_folders_can_be_refused(tmp_path, folders):
    first, second = folders
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        lib.index([first])
        app = create_app(lib, allow_new_roots=False)
        with TestClient(app, base_url="http://127.0.0.1") as c:
            r = c.post("/api/index", json={"roots": [str(second)]})
            assert r.status_code == 403
            assert c.get("/api/status").json()["can_index_new_folders"] is False
            r = c.post("/api/index", json={"roots": [str(first)]})  # known: allowed
            assert r.status_code == 202
            assert wait_for(c, finished)["state"] == "done"


def test_failed_files_are_listed_in_progress_and_status(tmp_path, folders):
    first, _ = folders
    (first / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with (
        Library(tmp_path / "lib", encoder=ColourEncoder()) as lib,
        TestClient(create_app(lib), base_url="http://127.0.0.1") as c,
    ):
        c.post("/api/index", json={"roots": [str(first)]})
        p = wait_for(c, finished)
        assert p["state"] == "done" and p["failed"] == 1
        assert [e["path"] for e in p["errors"]] == [str(first / "broken.jpg")]
        st = c.get("/api/status").json()
        assert [f["path"] for f in st["failures"]] == [str(first / "broken.jpg")]
