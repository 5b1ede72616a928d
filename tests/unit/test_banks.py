"""BankCache: a library's bank terms and modality gap, computed once per vector state,
remembered in memory, saved under the folder (or kept in memory where it is not writable)."""

from __future__ import annotations

import numpy as np
import pytest

from clipsearch.errors import UsageError
from clipsearch.search import banks, gap
from clipsearch.search.banks import BankCache
from clipsearch.store import ItemWrite
from tests.fakes import colour_image, write_catalog

COLOURS = ("red", "red", "blue", "blue", "green", "yellow", "cyan")


@pytest.fixture
def catalog(tmp_path, fake_encoder):
    items = {f"/p/{c}_{i}.jpg": colour_image(c, seed=i) for i, c in enumerate(COLOURS)}
    cat = write_catalog(tmp_path / "lib", fake_encoder, items)
    yield cat
    cat.close()


def _files(folder, prefix):
    return sorted(p.name for p in folder.glob(f"{prefix}-*"))


def test_terms_are_built_once_saved_remembered_and_refreshed(
    catalog, fake_encoder, tmp_path, monkeypatch
):
    folder = tmp_path / "rerank"
    cache = BankCache(catalog, fake_encoder, folder)
    terms = cache.terms(gallery_bank_size=0)
    assert len(_files(folder, "bank")) == 1 and len(_files(folder, "captions")) == 1
    assert cache.terms(gallery_bank_size=0) is terms  # remembered until the catalog changes
    assert len(terms.item_ids) == len(COLOURS)
    assert terms.n_query_bank == len(banks.default_captions())

    def no_rebuild(*a, **k):
        raise AssertionError("the bank was rebuilt although the vectors did not change")

    monkeypatch.setattr(banks, "build_bank_terms", no_rebuild)
    catalog.set_tags({1: {"red": 0.9}}, source="test")  # a change, but not of the vectors
    again = cache.terms(gallery_bank_size=0)
    np.testing.assert_array_equal(again.query_lse, terms.query_lse)
    fresh_process = BankCache(catalog, fake_encoder, folder).terms(gallery_bank_size=0)
    np.testing.assert_array_equal(fresh_process.query_lse, terms.query_lse)  # from the file
    monkeypatch.undo()
    old_files = _files(folder, "bank")
    vec = fake_encoder.encode_images([colour_image("green", seed=77)])
    catalog.write_items([ItemWrite("/p/new.jpg", None, "image", 5, 1, "h:new", "ok", vectors=vec)])
    fresh = cache.terms(gallery_bank_size=0)
    assert len(fresh.item_ids) == len(COLOURS) + 1
    assert len(_files(folder, "bank")) == 1 and _files(folder, "bank") != old_files  # pruned


def test_gap_is_cached_per_state_and_matches_the_estimate(catalog, fake_encoder, tmp_path):
    folder = tmp_path / "rerank"
    cache = BankCache(catalog, fake_encoder, folder)
    g = cache.gap()
    assert len(_files(folder, "gap")) == 1 and cache.gap() is g
    _, vectors = cache.gallery()
    expected = gap.estimate_gap(vectors, cache.captions())
    np.testing.assert_allclose(g.delta, expected.delta, atol=1e-6)
    loaded = BankCache(catalog, fake_encoder, folder).gap()
    np.testing.assert_array_equal(loaded.image_mean, g.image_mean)


def test_an_unwritable_folder_keeps_everything_in_memory(catalog, fake_encoder, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    cache = BankCache(catalog, fake_encoder, blocker / "rerank")
    terms = cache.terms()
    assert cache.terms() is terms and cache.gap() is cache.gap()
    assert blocker.read_text().startswith("a file")


def test_a_damaged_file_is_rebuilt(catalog, fake_encoder, tmp_path):
    folder = tmp_path / "rerank"
    terms = BankCache(catalog, fake_encoder, folder).terms(gallery_bank_size=0)
    (path,) = folder.glob("bank-*.npz")
    path.write_bytes(b"not an npz file")
    rebuilt = BankCache(catalog, fake_encoder, folder).terms(gallery_bank_size=0)
    np.testing.assert_array_equal(rebuilt.query_lse, terms.query_lse)


def test_an_empty_library_is_a_clear_error(tmp_path, fake_encoder):
    empty = write_catalog(tmp_path / "empty", fake_encoder, {})
    cache = BankCache(empty, fake_encoder, tmp_path / "empty" / "rerank")
    with pytest.raises(UsageError, match="no indexed items"):
        cache.terms()
    with pytest.raises(UsageError, match="no indexed items"):
        cache.gap()
    empty.close()


# --- the caption bank ---------------------------------------------------------------------------
def test_shipped_caption_bank_is_large_diverse_and_clean():
    captions = banks.default_captions()
    assert len(captions) >= 300
    assert len(set(captions)) == len(captions)
    assert all(c and not c.startswith("#") for c in captions)
    words = " ".join(captions).split()
    for theme in (
        "dog",
        "cat",
        "beach",
        "night",
        "rain",
        "snow",
        "red",
        "child",
        "city",
        "kitchen",
    ):
        assert theme in words, theme


def test_query_bank_file_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(UsageError, match="no captions"):
        banks.load_captions(empty)
    with pytest.raises(UsageError, match="cannot read"):
        banks.load_captions(tmp_path / "missing.txt")
    log = tmp_path / "log.txt"
    log.write_text("a dog\n a dog \na cat\n")
    assert banks.load_captions(log) == ["a dog", "a cat"]
