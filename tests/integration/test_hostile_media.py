"""Indexing files built to mislead: a video whose header lies about its length is indexed
by what its stream holds, in bounded time and memory, with the real duration stored."""

from __future__ import annotations

import pytest

from clipsearch.library import Library
from tests.fakes import ColourEncoder
from tests.unit.test_video_decode import forge_mkv_duration
from tests.videogen import make_video

pytest.importorskip("av")


def test_a_video_claiming_ten_billion_seconds_is_indexed_by_its_real_length(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    path = make_video(folder / "liar.mkv", [("red", 2.0), ("blue", 2.0)], fps=10, gop=10)
    forge_mkv_duration(path, 1e10)  # the header: 317 years

    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        report = lib.index([folder])
        assert report.encoded == 1 and report.failed == 0
        (hit,) = lib.search("blue", k=1)
        item = lib.catalog.item(hit.item_id)
        assert item.duration == pytest.approx(4.0, abs=0.15)
        assert "header says 10000000000.0 s" in (item.error or "")
        assert 0.0 <= hit.moment.start < hit.moment.end <= 4.1
