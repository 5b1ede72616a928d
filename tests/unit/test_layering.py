"""The layering of docs/architecture.md holds: import-linter's contracts (pyproject.toml)
pass on the package, and each contract fails for the import it exists to forbid.

The contracts run through the ``lint-imports`` command in a subprocess whose import path
starts at the tree under test, so a copy of the package with one wrong import added is
checked exactly like the real one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import importlinter  # noqa: F401  (the dev extra: missing, this module fails, never skips)
import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter on ``tree`` (a folder holding pyproject.toml and clipsearch/)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]),
    }
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run(
        [sys.executable, "-c", code, "--no-cache", "--no-logo", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def contract_names() -> list[str]:
    return [
        c["name"] for c in tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    ]


def test_the_package_keeps_every_layering_contract():
    names = contract_names()
    assert len(names) >= 4  # layers; inside the library; core never imports eval/train/faces;
    # eval/train import no face
    result = lint_imports(ROOT)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    for name in names:
        assert f"{name} KEPT" in out, out


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory) -> Path:
    """A pristine copy of the package and its pyproject.toml (each test copies it again)."""
    tree = tmp_path_factory.mktemp("pristine")
    shutil.copytree(
        ROOT / "clipsearch", tree / "clipsearch", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(PYPROJECT, tree / "pyproject.toml")
    return tree


@pytest.mark.parametrize(
    "module, added, broken",
    [
        # search works on its collaborators, never on the Library facade...
        pytest.param(
            "search/rescore.py",
            "from clipsearch.library import Library\n",
            "clipsearch.search is not allowed to import clipsearch.library",
            id="search-imports-library",
        ),
        # ...not even for type hints.
        pytest.param(
            "search/engine.py",
            "if TYPE_CHECKING:\n    from clipsearch.library import Library\n",
            "clipsearch.search is not allowed to import clipsearch.library",
            id="search-type-hints-library",
        ),
        # media knows nothing of models or storage.
        pytest.param(
            "media/scan.py",
            "from clipsearch.store import Catalog\n",
            "clipsearch.media is not allowed to import clipsearch.store",
            id="media-imports-store",
        ),
        # the core never imports the evaluation or training packages.
        pytest.param(
            "store/catalog.py",
            "from clipsearch.eval import metrics\n",
            "clipsearch.store is not allowed to import clipsearch.eval",
            id="store-imports-eval",
        ),
        pytest.param(
            "library/facade.py",
            "import clipsearch.train.loss\n",
            "clipsearch.library is not allowed to import clipsearch.train",
            id="library-imports-train",
        ),
        # inside the library, a collaborator never reaches back to the facade.
        pytest.param(
            "library/searching.py",
            "from clipsearch.library.facade import Library\n",
            "clipsearch.library.searching is not allowed to import clipsearch.library.facade",
            id="library-collaborator-imports-facade",
        ),
        # the server is a face over the library, not over the command line.
        pytest.param(
            "server/state.py",
            "from clipsearch.cli import render\n",
            "clipsearch.server is not allowed to import clipsearch.cli",
            id="server-imports-cli",
        ),
        # eval and train import the core, never a face.
        pytest.param(
            "eval/metrics.py",
            "from clipsearch.server import errors\n",
            "clipsearch.eval is not allowed to import clipsearch.server",
            id="eval-imports-server",
        ),
        # the leaves import nothing above them.
        pytest.param(
            "errors.py",
            "import clipsearch.atomic\n",
            "clipsearch.errors is not allowed to import clipsearch.atomic",
            id="errors-imports-atomic",
        ),
    ],
)
def test_a_contract_breaks_on_the_import_it_forbids(tmp_path, package_copy, module, added, broken):
    tree = tmp_path / "tree"
    shutil.copytree(package_copy, tree)
    target = tree / "clipsearch" / module
    target.write_text(target.read_text() + "\n" + added)
    dotted = "clipsearch." + module.removesuffix(".py").replace("/", ".")

    result = lint_imports(tree)

    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert broken in out, out
    # the report names the offending module and line
    assert re.search(rf"^-\s+{re.escape(dotted)} -> .* \(l\.\d+\)$", out, re.M), out
