"""`make mutation`'s set-up ([tool.mutmut] in pyproject.toml) stays runnable.

mutmut forks one worker per mutant from the process that ran the selected tests: the
selected test files must exist and must not bring torch in (a forked worker that runs a
torch op after its parent did hangs on OpenMP's thread pool, and the hang is counted as a
caught mutant). The mutated modules must be real files the score script can read.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"]["mutmut"]

_PROBE = """
import sys
import pytest

class Probe:
    def pytest_collection_finish(self, session):
        heavy = sorted(m for m in ("torch", "open_clip", "transformers") if m in sys.modules)
        print("HEAVY=" + ",".join(heavy))

code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *sys.argv[1:]],
                   plugins=[Probe()])
sys.exit(int(code))
"""


def test_mutated_modules_and_selected_tests_exist():
    for path in CONFIG["only_mutate"]:
        assert (ROOT / path).is_file(), path
    for path in CONFIG["pytest_add_cli_args_test_selection"]:
        assert (ROOT / path).is_file(), path
    assert CONFIG["process_isolation"] == "fork"


def test_selected_tests_do_not_import_torch():
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *CONFIG["pytest_add_cli_args_test_selection"]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "HEAVY=\n" in proc.stdout, proc.stdout[-2000:]
