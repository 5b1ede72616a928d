"""`clipsearch serve` for real: a subprocess with the tiny open_clip checkpoint, uvicorn on
a free loopback port, the token from CLIPSEARCH_TOKEN, then Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from clipsearch.library import Library
from tests.fakes import make_image

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "tok-" + "x" * 20

pytestmark = pytest.mark.slow  # a subprocess that imports torch and loads a model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_runs_the_library_on_loopback_with_a_token(tmp_path, tiny_checkpoint):
    photos = tmp_path / "photos"
    for c in ("red", "green", "blue"):
        make_image(photos / f"{c}.jpg", c)
    with Library(tmp_path / "lib", model=str(tiny_checkpoint)) as lib:
        assert lib.index([photos]).encoded == 3
    port = _free_port()
    env = {
        **os.environ,
        "CLIPSEARCH_TOKEN": TOKEN,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clipsearch",
            "--library",
            str(tmp_path / "lib"),
            "serve",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(base + "/api/status", headers=auth, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        st = httpx.get(base + "/api/status", headers=auth).json()
        assert st["items"]["ok"] == 3
        assert st["model_loaded"] or st["model_loading"]  # the port opens before the model
        assert httpx.get(base + "/api/status").status_code == 401
        r = httpx.get(base + "/api/search", params={"q": "a photo", "k": 3}, headers=auth)
        assert r.status_code == 200 and len(r.json()["hits"]) == 3
        assert httpx.get(base + "/api/status", headers=auth).json()["model_loaded"] is True
        # announced for `clipsearch search`: owner-only, with the port and the token
        announced = tmp_path / "lib" / "server.json"
        assert announced.stat().st_mode & 0o777 == 0o600
        assert f'"port": {port}' in announced.read_text() and TOKEN in announced.read_text()
        r = httpx.get(base + "/api/status", headers={**auth, "Host": "evil.example"})
        assert r.status_code == 403
        page = httpx.get(base + "/", params={"token": TOKEN})
        assert page.status_code == 200 and "clipsearch" in page.text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode in (0, 130), err
    assert not (tmp_path / "lib" / "server.json").exists()  # withdrawn on the way out
    assert f"http://127.0.0.1:{port}/?token={TOKEN}" in err
    assert "Traceback" not in err


def test_a_port_in_use_is_its_own_error_and_nothing_is_announced(tmp_path, tiny_checkpoint):
    """`serve` binds before it says "Serving on": a busy port is reported at once, as
    what it is (exit code 5), never as a model problem after loading the model."""
    photos = tmp_path / "photos"
    make_image(photos / "red.jpg", "red")
    with Library(tmp_path / "lib", model=str(tiny_checkpoint)) as lib:
        lib.index([photos])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "clipsearch", "--library", str(tmp_path / "lib")]
        r = subprocess.run(
            [*cmd, "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert r.returncode == 5, r.stderr
    assert "Serving on" not in r.stderr and "Traceback" not in r.stderr
    assert f"127.0.0.1:{port}" in r.stderr and "already in use" in r.stderr
    assert "loading model" not in r.stderr  # refused before the model was loaded
