"""Crash-safe writes: a reader sees the old file or the new one, never a part."""

import pytest

from clipsearch.atomic import atomic_write, atomic_write_bytes, atomic_write_text


def test_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_failing_writer_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"old")

    def half(p):
        p.write_bytes(b"ne")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, half)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]
