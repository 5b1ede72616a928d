"""A library the user may only read (a backup, a shared archive, a read-only mount) can
still be searched: status, search and index-info work; indexing fails with a clear
error; nothing is written.

Write permission is taken away with chmod; as root (which ignores file modes) the
reading process runs without the capabilities that let root override them (setpriv).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from clipsearch.library import Library
from tests.fakes import ColourEncoder, make_image

REPO = Path(__file__).resolve().parents[2]
ROOT_OVERRIDES = "-dac_override,-dac_read_search,-fowner"


def run_without_write_permission(code: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", textwrap.dedent(code)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot take write permission away")
        cmd = [setpriv, f"--bounding-set={ROOT_OVERRIDES}", *cmd]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=REPO)


def make_read_only(folder: Path) -> dict[Path, float]:
    """chmod a-w everything under ``folder``; returns each file's mtime."""
    mtimes = {}
    for p in [*sorted(folder.rglob("*"), reverse=True), folder]:
        mode = p.stat().st_mode
        p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        mtimes[p] = p.stat().st_mtime
    return mtimes


@pytest.fixture
def read_only_library(tmp_path: Path):
    photos = tmp_path / "photos"
    for c in ("red", "green", "blue"):
        make_image(photos / f"{c}.jpg", c)
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        lib.index([photos])
    mtimes = make_read_only(tmp_path / "lib")
    make_image(photos / "yellow.jpg", "yellow")  # something new to index
    yield tmp_path / "lib", photos, mtimes
    for p in [tmp_path / "lib", *(tmp_path / "lib").rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_a_read_only_library_can_be_searched_but_not_indexed(read_only_library):
    lib, photos, mtimes = read_only_library
    r = run_without_write_permission(
        f"""
        import json, os
        from clipsearch.errors import LibraryError
        from clipsearch.library import Library
        from tests.fakes import ColourEncoder

        assert not os.access({str(lib)!r}, os.W_OK)  # the test really took write access away
        out = {{}}
        with Library({str(lib)!r}, encoder=ColourEncoder(), create=False) as lib:
            out["total"] = lib.status().to_dict()["items"]["total"]
            out["top"] = os.path.basename(lib.search("red", k=1)[0].path)
            out["vectors"] = lib.index_info().vectors
            try:
                lib.index([{str(photos)!r}])
                out["index"] = "no error"
            except LibraryError as e:
                out["index"] = str(e)
        print(json.dumps(out))
        """
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["total"] == 3 and out["top"] == "red.jpg" and out["vectors"] == 3
    assert "read-only" in out["index"]
    assert {p: p.stat().st_mtime for p in mtimes} == mtimes  # nothing was written
    assert not list(lib.glob("*-wal")) and not list(lib.glob("*-shm"))


def test_the_cli_reads_a_read_only_library(read_only_library):
    lib, _, _ = read_only_library
    r = run_without_write_permission(
        f"""
        import sys
        from clipsearch.cli.app import main
        sys.exit(main(["status", "--library", {str(lib)!r}, "--json"]))
        """
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["items"]["total"] == 3
