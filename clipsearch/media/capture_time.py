"""When a photo or video was taken, as its file says, else when the file was last changed.

Sources, in order (the first that gives a plausible time wins; which one is recorded):

- ``exif`` (images): EXIF ``DateTimeOriginal`` (0x9003) with ``SubSecTimeOriginal`` and
  ``OffsetTimeOriginal`` (0x9011, EXIF 2.31), else ``DateTimeDigitized`` (0x9004) with its
  sub-seconds and ``OffsetTimeDigitized``. ``DateTime`` (0x0132) is not used: software
  rewrites it on every edit. A time without an offset is the camera's wall clock in an
  unknown zone; it is read in this computer's local zone (as photo managers do) and the
  offset is left unknown.
- ``container`` (videos): Apple's ``com.apple.quicktime.creationdate`` (local time with
  its offset), else the container's ``creation_time`` (UTC, MP4/MOV/MKV), else the
  first video stream's ``creation_time``. Zero dates (1904-01-01, the QuickTime epoch;
  1970-01-01) mean "not set" and are skipped.
- ``mtime``: the file's modification time, when neither gives a time.

A time more than a day in the future, or before 1826 (the oldest photograph), is taken
for a wrong clock and skipped. Reading never fails: damaged metadata means the next
source.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from clipsearch.media.scan import MediaKind

TakenSource = Literal["exif", "container", "mtime"]
TAKEN_SOURCES: tuple[TakenSource, ...] = ("exif", "container", "mtime")

_EXIF_IFD = 0x8769
_DATE_TAGS = (  # (date-time, sub-seconds, offset) tags, best first
    (0x9003, 0x9291, 0x9011),  # DateTimeOriginal, SubSecTimeOriginal, OffsetTimeOriginal
    (0x9004, 0x9292, 0x9012),  # DateTimeDigitized, SubSecTimeDigitized, OffsetTimeDigitized
)
_EXIF_DATE = re.compile(
    r"\s*(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?\s*"
    r"(Z|[+\-]\d{2}:?\d{2})?\s*"
)
_OFFSET = re.compile(r"\s*(Z|([+\-])(\d{2}):?(\d{2}))\s*")
_EARLIEST = datetime(1826, 1, 1, tzinfo=UTC)
_UNSET_CONTAINER_BEFORE = datetime(1971, 1, 1, tzinfo=UTC)  # 1904/1970 zero dates
_CONTAINER_KEYS = ("com.apple.quicktime.creationdate", "creation_time")


@dataclass(frozen=True)
class CaptureTime:
    """When an item was taken.

    ns: the instant, unix time in nanoseconds (UTC).
    offset_min: the UTC offset of the local time where it was taken, in minutes east,
        when the file says (EXIF OffsetTimeOriginal, Apple's creation date); else None.
    source: where it came from: "exif", "container" or "mtime".
    """

    ns: int
    offset_min: int | None
    source: TakenSource

    def to_datetime(self) -> datetime:
        """An aware datetime in the offset where it was taken, else in this computer's zone."""
        instant = datetime.fromtimestamp(self.ns / 1e9, tz=UTC)
        if self.offset_min is not None:
            return instant.astimezone(timezone(timedelta(minutes=self.offset_min)))
        return instant.astimezone()

    def isoformat(self) -> str:
        """ISO 8601 with the offset, to the second: ``2023-06-30T14:05:00+02:00``."""
        return self.to_datetime().isoformat(timespec="seconds")

    @classmethod
    def from_mtime(cls, mtime_ns: int) -> CaptureTime:
        return cls(int(mtime_ns), None, "mtime")


def capture_time(path: str | Path, kind: MediaKind, *, mtime_ns: int) -> CaptureTime:
    """The capture time of the file at ``path`` (module docstring for the sources);
    ``mtime_ns`` is the fallback. Never raises."""
    found = image_capture_time(path) if kind == "image" else video_capture_time(path)
    return found or CaptureTime.from_mtime(mtime_ns)


def image_capture_time(path: str | Path) -> CaptureTime | None:
    """The EXIF capture time of an image file, or None (no EXIF, unreadable, implausible)."""
    from PIL import Image

    try:
        with Image.open(path) as im:  # reads the header only, no pixels
            exif = im.getexif()
            ifd = dict(exif.get_ifd(_EXIF_IFD))
    except Exception:  # a damaged file or header: the decoder reports the file itself
        return None
    return exif_capture_time(ifd)


def exif_capture_time(ifd: Mapping[int, Any]) -> CaptureTime | None:
    """The capture time from the tags of an EXIF sub-IFD (tag number -> value)."""
    for date_tag, subsec_tag, offset_tag in _DATE_TAGS:
        found = parse_exif_datetime(
            ifd.get(date_tag), subsec=ifd.get(subsec_tag), offset=ifd.get(offset_tag)
        )
        if found is not None:
            return found
    return None


def parse_exif_datetime(
    value: object, *, subsec: object = None, offset: object = None
) -> CaptureTime | None:
    """``"2023:06:30 14:05:00"`` (+ sub-seconds ``"25"``, offset ``"+02:00"``) -> a
    CaptureTime (source "exif"), or None for blank, zeroed or implausible values."""
    text = _text(value)
    m = _EXIF_DATE.fullmatch(text) if text else None
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = m.group(7) or (_text(subsec) or "").strip()
    micro = int((fraction + "000000")[:6]) if fraction.isdigit() else 0
    offset_min = _offset_minutes(_text(offset)) if offset is not None else None
    if offset_min is None and m.group(8):
        offset_min = _offset_minutes(m.group(8))
    try:
        wall = datetime(year, month, day, hour, minute, second, micro)
        if offset_min is None:
            instant = wall.astimezone(UTC)  # naive: this computer's local zone
        else:
            instant = wall.replace(tzinfo=timezone(timedelta(minutes=offset_min)))
    except (ValueError, OverflowError, OSError):
        return None
    return _plausible(instant, offset_min, "exif", earliest=_EARLIEST)


def video_capture_time(path: str | Path) -> CaptureTime | None:
    """The container's creation time of a video file, or None."""
    try:
        from clipsearch.media.video_decoder import import_av

        av = import_av()
        with av.open(str(path), metadata_errors="replace") as container:
            tags = [dict(container.metadata)]
            tags += [dict(s.metadata) for s in container.streams.video[:1]]
    except Exception:  # PyAV missing, or not a readable container
        return None
    return container_capture_time(tags)


def container_capture_time(tags: Sequence[Mapping[str, Any]]) -> CaptureTime | None:
    """The creation time from container tags: the container's own first, then its
    streams'; Apple's creation date (with its local offset) before ``creation_time``."""
    for key in _CONTAINER_KEYS:
        for metadata in tags:
            found = parse_container_time(metadata.get(key))
            if found is not None:
                return found
    return None


def parse_container_time(value: object) -> CaptureTime | None:
    """ISO 8601 from a container (``2023-06-30T12:05:00.000000Z``,
    ``2023-06-30T14:05:00+0200``) -> a CaptureTime (source "container"), or None for a
    missing, zero or implausible date. A time without a zone is UTC (the MP4 convention)."""
    text = _text(value)
    if not text:
        return None
    m = _EXIF_DATE.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = m.group(7) or ""
    micro = int((fraction + "000000")[:6])
    zone = m.group(8)
    offset_min = _offset_minutes(zone) if zone else None
    try:
        wall = datetime(year, month, day, hour, minute, second, micro)
        tz = timezone(timedelta(minutes=offset_min)) if offset_min is not None else UTC
        instant = wall.replace(tzinfo=tz)
    except (ValueError, OverflowError):
        return None
    # "Z" or no zone: a UTC instant, the local offset is unknown
    keep = offset_min if zone and zone != "Z" else None
    return _plausible(instant, keep, "container", earliest=_UNSET_CONTAINER_BEFORE)


def _plausible(
    instant: datetime, offset_min: int | None, source: TakenSource, *, earliest: datetime
) -> CaptureTime | None:
    if instant < earliest or instant.timestamp() > time.time() + 86400:
        return None
    seconds = instant.timestamp()
    ns = round(seconds * 1_000_000) * 1000
    return CaptureTime(ns, offset_min, source)


def _offset_minutes(text: str | None) -> int | None:
    """``"+02:00"``, ``"-0530"``, ``"Z"`` -> minutes east of UTC; None when malformed."""
    if not text:
        return None
    m = _OFFSET.fullmatch(text)
    if m is None:
        return None
    if m.group(1) == "Z":
        return 0
    minutes = int(m.group(3)) * 60 + int(m.group(4))
    if minutes > 14 * 60 or int(m.group(4)) >= 60:
        return None
    return -minutes if m.group(2) == "-" else minutes


def _text(value: object) -> str | None:
    """An EXIF/metadata value as text (bytes decoded, NULs dropped), or None."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    text = str(value).replace("\x00", "").strip()
    return text or None
