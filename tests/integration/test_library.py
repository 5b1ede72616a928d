"""The core path a user walks: index a folder, search it, re-index incrementally.

Uses the deterministic ColourEncoder (tests/fakes.py): an image mostly of colour X is
closest to a text naming X, so assertions are about real ranking behaviour.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from clipsearch import Library
from clipsearch.errors import ModelMismatchError, NotFoundError, QueryError
from tests.fakes import ColourEncoder, make_image

COLOURS = ["red", "green", "blue", "yellow", "magenta", "cyan"]


class CountingEncoder(ColourEncoder):
    """Counts how many images reach the model, so tests can prove nothing is re-encoded."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.encoded = 0

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        self.encoded += len(pixels)
        return super().encode_pixels(pixels)


class OtherEncoder(ColourEncoder):
    """Same code, another model: a library bound to ColourEncoder must refuse it."""

    fingerprint = "other-model-fingerprint"
    spec = "fake:other"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for i, c in enumerate(COLOURS):
        folder = root / "sub" if i % 2 else root
        make_image(folder / f"{c}.jpg", c)
    return root


@pytest.fixture
def lib(tmp_path: Path):
    enc = CountingEncoder()
    with Library(tmp_path / "lib", encoder=enc) as lib:
        yield lib


def test_index_then_text_search_ranks_the_named_colour_first(lib, photos):
    report = lib.index([photos])
    assert report.scanned == len(COLOURS)
    assert report.encoded == len(COLOURS) and report.failed == 0
    for colour in COLOURS:
        hits = lib.search(f"a {colour} thing", k=3)
        assert Path(hits[0].path).name == f"{colour}.jpg"
        assert hits[0].kind == "image"
        assert hits[0].score >= hits[1].score >= hits[2].score
        assert [h.rank for h in hits] == [1, 2, 3]


def test_image_query_returns_the_query_image_first(lib, photos):
    lib.index([photos])
    query = photos / "sub" / "green.jpg"
    hits = lib.search(image=query, k=2)
    assert hits[0].path == str(query)
    assert hits[0].score == pytest.approx(1.0, abs=1e-2)


def test_an_image_modified_by_a_text_finds_what_the_text_asks_for(lib, photos):
    """`search --image blue.jpg --text red`: the composed vector moves from the example
    image towards the text as its weight grows, by either composition."""
    lib.index([photos])
    blue = photos / "blue.jpg"

    def top(vector):
        return Path(lib.search(vector=vector, k=1)[0].path).name

    for method in ("slerp", "sum"):
        assert top(lib.compose_image_text(blue, "red", method=method, text_weight=0.0)) == (
            "blue.jpg"
        )
        assert top(lib.compose_image_text(blue, "red", method=method, text_weight=0.9)) == (
            "red.jpg"
        )
    with pytest.raises(QueryError, match="empty"):
        lib.compose_image_text(blue, "   ")


def test_reindex_unchanged_encodes_nothing(lib, photos):
    lib.index([photos])
    before = lib.encoder.encoded
    report = lib.index([photos])
    assert report.unchanged == len(COLOURS)
    assert report.added == 0 and report.reused == 0
    assert lib.encoder.encoded == before


def test_new_and_changed_files_are_encoded_once(lib, photos):
    lib.index([photos])
    before = lib.encoder.encoded

    def red_score() -> float:
        hits = lib.search("red", k=len(COLOURS) + 1)
        return next(h.score for h in hits if Path(h.path).name == "red.jpg")

    assert red_score() > 0.5  # a red picture matches "red"
    make_image(photos / "orange.jpg", "orange")
    make_image(photos / "red.jpg", "blue", size=(80, 60))  # content changed in place
    report = lib.index([photos])
    assert report.added == 2
    assert lib.encoder.encoded == before + 2
    assert "red.jpg" in {Path(h.path).name for h in lib.search("blue", k=2)}  # now blue
    # Its stored vector is the new picture's: no red left in it. (Every picture without red
    # scores 0 for "red", so which of them comes first is a tie, not asserted.)
    assert red_score() < 0.05


def test_move_copy_delete(lib, photos):
    lib.index([photos])
    before = lib.encoder.encoded
    shutil.move(photos / "red.jpg", photos / "sub" / "moved-red.jpg")
    shutil.copy(photos / "sub" / "green.jpg", photos / "green copy.jpg")
    os.remove(photos / "blue.jpg") if (photos / "blue.jpg").exists() else os.remove(
        photos / "sub" / "blue.jpg"
    )
    report = lib.index([photos])
    assert report.reused == 2, report
    assert report.deleted == 2  # red.jpg moved away, blue.jpg gone
    assert lib.encoder.encoded == before  # nothing re-encoded
    names = {Path(h.path).name for h in lib.search("red", k=10)}
    assert "moved-red.jpg" in names and "red.jpg" not in names and "blue.jpg" not in names
    assert "green copy.jpg" in names
    st = lib.status().to_dict()
    assert st["items"]["total"] == len(COLOURS)  # 6 - 2 deleted + 2 new paths


def test_bad_files_are_recorded_and_do_not_stop_the_run(lib, photos):
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "text.png").write_text("not an image")
    good = (photos / "red.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (photos / "we ird ñame\u2603.jpg").write_bytes(good)
    report = lib.index([photos])
    failed = {Path(f["path"]).name: f["error"] for f in lib.status().failures}
    assert "empty.jpg" in failed and "text.png" in failed
    assert all(failed.values())  # every failure says why
    assert report.failed == len(failed)
    assert "we ird ñame\u2603.jpg" not in failed
    assert len(lib.search("red", k=20)) == report.scanned - report.failed


def test_failed_files_are_not_retried_unless_asked(lib, photos):
    from clipsearch.ingest import IndexOptions

    (photos / "bad.jpg").write_bytes(b"garbage")
    lib.index([photos])
    assert lib.index([photos]).added == 0
    assert lib.index([photos], options=IndexOptions(retry_failed=True)).added == 1


def test_missing_folder_is_a_clear_error(lib, tmp_path):
    with pytest.raises(NotFoundError, match="not found"):
        lib.index([tmp_path / "nope"])


def test_library_bound_to_one_model(tmp_path, photos):
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        lib.index([photos])

    with (
        Library(tmp_path / "lib", encoder=OtherEncoder()) as lib,
        pytest.raises(ModelMismatchError),
    ):
        lib.index([photos])


def test_query_image_that_is_not_an_image(lib, photos, tmp_path):
    lib.index([photos])
    bogus = tmp_path / "query.jpg"
    bogus.write_text("hello")
    with pytest.raises(QueryError, match="query image"):
        lib.search(image=bogus)


def test_paging_and_k_larger_than_collection(lib, photos):
    lib.index([photos])
    everything = lib.search("red", k=100)
    assert len(everything) == len(COLOURS)
    page2 = lib.search("red", k=2, offset=2)
    assert [h.item_id for h in page2] == [h.item_id for h in everything[2:4]]
    assert lib.search("red", k=5, offset=50) == []


def test_weighted_and_negative_terms_move_the_ranking(lib, photos):
    lib.index([photos])
    assert Path(lib.search('"red" + "0.2:blue"', k=1)[0].path).name == "red.jpg"
    assert Path(lib.search('"0.2:red" + "blue"', k=1)[0].path).name == "blue.jpg"
    names = [Path(h.path).name for h in lib.search('"red" - "red"  + "green"', k=6)]
    assert names[0] == "green.jpg"


def test_where_filters(lib, photos):
    lib.index([photos])
    sub = lib.search("red", k=10, where=[f"path:{photos / 'sub'}/*"])
    assert sub and all("/sub/" in h.path for h in sub)
    assert lib.search("red", k=10, where=["path:/definitely/not/here/*"]) == []
    assert lib.search("red", k=10, kind="video") == []


def test_overlapping_roots_index_each_file_once(lib, photos):
    report = lib.index([photos, photos / "sub", photos])
    assert report.scanned == len(COLOURS) and report.encoded == len(COLOURS)
    assert lib.catalog.stats()["vectors"] == len(COLOURS)


def test_renamed_root_moves_items_without_ghosts(lib, photos, tmp_path):
    lib.index([photos])
    before = lib.encoder.encoded
    renamed = tmp_path / "renamed"
    photos.rename(renamed)
    report = lib.index([renamed])
    assert report.reused == len(COLOURS) and lib.encoder.encoded == before
    paths = [h.path for h in lib.search("red", k=50)]
    assert len(paths) == len(COLOURS) and all(p.startswith(str(renamed)) for p in paths)


def test_emptied_root_keeps_its_items(lib, photos, tmp_path):
    lib.index([photos])
    hidden_away = tmp_path / "away"
    photos.rename(hidden_away)
    photos.mkdir()  # the mount point of an unplugged drive: empty
    report = lib.index([photos])
    assert report.deleted == 0
    assert any("no media found" in why for _, why in report.scan_errors)
    assert lib.status().to_dict()["items"]["total"] == len(COLOURS)


def test_same_size_in_place_edit_is_re_encoded(lib, tmp_path):
    from PIL import Image

    root = tmp_path / "bmp"
    root.mkdir()
    Image.new("RGB", (512, 512), (255, 0, 0)).save(root / "pic.bmp")
    lib.index([root])
    assert Path(lib.search("red", k=1)[0].path).name == "pic.bmp"
    size = (root / "pic.bmp").stat().st_size
    Image.new("RGB", (512, 512), (0, 0, 255)).save(root / "pic.bmp")  # same size, new pixels
    assert (root / "pic.bmp").stat().st_size == size
    report = lib.index([root])
    assert report.encoded == 1 and report.reused == 0
    hit = lib.search("blue", k=1)[0]
    assert Path(hit.path).name == "pic.bmp" and hit.score > 0.5


def test_kind_and_where_forms(lib, photos):
    from clipsearch.store import ItemFilter

    lib.index([photos])
    assert lib.search("red", kind="video", where=ItemFilter()) == []
    assert len(lib.search("red", where="size<10MB", k=50)) == len(COLOURS)


def test_injected_encoder_of_another_model_is_refused_for_search(tmp_path, photos):
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        lib.index([photos])

    with (
        Library(tmp_path / "lib", encoder=OtherEncoder()) as lib,
        pytest.raises(ModelMismatchError),
    ):
        lib.search("red")


def test_missing_folder_fails_before_the_model_loads(tmp_path):
    with Library(tmp_path / "lib", model="ViT-B-32:no-such-tag") as lib:
        with pytest.raises(NotFoundError):
            lib.index([tmp_path / "nope"])
        assert not lib.model_loaded
