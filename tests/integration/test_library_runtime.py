"""Indexing with an accelerated image encoder: built once, gated on the library's own
images, remembered, and refused (with the reason) when it disagrees with fp32."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipsearch import Library
from clipsearch.cli.app import main
from clipsearch.cli.render import runtime_line
from clipsearch.errors import UsageError
from clipsearch.ingest import RuntimeChosen, RuntimeProgress
from clipsearch.ingest.runtime_choice import ImageRuntimeChooser
from clipsearch.media import load_image
from clipsearch.models.runtime import RuntimeSettings
from tests.fakes import DegradedImageEncoder

pytest.importorskip("openvino")

COLOURS = ["red", "green", "blue", "yellow", "white", "black", "orange", "purple", "cyan"]


def _photos(folder: Path, make_image, n: int, start: int = 0) -> Path:
    for i in range(start, start + n):
        make_image(folder / f"img_{i:03d}.jpg", COLOURS[i % len(COLOURS)], size=(48, 40), seed=i)
    return folder


def _open(path: Path, ckpt: Path, **kw) -> Library:
    return Library(path, model=str(ckpt), precision="fp32", **kw)


def _run(lib: Library, folder: Path):
    events: list = []
    report = lib.index([folder], on_event=events.append)
    return report, events


def test_openvino_encoder_is_built_gated_remembered_and_reused(
    tmp_path, tiny_checkpoint, tiny_encoder, make_image, capsys
):
    media = _photos(tmp_path / "media", make_image, 60)
    with _open(tmp_path / "lib", tiny_checkpoint, runtime="openvino") as lib:
        report, events = _run(lib, media)
        assert report.encoded == 60
        assert report.image_encoder == "openvino fp32"
        assert report.image_encoder_reason.startswith("passed the accuracy gate")
        assert not report.image_encoder_fell_back
        stages = {e.stage for e in events if isinstance(e, RuntimeProgress)}
        assert {"export", "check"} <= stages
        status = lib.status().to_dict()["runtime"]
        assert status["runtime"] == "openvino" and status["quantize"] == "none"
        (build,) = status["builds"]
        gate = build["gate"]
        assert build["precision"] == "fp32" and gate["passed"] is True
        assert gate["min_cosine"] > 0.9999 and gate["check_images"] >= 32
        assert gate["text_overlap"] >= 0.9 and gate["image_overlap"] >= 0.9
        # The stored vectors are the torch model's: same space, same values.
        table = lib.catalog.load_vectors()
        recs = lib.catalog.items(table.item_ids.tolist())
        for row in range(0, len(table.item_ids), 7):
            path = recs[int(table.item_ids[row])].path
            want = tiny_encoder.encode_images([load_image(path, min_side=32).image])[0]
            got = table.vectors[row].astype(np.float32)
            assert float(got @ want) / float(np.linalg.norm(got)) > 0.999
    assert RuntimeSettings.load(tmp_path / "lib") == RuntimeSettings("openvino", "none")

    # status and index-info show the stored figures, in text and JSON.
    for command in ("status", "index-info"):
        assert main([command, "--library", str(tmp_path / "lib"), "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)["runtime"]["builds"][0]["gate"]
        assert shown["min_cosine"] == gate["min_cosine"] and shown["passed"] is True
        assert main([command, "--library", str(tmp_path / "lib")]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "openvino fp32 passed the accuracy gate: min cosine" in text
        assert f"text {gate['text_overlap']:.3f} / image {gate['image_overlap']:.3f}" in text

    # A later run (settings from the library) reuses the build and its verdict.
    _photos(media, make_image, 5, start=60)
    with _open(tmp_path / "lib", tiny_checkpoint) as lib:
        report, events = _run(lib, media)
    assert report.encoded == 5 and report.image_encoder == "openvino fp32"
    assert not [e for e in events if isinstance(e, RuntimeProgress)]
    chosen = [e for e in events if isinstance(e, RuntimeChosen)]
    assert len(chosen) == 1 and chosen[0].label == "openvino fp32"


def test_a_degraded_encoder_fails_the_gate_and_indexing_falls_back_to_torch(
    tmp_path, tiny_checkpoint, tiny_encoder, make_image, monkeypatch
):
    real_load = ImageRuntimeChooser._load
    monkeypatch.setattr(
        ImageRuntimeChooser,
        "_load",
        lambda self, entry: DegradedImageEncoder(real_load(self, entry), 0.2),
    )
    media = _photos(tmp_path / "media", make_image, 60)
    with _open(tmp_path / "lib", tiny_checkpoint, runtime="openvino") as lib:
        report, _ = _run(lib, media)
        assert report.encoded == 60
        assert report.image_encoder == "torch fp32"
        assert "failed the accuracy gate" in report.image_encoder_reason
        assert "min cosine" in report.image_encoder_reason and report.image_encoder_fell_back
        runtime = lib.status().to_dict()["runtime"]
        (build,) = runtime["builds"]
        assert build["gate"]["passed"] is False and build["gate"]["min_cosine"] < 0.99
        line = runtime_line(runtime)
        assert "openvino fp32 FAILED the accuracy gate (min cosine 0." in line
        assert "torch indexes instead" in line
        # What was stored is exactly the torch encoder's output.
        table = lib.catalog.load_vectors()
        path = lib.catalog.items([int(table.item_ids[0])])[int(table.item_ids[0])].path
        want = tiny_encoder.encode_images([load_image(path, min_side=32).image])[0]
        got = table.vectors[0].astype(np.float32)
        assert float(got @ want) / float(np.linalg.norm(got)) > 0.999
    # The verdict is stored: the next run neither rebuilds nor re-checks, and says why.
    _photos(media, make_image, 3, start=60)
    with _open(tmp_path / "lib", tiny_checkpoint) as lib:
        report, events = _run(lib, media)
    assert (
        report.image_encoder == "torch fp32"
        and "failed the accuracy gate" in report.image_encoder_reason
    )
    assert not [e for e in events if isinstance(e, RuntimeProgress)]


def test_a_stale_build_is_rebuilt_and_checked_again(tmp_path, tiny_checkpoint, make_image):
    """A build made by another OpenVINO version (or export recipe) is not trusted: the next
    run that encodes images exports and checks again, and the old files go."""
    media = _photos(tmp_path / "media", make_image, 40)
    with _open(tmp_path / "lib", tiny_checkpoint, runtime="openvino") as lib:
        _run(lib, media)
    (record,) = (tmp_path / "lib" / "runtime").glob("*.json")
    data = json.loads(record.read_text())
    old_files = set(data["files"].values())
    data["versions"]["openvino"] = "2000.0.0"
    record.write_text(json.dumps(data))

    _photos(media, make_image, 2, start=40)
    with _open(tmp_path / "lib", tiny_checkpoint) as lib:
        report, events = _run(lib, media)
        (build,) = lib.status().to_dict()["runtime"]["builds"]
    assert report.encoded == 2 and report.image_encoder == "openvino fp32"
    assert {"export", "check"} <= {e.stage for e in events if isinstance(e, RuntimeProgress)}
    assert build["versions"]["openvino"] != "2000.0.0" and build["gate"]["passed"] is True
    left = {p.name for p in (tmp_path / "lib" / "runtime").iterdir()}
    assert not (old_files & left)


def test_calibration_and_check_images_are_disjoint_and_the_librarys_own(
    tmp_path, tiny_checkpoint, make_image, monkeypatch
):
    """int8 is calibrated on some of the library's images and checked on others."""
    from clipsearch.models import openvino_encoder as ovx

    seen: dict[str, np.ndarray] = {}

    def calibrate(model, calibration, *, progress=None):
        seen["calibration"] = calibration.copy()
        return model  # the gate's sets are what is under test, not NNCF

    real_check = ImageRuntimeChooser._check

    def check(self, reference, candidate, pixels, *, calibration_images):
        seen["check"] = pixels.copy()
        return real_check(self, reference, candidate, pixels, calibration_images=calibration_images)

    monkeypatch.setattr(ovx, "quantize_int8", calibrate)
    monkeypatch.setattr(ImageRuntimeChooser, "_check", check)
    media = _photos(tmp_path / "media", make_image, 60)
    with _open(tmp_path / "lib", tiny_checkpoint, runtime="openvino", quantize="int8") as lib:
        lib.index([media])
        (build,) = lib.status().to_dict()["runtime"]["builds"]
        own = {
            lib.encoder.preprocess(load_image(p, min_side=32).image).tobytes()
            for p in sorted(media.iterdir())
        }
    calibration, check_set = seen["calibration"], seen["check"]
    assert len(calibration) >= 16 and len(check_set) >= 32
    assert build["gate"]["calibration_images"] == len(calibration)
    assert build["gate"]["check_images"] == len(check_set)
    rows = lambda a: {r.tobytes() for r in a}  # noqa: E731
    assert rows(calibration).isdisjoint(rows(check_set))
    assert rows(calibration) | rows(check_set) <= own


def test_too_few_images_to_check_falls_back_and_says_so(tmp_path, tiny_checkpoint, make_image):
    media = _photos(tmp_path / "media", make_image, 10)
    with _open(tmp_path / "lib", tiny_checkpoint, runtime="openvino") as lib:
        report, _ = _run(lib, media)
    assert report.encoded == 10 and report.image_encoder == "torch fp32"
    assert "needs at least" in report.image_encoder_reason and report.image_encoder_fell_back


def test_auto_keeps_torch_for_a_small_run_without_building_anything(
    tmp_path, tiny_checkpoint, make_image
):
    media = _photos(tmp_path / "media", make_image, 12)
    with _open(tmp_path / "lib", tiny_checkpoint) as lib:
        assert lib.runtime_settings == RuntimeSettings("auto", "none")
        report, events = _run(lib, media)
    assert report.image_encoder == "torch fp32" and "runtime auto" in report.image_encoder_reason
    assert not report.image_encoder_fell_back  # expected, nothing to tell
    assert not (tmp_path / "lib" / "runtime").exists()
    assert not [e for e in events if isinstance(e, RuntimeProgress)]


def test_an_encoder_without_an_exportable_model_falls_back(tmp_path, fake_encoder, make_image):
    media = _photos(tmp_path / "media", make_image, 60)
    with Library(tmp_path / "lib", encoder=fake_encoder, runtime="openvino") as lib:
        report, _ = _run(lib, media)
    assert report.encoded == 60 and report.image_encoder == "torch fp32"
    assert "no open_clip model to export" in report.image_encoder_reason


def test_bad_settings_fail_before_anything_is_created(tmp_path):
    with pytest.raises(UsageError):
        Library(tmp_path / "lib", runtime="torch", quantize="int8")
    assert not (tmp_path / "lib").exists()


def test_set_runtime_is_remembered(tmp_path, fake_encoder):
    with Library(tmp_path / "lib", encoder=fake_encoder) as lib:
        lib.set_runtime(runtime="openvino", quantize="int8")
    with Library(tmp_path / "lib", encoder=fake_encoder) as lib:
        assert lib.runtime_settings == RuntimeSettings("openvino", "int8")
        assert lib.status().to_dict()["runtime"]["quantize"] == "int8"


@pytest.mark.slow
def test_int8_build_is_calibrated_and_checked_on_the_librarys_images(
    tmp_path, tiny_checkpoint, make_image
):
    media = _photos(tmp_path / "media", make_image, 72)
    with _open(tmp_path / "lib", tiny_checkpoint, runtime="openvino", quantize="int8") as lib:
        report, events = _run(lib, media)
        (build,) = lib.status().to_dict()["runtime"]["builds"]
    gate = build["gate"]
    assert build["precision"] == "int8" and "calibrate" in {
        e.stage for e in events if isinstance(e, RuntimeProgress)
    }
    assert gate["calibration_images"] >= 16 and gate["check_images"] >= 32
    assert (
        gate["calibration_images"] + gate["check_images"] <= 72
    )  # disjoint sets of the library's images
    if gate["passed"]:
        assert report.image_encoder == "openvino int8"
    else:
        assert (
            report.image_encoder == "torch fp32"
            and "failed the accuracy gate" in report.image_encoder_reason
        )
