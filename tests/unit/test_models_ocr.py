"""The OCR reader: real PP-OCRv4 (rapidocr-onnxruntime) on pictures rendered here."""

from __future__ import annotations

import sys

import pytest

from clipsearch.errors import MissingDependencyError, UsageError
from clipsearch.models.ocr import RapidTextReader, text_reader
from clipsearch.store.texts import squash
from tests.textimages import sign_picture


@pytest.fixture(scope="module")
def reader() -> RapidTextReader:
    return text_reader()


def test_reads_the_words_on_a_sign(reader):
    lines = reader.read(sign_picture("FRESH STRAWBERRIES"))
    assert len(lines) == 1
    assert squash(lines[0].text) == "freshstrawberries"
    assert 0.5 <= lines[0].score <= 1.0
    xs = [x for x, _ in lines[0].box]
    assert min(xs) > 0 and max(xs) < 640  # corners in the picture's own pixels


def test_lines_come_top_to_bottom(reader):
    lines = reader.read(sign_picture("OPEN\nSUNDAYS", size=(640, 480)))
    assert [squash(line.text) for line in lines] == ["open", "sundays"]


def test_a_picture_without_text_reads_nothing(reader):
    assert reader.read(sign_picture(None, "red")) == []


def test_small_text_in_a_large_picture_is_read_from_the_full_resolution(reader):
    # 30-px words on a 2400-px wide picture: ~8 px tall on the detector's 640-px copy,
    # readable only because recognition crops the picture as given.
    picture = sign_picture("PLATFORM 9", size=(2400, 1600), font_size=30)
    assert [squash(line.text) for line in reader.read(picture)] == ["platform9"]


def test_the_reader_is_shared_and_named_by_its_settings():
    assert text_reader() is text_reader()
    reader = text_reader(detect_side=480)
    assert reader is not text_reader()
    assert "PP-OCRv4" in reader.name and "det480" in reader.name


def test_bad_settings_are_usage_errors():
    with pytest.raises(UsageError, match="detect_side"):
        RapidTextReader(detect_side=10)
    with pytest.raises(UsageError, match="min_score"):
        RapidTextReader(min_score=2)


def test_missing_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)  # import fails
    with pytest.raises(MissingDependencyError, match=r"clipsearch\[ocr\]"):
        RapidTextReader()
