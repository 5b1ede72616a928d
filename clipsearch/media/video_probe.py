"""Open a video container and read what it says about the video (details in docs/video.md).

`probe_video` reads container metadata and decodes the first frame to learn the
orientation: rotation follows the display matrix exactly as ``ffmpeg``'s autorotate does.
`keyframe_times` reads the container index that seek planning uses.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clipsearch.errors import (
    CorruptMediaError,
    MediaTooLargeError,
    NotFoundError,
    UnsupportedMediaError,
)
from clipsearch.media.video_decoder import StreamDecoder, error_reason, import_av

MIN_SHORT_SIDE = 224  # never downscale the short side below this (CLIP input size)
MAX_PIXELS = 8192 * 8192  # frame size cap (8K UHD is 33 MP)


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video's main video stream."""

    duration: float  # seconds, as the stream's packets say (see header_duration)
    width: int  # displayed width (after rotation and pixel aspect)
    height: int  # displayed height
    fps: float | None  # average frame rate; None if the container does not say
    rotation: int  # degrees clockwise the picture is turned for display (0/90/180/270)
    codec: str  # decoder name, e.g. "h264"
    frame_count: int  # estimate (container's count, else duration x fps)
    has_audio: bool
    # What the header claimed when the packets disagree (a truncated file, a forged
    # header); None when it agrees with ``duration`` or the header says nothing.
    header_duration: float | None = None


def open_container(path: str | Path) -> Any:
    """Open ``path`` with PyAV; NotFoundError / CorruptMediaError with what to do."""
    av = import_av()
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"no such video file: {p}")
    if p.stat().st_size == 0:
        raise CorruptMediaError(f"{p}: empty file (0 bytes); re-copy or re-export the video")
    try:
        return av.open(str(p), metadata_errors="replace")
    except av.error.FFmpegError as e:
        raise CorruptMediaError(
            f"{p}: not a readable video ({error_reason(e)}); the file is damaged, truncated "
            "or not a video: re-copy or re-export it"
        ) from None
    except OSError as e:
        raise CorruptMediaError(f"{p}: cannot read: {e}") from None


def video_stream(container: Any, path: str | Path) -> Any:
    """The main video stream (cover art skipped); typed errors if none, unknown or too big."""
    av = import_av()
    attached = av.stream.Disposition.attached_pic
    streams = [s for s in container.streams.video if not s.disposition & attached]
    if not streams:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise UnsupportedMediaError(
            f"{path}: no video stream (streams: {', '.join(kinds)}); audio-only files and "
            "cover art are not indexed as video"
        )
    stream = streams[0]
    if stream.codec_context is None:
        raise UnsupportedMediaError(
            f"{path}: unsupported video codec: unknown to FFmpeg (no decoder); convert the "
            "video to H.264 to index it"
        )
    w, h = stream.codec_context.width, stream.codec_context.height
    if w * h > MAX_PIXELS:
        raise MediaTooLargeError(
            f"{path}: frames are {w}x{h}, over the {MAX_PIXELS // 1_000_000} MP cap"
        )
    return stream


def _display_matrix(frame: Any) -> tuple[int, ...] | None:
    for sd in frame.side_data:
        if getattr(sd.type, "name", "") == "DISPLAYMATRIX":
            raw = bytes(sd)
            if len(raw) >= 36:
                return struct.unpack("=9i", raw[:36])
    return None


def _orientation(matrix: tuple[int, ...] | None) -> tuple[int, list[Image.Transpose]]:
    """(clockwise degrees, PIL ops) that put a frame upright, as ffmpeg's autorotate does.

    theta = -av_display_rotation_get(M) = atan2(M[1], M[0]); quarter turns with the flip
    tests of fftools (M[3] sign at 90/270, M[0]/M[4] signs at 180, M[4] at 0). The degrees
    are those of the rotation left once a mirror is taken out (a mirror alone reports 0).
    """
    if matrix is None:
        return 0, []
    s0, s1 = math.hypot(matrix[0], matrix[3]), math.hypot(matrix[1], matrix[4])
    if s0 == 0 or s1 == 0:
        return 0, []
    quarter = round(math.degrees(math.atan2(matrix[1] / s1, matrix[0] / s0)) / 90) % 4
    T = Image.Transpose
    if quarter == 1:  # TRANSPOSE = a quarter turn clockwise, then a mirror
        return 90, [T.TRANSPOSE if matrix[3] > 0 else T.ROTATE_270]
    if quarter == 3:  # TRANSVERSE = a quarter turn counter-clockwise, then a mirror
        return 270, [T.TRANSVERSE if matrix[3] < 0 else T.ROTATE_90]
    if quarter == 2:
        ops = [T.FLIP_LEFT_RIGHT] if matrix[0] < 0 else []
        ops += [T.FLIP_TOP_BOTTOM] if matrix[4] < 0 else []
        return (0 if ops == [T.FLIP_LEFT_RIGHT] else 180), ops  # a mirror alone: no turn
    return (180 if matrix[4] < 0 else 0), [T.FLIP_TOP_BOTTOM] if matrix[4] < 0 else []


def scaled_size(w: int, h: int, max_side: int) -> tuple[int, int]:
    """(w, h) scaled so the long side <= max_side, but the short side stays >= 224."""
    long_, short = max(w, h), min(w, h)
    scale = min(1.0, max(max_side / long_, min(MIN_SHORT_SIDE, short) / short))
    return max(2, round(w * scale)), max(2, round(h * scale))


def _duration(container: Any, stream: Any, dec: StreamDecoder) -> tuple[float, float | None]:
    """The video stream's length in seconds, as its packets say.

    A header's duration is a claim: a 38 KB file may say 10^10 s. The claim is checked
    by seeking to it and reading the remaining packets' times (one seek and one GOP of
    demuxing, no decoding, for an honest file); the real end replaces a claim that is off
    by more than a second (or 2%). Without a claim, or when the seek finds nothing, every
    packet's time is read. Returns (duration, the header's claim when it was replaced)."""
    claimed = None
    if stream.duration:
        claimed = float(stream.duration * stream.time_base)
    elif container.duration:
        claimed = container.duration / 1_000_000
    real = _last_packet_end(container, stream, dec, near=claimed)
    if real is None:
        return claimed or 0.0, None
    if claimed is None:
        return real, None
    if abs(real - claimed) <= max(1.0, 0.02 * real):
        return claimed, None
    return real, claimed


def _last_packet_end(
    container: Any, stream: Any, dec: StreamDecoder, *, near: float | None
) -> float | None:
    """End time (s from the stream start) of the stream's last packet, read from a seek
    to ``near`` onwards, else from the start; None when no packet has a time."""
    av = import_av()
    tb = stream.time_base
    if not tb:
        return None

    def scan() -> float | None:
        last = None
        try:
            for packet in container.demux(stream):
                if packet.pts is not None:
                    end = float((packet.pts + (packet.duration or 0) - dec.start_pts) * tb)
                    last = end if last is None else max(last, end)
        except (av.error.FFmpegError, OSError):
            pass  # damage past this point: the packets read so far are what there is
        return last

    found = None
    if near is not None and math.isfinite(near):
        try:
            target = dec.start_pts + int(min(near, 1e12) / tb)
            container.seek(target, stream=stream, backward=True, any_frame=False)
            found = scan()
        except (av.error.FFmpegError, OSError, OverflowError, ValueError):
            found = None
    if found is None:
        try:
            container.seek(dec.start_pts, stream=stream, backward=True, any_frame=False)
        except (av.error.FFmpegError, OSError):
            return None
        found = scan()
    return found


def probe_container(container: Any, path: str | Path) -> tuple[VideoInfo, list[Image.Transpose]]:
    """`VideoInfo` and the PIL transposes that turn this video's frames upright."""
    stream = video_stream(container, path)
    stream.codec_context.thread_count = 1  # one frame: threads would only add latency
    dec = StreamDecoder(container, stream)
    first = next(dec.frames(), None)
    if first is None:
        raise CorruptMediaError(
            f"{path}: no frame of the video stream could be decoded"
            + (f" ({dec.stopped})" if dec.stopped else "")
        )
    rotation, ops = _orientation(_display_matrix(first))
    duration, header_duration = _duration(container, stream, dec)
    sar = stream.sample_aspect_ratio or Fraction(1)
    w, h = max(1, round(first.width * sar)), first.height
    if rotation in (90, 270):
        w, h = h, w
    rate = stream.average_rate
    fps = float(rate) if rate else None
    count = (stream.frames if header_duration is None else 0) or (
        round(duration * fps) if fps else 0
    )
    info = VideoInfo(
        duration=duration,
        width=w,
        height=h,
        fps=fps,
        rotation=rotation,
        codec=stream.codec_context.name,
        frame_count=int(count),
        has_audio=len(container.streams.audio) > 0,
        header_duration=header_duration,
    )
    return info, ops


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video's metadata (and decode its first frame, to learn its orientation).

    Raises:
        NotFoundError: no such file.
        CorruptMediaError: empty, garbage, or no frame decodes.
        UnsupportedMediaError: no video stream (audio-only), or a codec FFmpeg cannot decode.
        MediaTooLargeError: frames over ``MAX_PIXELS``.
    """
    with open_container(path) as container:
        return probe_container(container, path)[0]


def keyframe_times(stream: Any) -> np.ndarray | None:
    """Sorted keyframe times (s from stream start) from the container index, or None.

    MP4/MOV index entries carry decode timestamps, so with B-frames these can precede the
    keyframe's presentation time by the reorder delay (a frame or two): good enough to
    plan seeks, never used as a frame's time.
    """
    entries = getattr(stream, "index_entries", None)  # absent in older PyAV: no index
    if entries is None or len(entries) == 0:
        return None
    start, tb = stream.start_time or 0, stream.time_base
    ts = np.fromiter((e.timestamp for e in entries if e.is_keyframe), dtype=np.int64)
    if ts.size == 0:
        return None
    return np.sort((ts - start).astype(np.float64) * float(tb))
