"""BLIP on the command line, through `main(argv)` with the tiny open_clip checkpoint and
tiny random BLIP folders: index --captions, caption, search --rerank itm / --captions /
--where text:, make-pairs, and one-line errors when a BLIP model is missing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from clipsearch.cli.app import main
from tests.fakes import make_image

COLOURS = ["red", "green", "blue", "yellow"]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for c in COLOURS:
        make_image(root / f"{c}.jpg", c)
    return root


@pytest.fixture
def run(tmp_path, tiny_checkpoint, capsys):
    lib = str(tmp_path / "lib")

    def _run(*args: str) -> tuple[int, str, str]:
        code = main(["--library", lib, "--model", str(tiny_checkpoint), *args])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


def test_index_with_captions_then_search_shows_and_filters_by_them(
    run, photos, tiny_blip_caption, tiny_blip_itm
):
    code, out, _ = run(
        "index", str(photos), "--captions", "--caption-model", str(tiny_blip_caption), "--json"
    )
    assert code == 0
    report = json.loads(out)
    assert report["captions"]["items"] == 4 and report["captions"]["failed"] == 0
    code, out, _ = run("search", "red", "--captions", "--json")
    hits = json.loads(out)
    assert code == 0 and all(h["caption"] for h in hits)
    word = hits[0]["caption"].split()[0]
    code, out, _ = run("search", "red", "--where", f"text:{word}", "--json")
    assert code == 0 and len(json.loads(out)) == 4  # the tiny model says the same of all
    code, out, _ = run("search", "red", "--where", "text:zebra", "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = run("caption", "--caption-model", str(tiny_blip_caption), "--json")
    assert code == 0 and json.loads(out)["skipped"] == 4  # nothing new to caption
    code, out, _ = run("search", "red", "--captions")
    assert code == 0 and "caption" in out


def test_search_rerank_itm_json_and_table(run, photos, tiny_blip_itm):
    assert run("index", str(photos), "--quiet")[0] == 0
    args = ["search", "a red photo", "--rerank", "itm", "--itm-model", str(tiny_blip_itm)]
    code, out, err = run(*args, "--rerank-k", "3", "--json")
    assert code == 0, err
    hits = json.loads(out)
    assert [h["itm_score"] is not None for h in hits] == [True, True, True, False]
    assert all(0 <= h["itm_score"] <= 1 for h in hits[:3])
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    code, out, _ = run(*args)
    assert code == 0 and "itm" in out and "clip" in out
    code, _, err = run(*args, "--rerank-score", "best")
    assert code == 2 and "--rerank-score" in err and "'fusion', 'itm'" in err


def test_make_pairs_writes_the_training_csv(
    tmp_path, photos, tiny_blip_caption, tiny_blip_itm, capsys
):
    out = tmp_path / "pairs.csv"
    argv = [
        "make-pairs", str(photos), "--out", str(out), "--threshold", "0",
        "--caption-model", str(tiny_blip_caption), "--itm-model", str(tiny_blip_itm),
        "--max-tokens", "4", "--json",
    ]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["images"], report["kept"], report["dropped"]) == (4, 4, 0)
    with out.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(Path(r["image"]).name for r in rows) == sorted(f"{c}.jpg" for c in COLOURS)
    assert main([*argv[:-1], "--threshold", "1"]) == 0  # nothing passes a threshold of 1
    assert "kept 0, dropped 4" in capsys.readouterr().out


def test_missing_blip_models_are_one_line_errors(run, photos, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert run("index", str(photos), "--quiet")[0] == 0
    code, _, err = run("search", "red", "--rerank", "itm")
    assert code == 3 and "--itm-model" in err and "Traceback" not in err
    code, _, err = run("caption")
    assert code == 3 and "--caption-model" in err
    code, _, err = run("search", "red", "--rerank", "itm", "--itm-model", str(tmp_path / "nope"))
    assert code == 3 and "folder not found" in err
    code = main(["make-pairs", str(tmp_path / "empty"), "--out", str(tmp_path / "p.csv")])
    assert code == 1 and "no such folder" in capsys.readouterr().err
