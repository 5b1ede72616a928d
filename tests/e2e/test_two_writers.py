"""Two `clipsearch index` runs on one library: the second is refused at once with a clear
message naming the first (instead of both encoding everything), and the lock goes with
the process that held it, even when it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from clipsearch.errors import LibraryError
from clipsearch.library import Library
from tests.fakes import ColourEncoder, make_image

REPO = Path(__file__).resolve().parents[2]
N = 12

# Process A: indexes with an encoder that waits at its first batch until `release` exists.
HOLDER = """
import sys, time
from pathlib import Path
from clipsearch.library import Library
from tests.fakes import ColourEncoder

photos, lib, entered, release = map(Path, sys.argv[1:5])

class Gated(ColourEncoder):
    def encode_pixels(self, pixels):
        entered.touch()
        while not release.exists():
            time.sleep(0.02)
        return super().encode_pixels(pixels)

with Library(lib, encoder=Gated()) as library:
    print(library.index([photos]).encoded, flush=True)
"""


def start_holder(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    photos, lib = tmp_path / "photos", tmp_path / "lib"
    for i in range(N):
        make_image(photos / f"{i:02d}.jpg", ["red", "green", "blue"][i % 3], seed=i)
    entered, release = tmp_path / "entered", tmp_path / "release"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER), photos, lib, entered, release],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not entered.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the first writer never started encoding"
        time.sleep(0.02)
    return proc, release


def test_a_second_writer_is_refused_while_the_first_indexes(tmp_path):
    holder, release = start_holder(tmp_path)
    try:
        # The CLI, as a user would run it: refused before loading any model.
        command = ["index", str(tmp_path / "photos"), "--library", str(tmp_path / "lib")]
        cli = subprocess.run(
            [sys.executable, "-m", "clipsearch", *command],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cli.returncode != 0
        message = cli.stderr.strip()
        assert f"pid {holder.pid}" in message and "already indexing" in message
        assert "Traceback" not in message and len(message.splitlines()) <= 3
        # The library API says the same.
        with (
            Library(tmp_path / "lib", encoder=ColourEncoder()) as lib,
            pytest.raises(LibraryError, match=f"pid {holder.pid}"),
        ):
            lib.index([tmp_path / "photos"])
    finally:
        release.touch()
        out, err = holder.communicate(timeout=120)
    assert holder.returncode == 0, err
    assert int(out.strip()) == N  # the first run encoded everything, once
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        assert lib.index([tmp_path / "photos"]).encoded == 0  # the lock is free again


def test_a_killed_writer_leaves_no_lock_behind(tmp_path):
    holder, _ = start_holder(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        report = lib.index([tmp_path / "photos"])
    assert report.encoded == N  # nothing was committed by the killed run: all done now
