"""kill -9 in the middle of indexing, then run again: everything ends up indexed once.

A real subprocess runs `python -m clipsearch index` with the tiny checkpoint; we kill it
as soon as the first batch is committed, then resume and check the catalog."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakes import make_image

pytestmark = pytest.mark.slow

N = 120


def _count_ok(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT count(*) FROM items").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _index_command(photos: Path, lib: Path, checkpoint: Path) -> tuple[list[str], dict[str, str]]:
    cmd = [sys.executable, "-m", "clipsearch", "index", str(photos), "--library", str(lib),
           "--model", str(checkpoint), "--batch-size", "4", "--quiet", "--json"]  # fmt: skip
    return cmd, {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}


def _wait_for_first_batch(proc: subprocess.Popen, db: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and _count_ok(db) == 0:
        time.sleep(0.02)


def test_kill_9_then_resume(tmp_path, tiny_checkpoint):
    photos = tmp_path / "photos"
    photos.mkdir()
    palette = ["red", "green", "blue", "yellow", "cyan", "magenta", "orange", "purple"]
    for i in range(N):
        make_image(
            photos / f"img_{i:04d}.jpg", palette[i % len(palette)], size=(96 + i % 7, 64), seed=i
        )
    lib = tmp_path / "lib"
    cmd, env = _index_command(photos, lib, tiny_checkpoint)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = lib / "catalog.sqlite"
    _wait_for_first_batch(proc, db)
    killed_mid_run = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _count_ok(db)
    assert killed_mid_run, "indexing finished before it could be killed; raise N"
    assert 0 < done_before < N

    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    # Only what was not committed before the kill is encoded now.
    assert report["added"] == N - done_before
    assert report["unchanged"] == done_before

    con = sqlite3.connect(db)
    paths = [r[0] for r in con.execute("SELECT path FROM items")]
    assert len(paths) == len(set(paths)) == N
    n_vec = con.execute("SELECT count(*) FROM vectors").fetchone()[0]
    assert n_vec == N  # one vector per image, none duplicated or lost
    con.close()


def test_ctrl_c_stops_cleanly_and_resumes(tmp_path, tiny_checkpoint):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(N):
        make_image(photos / f"img_{i:04d}.png", "blue", size=(96, 64 + i % 5), seed=i)
    lib = tmp_path / "lib"
    cmd, env = _index_command(photos, lib, tiny_checkpoint)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = lib / "catalog.sqlite"
    _wait_for_first_batch(proc, db)
    assert proc.poll() is None, "indexing finished before Ctrl-C could be sent; raise N"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    report = json.loads(out)
    assert report["interrupted"] is True
    done = _count_ok(db)
    assert done == report["added"] < N  # what it reported is exactly what was committed

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["added"] == N - done
    assert _count_ok(db) == N
