"""Text in pictures through the Library, end to end with the real OCR reader: index --ocr,
text queries fused with the model, quoted phrases, remembered settings, text read later
without re-encoding, changed files, video frames, status coverage.

Model: the ColourEncoder (tests/fakes.py), which sees colours and cannot read, so what a
word query finds, it finds through the text read in the pictures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clipsearch import Library
from clipsearch.errors import UsageError
from clipsearch.ingest import IndexOptions
from clipsearch.ingest import decode as decode_module
from clipsearch.store.texts import squash
from tests.fakes import ColourEncoder
from tests.textimages import text_video, write_sign

SIGNS = {
    "red_pizza.jpg": ("PIZZA", "red"),
    "blue_birthday.jpg": ("HAPPY BIRTHDAYANNA", "blue"),  # glued, as signs and readers do
    "yellow_exit.jpg": ("EXIT", "yellow"),
    "red_plain.jpg": (None, "red"),
    "green_plain.jpg": (None, "green"),
}


def write_signs(folder: Path, signs=SIGNS) -> Path:
    for name, (text, colour) in signs.items():
        write_sign(folder / name, text, colour)
    return folder


def names(hits) -> list[str]:
    return [Path(h.path).name for h in hits]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    folder = write_signs(tmp_path_factory.mktemp("ocr") / "photos")
    with Library(tmp_path_factory.mktemp("ocr") / "lib", encoder=ColourEncoder()) as lib:
        report = lib.index([folder], options=IndexOptions(ocr=True))
        assert report.encoded == len(SIGNS) and report.read == len(SIGNS)
        yield lib


def test_a_word_query_finds_the_picture_that_shows_it(lib):
    hits = lib.search("a sign saying pizza", k=3)
    assert names(hits)[0] == "red_pizza.jpg"
    match = hits[0].text_match
    assert squash(match.text) == "pizza" and match.terms == ("pizza",)
    assert hits[0].to_dict()["text_match"]["spans"] == [[0, 5]]
    assert all(h.text_match is None for h in hits[1:])


def test_a_picture_showing_every_word_looked_for_is_relevant_and_adds_to_the_answers(lib):
    alone = lib.search("a sign saying pizza", k=5, text_match=False)  # the model cannot read
    assert "red_pizza.jpg" not in names(alone.relevant)
    hits = lib.search("a sign saying pizza", k=5)
    assert names(hits)[0] == "red_pizza.jpg" and hits[0].relevant
    # what the model alone found relevant stays relevant: the text adds, it does not replace
    assert set(names(alone.relevant)) < set(names(hits.relevant))
    assert hits[: len(hits.relevant)] == hits.relevant  # the relevant ones come first
    assert names(lib.search('"happy birthday"').relevant) == ["blue_birthday.jpg"]
    # a text holding only some of the words is ranked up, but not vouched for
    partial = lib.search("pizza party", k=5, min_score=0.99)
    assert names(partial)[0] == "red_pizza.jpg" and not partial.relevant


def test_glued_words_are_found(lib):
    assert names(lib.search("birthday anna", k=1)) == ["blue_birthday.jpg"]


def test_a_visual_query_keeps_the_model_order_when_no_text_matches(lib):
    assert names(lib.search("green", k=1)) == ["green_plain.jpg"]
    plain = lib.search("green", text_match=False)
    assert names(lib.search("green")) == names(plain)


def test_text_match_can_be_turned_off(lib):
    assert names(lib.search("exit", k=1, text_match=False)) != ["yellow_exit.jpg"]
    hits = lib.search("exit", k=5, text_match=False)
    assert all(h.text_match is None for h in hits)


def test_quoted_words_must_appear_in_the_pictures_text(lib):
    assert names(lib.search('"happy birthday"')) == ["blue_birthday.jpg"]
    assert names(lib.search('red "pizza"')) == ["red_pizza.jpg"]
    assert lib.search('"pizza" "exit"') == []  # every phrase must be there
    # --no-phrases: quotes only delimit the model's terms, as before text was read
    assert len(lib.search('"happy birthday"', phrases=False)) == len(SIGNS)
    # weighted quoted terms stay model terms
    assert len(lib.search('"2:happy birthday"')) == len(SIGNS)


def test_the_text_filter_clause(lib):
    assert names(lib.search("red", where=["text:pizza"])) == ["red_pizza.jpg"]


def test_status_shows_ocr_coverage(lib):
    ocr = lib.status().to_dict()["ocr"]
    assert ocr["enabled"] is True and ocr["frames"] is False
    assert ocr["by_kind"]["image"] == {"items": 5, "read": 5, "with_text": 3}


def test_phrases_in_a_library_without_text(tmp_path):
    folder = write_signs(tmp_path / "photos", {"red.jpg": (None, "red")})
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        lib.index([folder])
        assert names(lib.search('"red"')) == ["red.jpg"]  # quotes delimit terms, as before
        with pytest.raises(UsageError, match="--ocr"):
            lib.search('"red"', phrases=True)


def test_reading_is_remembered_and_reads_indexed_files_without_encoding_them(tmp_path, monkeypatch):
    decoded: list[str] = []
    real_load = decode_module.load_image

    def counting_load(path, **kw):
        decoded.append(Path(path).name)
        return real_load(path, **kw)

    monkeypatch.setattr(decode_module, "load_image", counting_load)
    folder = write_signs(
        tmp_path / "photos", {k: SIGNS[k] for k in ("red_pizza.jpg", "red_plain.jpg")}
    )
    encoder = ColourEncoder()
    with Library(tmp_path / "lib", encoder=encoder) as lib:
        lib.index([folder])
        assert encoder.images_encoded == 2 and lib.search("pizza", k=1)[0].text_match is None
        assert lib.status().to_dict()["ocr"]["enabled"] is False

        decoded.clear()
        report = lib.index([folder], options=IndexOptions(ocr=True))
        assert (report.read, report.encoded, encoder.images_encoded) == (2, 0, 2)
        assert sorted(decoded) == ["red_pizza.jpg", "red_plain.jpg"]  # one decode per file
        assert names(lib.search("pizza", k=1)) == ["red_pizza.jpg"]

        write_sign(folder / "yellow_exit.jpg", "EXIT", "yellow")
        decoded.clear()
        report = lib.index([folder])  # no option: the library remembers --ocr
        assert (report.read, report.encoded) == (1, 1)
        assert decoded == ["yellow_exit.jpg"]  # read from the decode that fed the encoder
        assert names(lib.search("exit", k=1)) == ["yellow_exit.jpg"]

        assert lib.index([folder]).read == 0  # nothing left to read
        lib.index([folder], options=IndexOptions(ocr=False))
        assert lib.status().to_dict()["ocr"]["enabled"] is False
        write_sign(folder / "blue.jpg", "TAXI", "blue")
        assert lib.index([folder]).read == 0


def test_a_changed_picture_is_read_again(tmp_path):
    folder = write_signs(tmp_path / "photos", {"sign.jpg": ("PIZZA", "red")})
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        lib.index([folder], options=IndexOptions(ocr=True))
        write_sign(folder / "sign.jpg", "PASTA", "red", size=(600, 400))
        lib.index([folder])
        assert lib.search('"pizza"') == []
        assert names(lib.search('"pasta"')) == ["sign.jpg"]


def test_video_frames_are_read_when_asked(tmp_path):
    folder = tmp_path / "videos"
    text_video(folder / "match.mp4", [(None, 1.0), ("GOAL", 1.0), (None, 1.0)])
    write_sign(folder / "poster.jpg", "CINEMA", "red")
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        lib.index([folder], options=IndexOptions(ocr=True))
        coverage = lib.status().to_dict()["ocr"]["by_kind"]
        assert coverage["video"]["read"] == 0 and coverage["image"]["read"] == 1

        report = lib.index([folder], options=IndexOptions(ocr_frames=True))
        assert report.read == 1 and report.encoded == 0  # the video, read without encoding
        hits = lib.search("goal", k=1)
        assert names(hits) == ["match.mp4"]
        match = hits[0].text_match
        assert squash(match.text) == "goal" and 1.0 <= match.t < 2.0  # when it appeared
        assert lib.status().to_dict()["ocr"]["frames"] is True


class FailingReader:
    """A `TextReader` that fails on every picture (a reader bug, an exotic image)."""

    name = "failing-reader"

    def read(self, image):
        raise RuntimeError("the reader crashed")


def test_a_reader_failure_never_fails_the_files_indexing(tmp_path):
    from clipsearch.ingest import Indexer

    folder = write_signs(tmp_path / "photos", {"red_pizza.jpg": SIGNS["red_pizza.jpg"]})
    text_video(folder / "clip.mp4", [("GOAL", 1.0)])
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        options = IndexOptions(ocr_frames=True)
        indexer = Indexer(lib.catalog, lib.encoder, options, text_reader=FailingReader())
        report = indexer.run([folder])
        assert (report.encoded, report.failed, report.read) == (2, 0, 0)
        coverage = lib.status().to_dict()["ocr"]["by_kind"]
        assert coverage["image"]["read"] == coverage["video"]["read"] == 0  # tried again later
        report = lib.index([folder])  # the real reader, remembered settings
        assert (report.encoded, report.read) == (0, 2)
        assert names(lib.search('"pizza"')) == ["red_pizza.jpg"]


def test_corrupt_pictures_are_recorded_failed_and_the_others_read(tmp_path):
    folder = write_signs(tmp_path / "photos", {"red_pizza.jpg": SIGNS["red_pizza.jpg"]})
    (folder / "garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a picture")
    whole = write_sign(tmp_path / "whole.jpg", "EXIT", "yellow").read_bytes()
    (folder / "cut.jpg").write_bytes(whole[:200])  # a header and nothing else
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        report = lib.index([folder], options=IndexOptions(ocr=True))
        assert (report.scanned, report.encoded, report.failed) == (3, 1, 2)
        assert report.read == 1
        failures = {Path(f["path"]).name for f in lib.status().to_dict()["failures"]}
        assert failures == {"garbage.jpg", "cut.jpg"}
        assert names(lib.search('"pizza"')) == ["red_pizza.jpg"]
        (folder / "cut.jpg").write_bytes(whole)  # repaired: indexed and read next run
        report = lib.index([folder])
        assert (report.encoded, report.read) == (1, 1)
        assert names(lib.search('"exit"')) == ["cut.jpg"]


def test_a_reader_failure_on_indexed_files_keeps_them_searchable(tmp_path):
    from clipsearch.ingest import Indexer

    folder = write_signs(
        tmp_path / "photos", {k: SIGNS[k] for k in ("red_pizza.jpg", "green_plain.jpg")}
    )
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        lib.index([folder])  # without text
        options = IndexOptions(ocr=True)
        indexer = Indexer(lib.catalog, lib.encoder, options, text_reader=FailingReader())
        report = indexer.run([folder])
        assert (report.encoded, report.failed, report.read) == (0, 0, 0)
        assert names(lib.search("green", k=1)) == ["green_plain.jpg"]  # vectors untouched
        assert lib.status().to_dict()["ocr"]["by_kind"]["image"] == {
            "items": 2,
            "read": 0,
            "with_text": 0,
        }
        assert lib.index([folder]).read == 2  # the real reader reads them next run
        assert names(lib.search('"pizza"')) == ["red_pizza.jpg"]
