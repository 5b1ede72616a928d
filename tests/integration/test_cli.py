"""The command line a user types, run in-process through `main(argv)` with a tiny
open_clip checkpoint (random weights, fixed seed) as the model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipsearch.cli.app import main
from tests.fakes import make_image

COLOURS = ["red", "green", "blue", "yellow"]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    for c in COLOURS:
        make_image(root / f"{c}.jpg", c)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    return root


@pytest.fixture
def run(tmp_path, tiny_checkpoint, capsys):
    lib = str(tmp_path / "lib")

    def _run(*args: str, model: bool = True) -> tuple[int, str, str]:
        argv = [
            args[0],
            "--library",
            lib,
            *(["--model", str(tiny_checkpoint)] if model else []),
            *args[1:],
        ]
        code = main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def test_index_search_status_json(run, photos):
    code, out, _ = run("index", str(photos), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["scanned"] == 5 and report["failed"] == 1

    code, out, _ = run("search", "a red square", "-k", "3", "--json", model=False)
    assert code == 0
    hits = json.loads(out)
    assert len(hits) == 3
    assert {"path", "score", "kind"} <= set(hits[0])
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]

    code, out, _ = run("search", "--image", str(photos / "blue.jpg"), "--json", model=False)
    assert json.loads(out)[0]["path"] == str(photos / "blue.jpg")

    code, out, _ = run("status", "--json", model=False)
    st = json.loads(out)
    assert st["model"] == str(Path(st["model"]))  # bare checkpoint path spec
    assert [Path(f["path"]).name for f in st["failures"]] == ["broken.jpg"]
    assert st["failures"][0]["error"]


def test_an_image_composed_with_a_text(run, photos):
    assert run("index", str(photos), "--quiet")[0] == 0
    blue = str(photos / "blue.jpg")
    # At text weight 0 the composed query is the example image itself.
    args = ("search", "--image", blue, "--text", "in red", "--text-weight", "0", "--json")
    for compose in ("slerp", "sum"):
        code, out, _ = run(*args, "--compose", compose, model=False)
        assert code == 0
        assert json.loads(out)[0]["path"] == blue
    code, _, err = run("search", "--text", "in red", model=False)
    assert code == 2 and "exactly one --image" in err
    code, _, err = run("search", "--image", blue, "--text", "  ", model=False)
    assert code == 2 and "empty" in err


def test_human_output_has_a_table(run, photos):
    assert run("index", str(photos), "--quiet")[0] == 0
    code, out, _ = run("search", "green", model=False)
    assert code == 0
    assert "score" in out and "green.jpg" in out
    code, out, _ = run("status", model=False)
    assert code == 0 and "broken.jpg" in out


def test_reindex_reports_unchanged(run, photos):
    run("index", str(photos), "--quiet")
    code, out, _ = run("index", str(photos), "--json")
    assert code == 0
    report = json.loads(out)
    assert report["unchanged"] == 5  # the broken file is unchanged too: it stays failed
    assert report["added"] == 0


def test_errors_are_one_line_with_meaningful_exit_codes(run, photos, tmp_path):
    code, _, err = run("index", str(tmp_path / "missing"))
    assert code == 4 and "not found" in err and "Traceback" not in err

    code, _, err = run("index", str(photos), "--model", "ViT-B-32:no-such-tag", model=False)
    assert code == 3 and "Traceback" not in err

    run("index", str(photos), "--quiet")
    not_image = tmp_path / "q.jpg"
    not_image.write_text("hello")
    code, _, err = run("search", "--image", str(not_image), model=False)
    assert code == 2 and "query image" in err

    code, _, err = run("search", "", model=False)
    assert code == 2 and "empty" in err

    other = tmp_path / "other.safetensors"
    from tests.fakes import make_tiny_checkpoint

    make_tiny_checkpoint(other, seed=123)
    code, _, err = run("search", "red", "--model", str(other), model=False)
    assert code == 3 and "bound to" in err


def test_search_without_library_is_a_clear_error(tmp_path, capsys):
    code = main(["search", "red", "--library", str(tmp_path / "nothing-here")])
    _, err = capsys.readouterr()
    assert code != 0 and "Traceback" not in err


def test_index_runtime_options_are_validated_and_remembered(run, photos, tmp_path):
    code, _, err = run("index", str(photos), "--runtime", "torch", "--quantize", "int8")
    assert code == 2 and "OpenVINO runtime" in err
    assert not (tmp_path / "lib").exists()  # nothing made for a bad option

    code, out, _ = run("index", str(photos), "--runtime", "torch", "--json")
    assert code == 0 and json.loads(out)["image_encoder"] == "torch fp32"
    code, out, _ = run("status", "--json", model=False)
    assert json.loads(out)["runtime"]["runtime"] == "torch"
