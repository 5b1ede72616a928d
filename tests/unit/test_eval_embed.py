"""The evaluation embedding cache: keyed by content that matters, robust to damage."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from clipsearch.eval.embed import (
    EmbeddingCache,
    default_cache_dir,
    embed_images,
    embed_texts,
    media_fingerprint,
    model_fingerprint,
)
from tests.fakes import ColourEncoder, make_image


def test_default_cache_dir(tmp_path, monkeypatch):
    assert default_cache_dir(tmp_path / "lib") == tmp_path / "lib" / "eval-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "clipsearch" / "eval-cache"


def test_media_fingerprint_changes_with_content_and_order(tmp_path):
    a = make_image(tmp_path / "a.png", "red")
    b = make_image(tmp_path / "b.png", "blue")
    fp = media_fingerprint([str(a), str(b)])
    assert fp == media_fingerprint([str(a), str(b)])
    assert fp != media_fingerprint([str(b), str(a)])
    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert fp != media_fingerprint([str(a), str(b)])


def test_model_fingerprint_includes_precision():
    enc = ColourEncoder()
    fp32 = model_fingerprint(enc)
    enc.precision = "bf16"
    assert model_fingerprint(enc) != fp32


def test_images_cached_and_invalidated_by_a_changed_file(tmp_path):
    paths = [str(make_image(tmp_path / f"{c}.png", c)) for c in ("red", "green", "blue")]
    cache = EmbeddingCache(tmp_path / "cache")
    enc = ColourEncoder()
    first = embed_images(enc, paths, cache=cache, batch_size=2, workers=2)
    assert first.ok.all() and enc.images_encoded == 3
    np.testing.assert_allclose(np.linalg.norm(first.vectors, axis=1), 1.0, atol=1e-6)
    again = embed_images(enc, paths, cache=cache, batch_size=2)
    assert enc.images_encoded == 3 and cache.stats.hits == 1
    np.testing.assert_array_equal(again.vectors, first.vectors)
    make_image(Path(paths[1]), "yellow", size=(40, 40))  # the file changed: re-encode
    changed = embed_images(enc, paths, cache=cache)
    assert enc.images_encoded == 6
    assert not np.allclose(changed.vectors[1], first.vectors[1])


def test_undecodable_image_recorded_and_cached_with_its_reason(tmp_path):
    good = make_image(tmp_path / "good.png", "red")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"")
    cache = EmbeddingCache(tmp_path / "cache")
    out = embed_images(ColourEncoder(), [str(bad), str(good)], cache=cache)
    assert out.ok.tolist() == [False, True]
    assert "empty" in out.errors[0]
    assert not out.vectors[0].any()
    cached = embed_images(ColourEncoder(), [str(bad), str(good)], cache=cache)
    assert cached.errors == out.errors and cached.ok.tolist() == [False, True]


def test_damaged_cache_entry_is_recomputed(tmp_path):
    cache = EmbeddingCache(tmp_path)
    enc = ColourEncoder()
    first = embed_texts(enc, ["red", "blue"], cache=cache)
    (entry,) = tmp_path.glob("texts-*.npz")
    entry.write_bytes(b"PK\x03\x04 truncated")
    again = embed_texts(enc, ["red", "blue"], cache=cache)
    assert enc.texts_encoded == 4
    np.testing.assert_array_equal(again, first)


def test_no_cache_dir_means_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cache = EmbeddingCache(None)
    enc = ColourEncoder()
    embed_texts(enc, ["red"], cache=cache)
    embed_texts(enc, ["red"], cache=cache)
    assert enc.texts_encoded == 2 and list(tmp_path.iterdir()) == []


def test_unwritable_cache_is_a_library_error(tmp_path):
    from clipsearch.errors import LibraryError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LibraryError, match="cannot write the eval cache"):
        embed_texts(ColourEncoder(), ["red"], cache=EmbeddingCache(blocker / "sub"))
