"""`clipsearch train` on the command line: options, rendering, errors as one line."""

from __future__ import annotations

import inspect
import json
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from clipsearch.cli import train_cmd
from clipsearch.errors import UsageError
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
    err = capsys.readouterr().err
    assert "Invalid value for '--mode': Value error, 'bad' is not one of" in err
    assert "'full', 'lit', 'proj', 'lora'" in err and len(err.strip().splitlines()) == 1


def test_resume_reuses_the_runs_settings_and_only_optimiser_options_may_change(
    tmp_path: Path, run_cli
):
    make_image_set(tmp_path / "d", n=32, seed=2, size=32)
    out = tmp_path / "run"
    argv = [
        "train", "--pairs", str(tmp_path / "d" / "images.csv"), "--from-scratch", "tiny-vit",
        "--out", str(out), "--epochs", "1", "--batch-size", "8", "--workers", "1",
        "--val-fraction", "0", "--quiet",
    ]  # fmt: skip
    assert run_cli(*argv).exit_code == 0
    assert run_cli("train", "--out", str(out)).exit_code == UsageError.exit_code  # no data
    # --resume alone reuses run.json: the run already finished its 1 epoch, so it just
    # re-reports (no step) and exits 0.
    assert run_cli("train", "--resume", "--out", str(out), "--quiet").exit_code == 0
    # Optimiser options may change on resume: extend the run by one epoch at a lower lr.
    r = run_cli("train", "--resume", "--out", str(out), "--epochs", "2", "--lr", "1e-4", "-q")
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert [h["epoch"] for h in report["history"]] == [1, 2]
    assert report["config"]["lr"] == 1e-4
    # ...but not the data or the model.
    r = run_cli("train", "--resume", "--out", str(out), "--mode", "lit")
    assert r.exit_code == UsageError.exit_code
    assert "got --mode" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert json.loads((out / "report.json").read_text())["config"]["mode"] == "full"


def test_python_m_clipsearch_train_runs_the_same_command(tmp_path: Path):
    """`python -m clipsearch.train` is `clipsearch train`: same options, same errors."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [sys.executable, "-m", "clipsearch.train", "--out", str(tmp_path), "--loss", "mse"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: Invalid value for '--loss'")
    assert "'clip', 'siglip'" in proc.stderr and "(see 'clipsearch train --help')" in proc.stderr


def test_shards_given_once_for_several_files_are_passed_on_repeated():
    from clipsearch.train.__main__ import shards_repeated

    assert shards_repeated(["--shards", "a.tar", "b.tar", "--lr", "1e-4"]) == [
        "--shards", "a.tar", "--shards", "b.tar", "--lr", "1e-4",
    ]  # fmt: skip
    assert shards_repeated(["--out", "o", "--shards", "a.tar"]) == [
        "--out", "o", "--shards", "a.tar",
    ]  # fmt: skip
    assert shards_repeated(["--shards", "--lr", "1"]) == ["--shards", "--lr", "1"]
