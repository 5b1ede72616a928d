"""Runtime settings (validated, remembered) and the crash-safe cache of built encoders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipsearch.errors import UsageError
from clipsearch.models.runtime import RuntimeSettings
from clipsearch.models.runtime_cache import BuildKey, RuntimeCache

KEY = BuildKey("tiny-vit-32d-abc", "openvino", "int8")
VERSIONS = {"openvino": "1.0", "nncf": "2.0"}


# -- settings ---------------------------------------------------------------------------------
def test_settings_are_validated_and_normalised():
    assert RuntimeSettings("OpenVINO", "INT8") == RuntimeSettings("openvino", "int8")
    with pytest.raises(UsageError, match="Unknown runtime"):
        RuntimeSettings("tensorrt")
    with pytest.raises(UsageError, match="Unknown quantization"):
        RuntimeSettings("auto", "int4")
    with pytest.raises(UsageError, match="OpenVINO runtime"):
        RuntimeSettings("torch", "int8")


def test_settings_round_trip_and_a_damaged_file_gives_the_defaults(tmp_path: Path):
    RuntimeSettings("openvino", "int8").save(tmp_path)
    assert RuntimeSettings.load(tmp_path) == RuntimeSettings("openvino", "int8")
    (tmp_path / RuntimeSettings.FILE).write_text('{"runtime": "warp-drive", "quantize": "none"}')
    assert RuntimeSettings.load(tmp_path) == RuntimeSettings()
    (tmp_path / RuntimeSettings.FILE).write_text("{not json")
    assert RuntimeSettings.load(tmp_path) == RuntimeSettings()
    assert RuntimeSettings.load(tmp_path / "missing") == RuntimeSettings("auto", "none")


def test_replace_keeps_unset_fields():
    s = RuntimeSettings("openvino", "int8")
    assert s.replace(quantize="none") == RuntimeSettings("openvino", "none")
    assert s.replace() == s


# -- cache --------------------------------------------------------------------------------------
def _writer(xml_bytes: bytes = b"<net/>", bin_bytes: bytes = b"\0" * 100):
    def write(xml: Path) -> None:
        xml.write_bytes(xml_bytes)
        xml.with_suffix(".bin").write_bytes(bin_bytes)

    return write


def test_store_then_lookup(tmp_path: Path):
    cache = RuntimeCache(tmp_path / "runtime")
    entry = cache.store(KEY, _writer(), versions=VERSIONS, info={"calibration_images": 64})
    found = cache.lookup(KEY, VERSIONS)
    assert found is not None
    assert found.xml.read_bytes() == b"<net/>" and found.bin.stat().st_size == 100
    assert found.info == {"calibration_images": 64} and found.gate is None
    assert found.xml == entry.xml
    assert cache.lookup(BuildKey(KEY.fingerprint, "openvino", "fp32"), VERSIONS) is None


def test_another_openvino_version_makes_the_entry_stale(tmp_path: Path):
    cache = RuntimeCache(tmp_path)
    cache.store(KEY, _writer(), versions=VERSIONS)
    assert cache.lookup(KEY, {**VERSIONS, "openvino": "9.9"}) is None


def test_gate_figures_are_stored_with_the_entry(tmp_path: Path):
    cache = RuntimeCache(tmp_path)
    entry = cache.store(KEY, _writer(), versions=VERSIONS)
    cache.record_gate(entry, {"passed": False, "min_cosine": 0.5})
    again = RuntimeCache(tmp_path).lookup(KEY, VERSIONS)
    assert again is not None and again.gate == {"passed": False, "min_cosine": 0.5}
    assert [e.key for e in RuntimeCache(tmp_path).entries()] == [KEY]


def test_a_build_killed_while_writing_leaves_no_entry_and_is_swept(tmp_path: Path):
    cache = RuntimeCache(tmp_path)

    def dies(xml: Path) -> None:
        xml.write_bytes(b"<net")  # half a model
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.store(KEY, dies, versions=VERSIONS)
    assert cache.lookup(KEY, VERSIONS) is None
    cache.store(KEY, _writer(), versions=VERSIONS)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".bin", ".json", ".xml"]


def test_a_build_killed_before_its_record_leaves_the_previous_entry(tmp_path: Path, monkeypatch):
    cache = RuntimeCache(tmp_path)
    old = cache.store(KEY, _writer(b"<old/>"), versions=VERSIONS)

    def killed(entry) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cache, "_commit", killed)
    with pytest.raises(KeyboardInterrupt):
        cache.store(KEY, _writer(b"<new/>"), versions=VERSIONS)
    monkeypatch.undo()
    found = cache.lookup(KEY, VERSIONS)
    assert found is not None and found.xml.read_bytes() == b"<old/>" and found.xml == old.xml
    cache.sweep()  # the new build's orphaned files go
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [old.xml.name, old.bin.name, f"{KEY.name}.json"]
    )


def test_a_truncated_weights_file_makes_the_entry_stale(tmp_path: Path):
    cache = RuntimeCache(tmp_path)
    entry = cache.store(KEY, _writer(), versions=VERSIONS)
    entry.bin.write_bytes(b"\0" * 10)
    assert cache.lookup(KEY, VERSIONS) is None


def test_records_of_an_older_recipe_are_stale_and_swept(tmp_path: Path):
    cache = RuntimeCache(tmp_path)
    entry = cache.store(KEY, _writer(), versions=VERSIONS)
    rec_path = tmp_path / f"{KEY.name}.json"
    rec = json.loads(rec_path.read_text())
    rec["recipe"] = "0"
    rec_path.write_text(json.dumps(rec))
    assert cache.lookup(KEY, VERSIONS) is None
    cache.sweep()
    assert not entry.xml.exists() and not rec_path.exists()
