"""Capture times: EXIF (with and without an offset), video container tags, the mtime
fallback, and what counts as "not set"."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from PIL import Image

from clipsearch.media.capture_time import (
    CaptureTime,
    capture_time,
    container_capture_time,
    exif_capture_time,
    image_capture_time,
    parse_container_time,
    parse_exif_datetime,
)
from tests.videogen import make_video

ORIGINAL, SUBSEC, OFFSET = 0x9003, 0x9291, 0x9011
DIGITIZED, OFFSET_DIGITIZED = 0x9004, 0x9012
MTIME = 1_500_000_000 * 10**9


def ns(dt: datetime) -> int:
    return round(dt.timestamp() * 1e6) * 1000


@pytest.fixture
def berlin_zone():
    """Run in a zone with summer time, so "local time" is not UTC by accident."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def photo_with_exif(path, tags: dict[int, str]) -> None:
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    for tag, value in tags.items():
        ifd[tag] = value
    Image.new("RGB", (32, 24), "red").save(path, exif=exif)


def test_exif_original_with_offset_is_that_instant():
    got = parse_exif_datetime("2021:07:04 10:30:00", subsec="25", offset="+02:00")
    want = datetime(2021, 7, 4, 10, 30, 0, 250000, tzinfo=timezone(timedelta(hours=2)))
    assert got == CaptureTime(ns(want), 120, "exif")
    assert got.isoformat() == "2021-07-04T10:30:00+02:00"  # the wall clock where it was taken


def test_exif_without_offset_is_the_local_wall_clock(berlin_zone):
    got = parse_exif_datetime("2021:01:15 08:00:00")
    assert got is not None and got.offset_min is None
    assert got.ns == ns(datetime(2021, 1, 15, 7, 0, tzinfo=UTC))  # CET = UTC+1 in January
    assert got.isoformat() == "2021-01-15T08:00:00+01:00"


@pytest.mark.parametrize(
    "value",
    [None, "", "0000:00:00 00:00:00", "    :  :     :  :  ", "2021:13:01 00:00:00", "garbage"],
)
def test_blank_zeroed_or_malformed_exif_dates_are_not_dates(value):
    assert parse_exif_datetime(value) is None


def test_a_date_in_the_future_is_a_wrong_clock():
    future = datetime.now() + timedelta(days=30)
    assert parse_exif_datetime(future.strftime("%Y:%m:%d %H:%M:%S")) is None


def test_digitized_stands_in_for_a_missing_original():
    got = exif_capture_time({DIGITIZED: "2019:02:03 04:05:06", OFFSET_DIGITIZED: "-05:00"})
    assert got is not None and got.offset_min == -300
    assert got.ns == ns(datetime(2019, 2, 3, 9, 5, 6, tzinfo=UTC))
    both = exif_capture_time(
        {ORIGINAL: "2018:01:01 00:00:00", OFFSET: "Z", DIGITIZED: "2019:01:01 00:00:00"}
    )
    assert both is not None and both.ns == ns(datetime(2018, 1, 1, tzinfo=UTC))


def test_a_bad_offset_keeps_the_date_as_local_time(berlin_zone):
    got = parse_exif_datetime("2021:07:04 10:30:00", offset="+99:99")
    assert got is not None and got.offset_min is None
    assert got.ns == ns(datetime(2021, 7, 4, 8, 30, tzinfo=UTC))  # CEST = UTC+2


@pytest.mark.parametrize(
    ("value", "when", "offset"),
    [
        ("2020-05-01T12:00:00.000000Z", datetime(2020, 5, 1, 12, tzinfo=UTC), None),
        ("2020-05-01T14:00:00+0200", datetime(2020, 5, 1, 12, tzinfo=UTC), 120),
        ("2020-05-01 12:00:00", datetime(2020, 5, 1, 12, tzinfo=UTC), None),  # no zone: UTC
    ],
)
def test_container_times(value, when, offset):
    assert parse_container_time(value) == CaptureTime(ns(when), offset, "container")


@pytest.mark.parametrize("value", ["1904-01-01T00:00:00.000000Z", "1970-01-01T00:00:00Z", "", None])
def test_zero_container_dates_mean_not_set(value):
    assert parse_container_time(value) is None


def test_apple_creation_date_wins_over_creation_time():
    tags = [
        {"creation_time": "2020-05-01T12:00:00Z"},
        {"com.apple.quicktime.creationdate": "2020-05-01T09:00:00-0400", "creation_time": "x"},
    ]
    got = container_capture_time(tags)
    assert got is not None and got.offset_min == -240
    assert got.ns == ns(datetime(2020, 5, 1, 13, tzinfo=UTC))
    assert container_capture_time([{}, {"creation_time": "2021-01-01T00:00:00Z"}]).ns == ns(
        datetime(2021, 1, 1, tzinfo=UTC)
    )


def test_files_jpeg_webp_video_and_the_mtime_fallback(tmp_path):
    tags = {ORIGINAL: "2021:07:04 10:30:00", OFFSET: "+02:00"}
    want = ns(datetime(2021, 7, 4, 8, 30, tzinfo=UTC))
    for name in ("a.jpg", "a.webp"):
        photo_with_exif(tmp_path / name, tags)
        got = capture_time(tmp_path / name, "image", mtime_ns=MTIME)
        assert (got.ns, got.offset_min, got.source) == (want, 120, "exif"), name
    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (8, 8)).save(plain)
    assert capture_time(plain, "image", mtime_ns=MTIME) == CaptureTime(MTIME, None, "mtime")
    clip = make_video(tmp_path / "c.mp4", metadata={"creation_time": "2020-05-01T12:00:00Z"})
    got = capture_time(clip, "video", mtime_ns=MTIME)
    assert (got.ns, got.source) == (ns(datetime(2020, 5, 1, 12, tzinfo=UTC)), "container")
    bare = make_video(tmp_path / "bare.mp4")
    assert capture_time(bare, "video", mtime_ns=MTIME).source == "mtime"


def test_damaged_or_missing_files_fall_back_to_mtime(tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe1 this is not really a jpeg")
    assert image_capture_time(junk) is None
    assert capture_time(junk, "image", mtime_ns=MTIME).source == "mtime"
    assert capture_time(tmp_path / "gone.mp4", "video", mtime_ns=MTIME).source == "mtime"
