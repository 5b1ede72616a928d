"""The library's nearest-neighbour index: built while indexing, rebuilt on request with
explicit FAISS parameters that are remembered, inspected with index-info."""

from __future__ import annotations

import json

import pytest

from clipsearch import Library
from clipsearch.cli.app import main
from clipsearch.errors import UsageError
from tests.fakes import ColourEncoder, make_image

COLOURS = ["red", "green", "blue", "yellow", "cyan", "magenta", "orange", "purple"]


@pytest.fixture
def lib(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(40):
        make_image(root / f"{COLOURS[i % 8]}_{i}.png", COLOURS[i % 8], seed=i)
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        lib.index([root])
        yield lib


def test_index_builds_the_ann_cache_and_info_reports_it(lib):
    info = lib.index_info()
    assert info is not None and info.vectors == 40
    assert info.generation == lib.catalog.generation()


def test_reindex_with_explicit_factory_is_remembered_and_searches_agree(lib, tmp_path):
    exact = [h.item_id for h in lib.search("red", k=10, exact=True)]
    info = lib.reindex(backend="HNSW32")
    assert info.backend == "faiss" and info.factory == "HNSW32"
    assert info.recall_at_10 is not None and info.recall_at_10 >= 0.95
    assert [h.item_id for h in lib.search("red", k=10)] == exact
    make_image(tmp_path / "photos" / "late red.png", "red", seed=99)
    lib.index([tmp_path / "photos"])
    info = lib.index_info()
    assert info.factory == "HNSW32" and info.vectors == 41  # updated, same parameters
    with Library(lib.path, encoder=ColourEncoder()) as again:
        assert again.ann_settings.backend == "HNSW32"


def test_bad_factory_string_is_a_usage_error_and_changes_nothing(lib):
    with pytest.raises(UsageError):
        lib.reindex(backend="NotAnIndex42")
    assert lib.ann_settings.backend == "auto"


def test_index_info_and_reindex_cli(lib, capsys):
    assert main(["reindex", "--library", str(lib.path), "--ann", "exact", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["backend"] == "exact" and data["vectors"] == 40
    assert main(["index-info", "--library", str(lib.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["vectors"] == 40


def test_a_nan_poisoned_cache_is_rebuilt_by_the_next_process(lib):
    """4 rows of 0xFF bytes (NaN in fp16) in ann/*.vectors.npy, the file's size unchanged:
    the next process notices, rebuilds from the catalog and answers exactly as before;
    no one has to delete ann/ by hand. (Unit tests cover swapped rows and FAISS files.)"""
    want = [(h.item_id, round(h.score, 5)) for h in lib.search("red", k=3)]
    lib.close()
    (vectors,) = (lib.path / "ann").glob("*.vectors.npy")
    raw = bytearray(vectors.read_bytes())
    row = ColourEncoder().dim * 2  # fp16
    start = len(raw) - 40 * row  # the rows fill the file's tail
    raw[start : start + 4 * row] = b"\xff" * (4 * row)
    vectors.write_bytes(bytes(raw))

    with Library(lib.path, encoder=ColourEncoder()) as again:
        assert [(h.item_id, round(h.score, 5)) for h in again.search("red", k=3)] == want
    with Library(lib.path, encoder=ColourEncoder()) as third:  # the rebuild was saved
        assert [(h.item_id, round(h.score, 5)) for h in third.search("red", k=3)] == want
        assert third.index_info().vectors == 40
