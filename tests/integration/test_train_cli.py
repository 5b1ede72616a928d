"""`clipsearch train` on the command line: options, rendering, errors as one line."""

from __future__ import annotations

import inspect
import json
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from clipsearch.cli import train_cmd
from clipsearch.eval.synthetic import make_image_set
from clipsearch.train import TrainConfig
from tests.fakes import register_tiny_models


@pytest.fixture(autouse=True)
def _tiny_setup():
    register_tiny_models()
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_every_config_field_is_a_cli_option():
    params = set(inspect.signature(train_cmd.train).parameters) - {"json_out", "quiet"}
    assert params == {f.name for f in fields(TrainConfig)}
    defaults = {
        name: p.default for name, p in inspect.signature(train_cmd.train).parameters.items()
    }
    for f in fields(TrainConfig):
        if f.name not in ("out", "shards"):
            assert defaults[f.name] == f.default, f.name


def test_train_command_runs_reports_and_refuses_to_clobber(tmp_path: Path, capsys):
    from clipsearch.cli.app import main

    make_image_set(tmp_path / "d", n=32, seed=2, size=32)
    out = tmp_path / "run"
    argv = [
        "train", "--pairs", str(tmp_path / "d" / "images.csv"), "--from-scratch", "tiny-vit",
        "--out", str(out), "--epochs", "1", "--batch-size", "8", "--workers", "1",
        "--val-fraction", "0.25", "--lr", "1e-3",
    ]  # fmt: skip
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["status"] == "completed"
    assert report["checkpoint"] == str(out / "checkpoint.safetensors")
    assert set(report["after"]) == {"text_to_media", "media_to_text"}

    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "already holds a training run" in err
    assert "Traceback" not in err

    assert main([*argv, "--overwrite", "--quiet"]) == 0
    shown = capsys.readouterr().out
    assert "Validation recall" in shown and "R@1" in shown

    assert (
        main(["train", "--out", str(tmp_path / "x"), "--pairs", "nope.csv", "--mode", "bad"]) == 2
    )
    assert "unknown --mode 'bad'" in capsys.readouterr().err
