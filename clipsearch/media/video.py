"""Video probing and frame decoding with PyAV (DESIGN.md §4; details in docs/video.md).

`probe_video` reads container metadata; `decode_frames` (or the streaming `FrameReader`)
returns the frames a `FrameSampler` asks for, downscaled and turned upright.

Time: seconds from the video stream's start, ``(pts - stream.start_time) · time_base``,
never frame counts (VFR). For each target the exact modes return the first frame presented
at or after it (the last frame for targets past the end), each frame once.

Modes: ``sequential`` decodes from the start; ``seek`` jumps to the keyframe before a
target when that skips decoding (re-seeking earlier if the decoder starts past the target,
so it returns the same frames); both send packets that cannot be a target's frame with
``skip_frame = NONREF``. ``keyframes`` is APPROXIMATE: keyframes only, the nearest per
target. ``auto`` picks seek or sequential (`sampling.choose_mode`).

Damage: a packet that fails to decode, or a frame flagged corrupt, marks the stream
damaged until the next keyframe and the frames in between are dropped; decoding goes on,
and `DecodedVideo.warning` says what was lost. No decodable frame -> `CorruptMediaError`.
Rotation follows the display matrix exactly as ``ffmpeg``'s autorotate does.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from clipsearch.errors import (
    CorruptMediaError,
    MediaTooLargeError,
    MissingDependencyError,
    NotFoundError,
    UnsupportedMediaError,
    UsageError,
)
from clipsearch.media.sampling import (
    NO_INDEX_SEEK_S,
    SEEK_COST_FRAMES,
    FrameSampler,
    Shot,
    choose_mode,
    detect_shots,
)

DecodeMode = Literal["auto", "sequential", "seek", "keyframes"]
MODES = ("auto", "sequential", "seek", "keyframes")
MIN_SHORT_SIDE = 224  # never downscale the short side below this (CLIP input size)
MAX_PIXELS = 8192 * 8192  # frame size cap (8K UHD is 33 MP)
SHOT_DETECT_WIDTH = 128  # frames are shrunk to this width for shot detection
_EPS = 1e-6


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video's main video stream."""

    duration: float  # seconds
    width: int  # displayed width (after rotation and pixel aspect)
    height: int  # displayed height
    fps: float | None  # average frame rate; None if the container does not say
    rotation: int  # degrees clockwise the picture is turned for display (0/90/180/270)
    codec: str  # decoder name, e.g. "h264"
    frame_count: int  # estimate (container's count, else duration x fps)
    has_audio: bool


@dataclass(frozen=True)
class SampledFrame:
    """One decoded frame: its presentation time and an upright RGB image."""

    t: float  # seconds from the stream start
    image: Image.Image


@dataclass
class DecodedVideo:
    """The frames `decode_frames` kept, and what happened on the way."""

    info: VideoInfo
    frames: list[SampledFrame]
    warning: str | None = None  # set when frames were lost (damage, early end)
    mode: str = "sequential"  # the mode used ("auto" resolved)
    approximate: bool = False  # keyframes mode: frames are near, not at, the targets
    shots: list[Shot] | None = None  # shot boundaries (shots sampler only)
    targets: np.ndarray = field(default_factory=lambda: np.zeros(0))  # requested times (s)


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise MissingDependencyError("av", "video") from None
    return av


def _open(path: str | Path) -> Any:
    av = _av()
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"no such video file: {p}")
    if p.stat().st_size == 0:
        raise CorruptMediaError(f"{p}: empty file (0 bytes); re-copy or re-export the video")
    try:
        return av.open(str(p), metadata_errors="replace")
    except av.error.FFmpegError as e:
        raise CorruptMediaError(
            f"{p}: not a readable video ({_reason(e)}); the file is damaged, truncated "
            "or not a video: re-copy or re-export it"
        ) from None
    except OSError as e:
        raise CorruptMediaError(f"{p}: cannot read: {e}") from None


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _video_stream(container: Any, path: str | Path) -> Any:
    av = _av()
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


class _Decoder:
    """Decodes one stream from the container's current position, surviving damage."""

    def __init__(self, container: Any, stream: Any) -> None:
        self.container, self.stream = container, stream
        self.tb = stream.time_base
        self.start_pts = stream.start_time or 0
        self.bad_packets: list[float] = []  # times of packets that failed to decode
        self.skipped = 0  # damaged frames dropped
        self.stopped: str | None = None  # demuxing failed: the reason
        self.last_t: float | None = None

    def time(self, frame: Any) -> float:
        return float((frame.pts - self.start_pts) * self.tb)

    def frames(self, targets: np.ndarray | None = None) -> Iterator[Any]:
        """Decoded frames in presentation order from the current position.

        With ``targets`` (sorted seconds), packets that cannot hold the first frame at or
        after any pending target are sent with ``skip_frame = NONREF``: the decoder drops
        them if no other frame references them, and decodes them otherwise. Exact: a packet
        is decoded in full whenever its pts is the smallest seen so far at or after some
        pending target, so the true first frame >= each target is always decoded. (FFmpeg
        copies ``skip_frame`` per packet, also under frame threading.)
        """
        av = _av()
        packets = self.container.demux(self.stream)
        ctx = self.stream.codec_context
        n = 0 if targets is None else len(targets)
        best = [math.inf] * n  # smallest packet time seen at/after each target
        pending = 0  # targets[:pending] already have their frame out of the decoder
        skip = "DEFAULT"
        damaged = False
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except (av.error.FFmpegError, OSError) as e:
                self.stopped = _reason(e)
                return
            if n:
                need = pending >= n or packet.pts is None  # past the last target: all go
                if not need:
                    p = float((packet.pts - self.start_pts) * self.tb)
                    k = pending
                    while k < n and targets[k] <= p + _EPS:
                        if p < best[k]:
                            best[k], need = p, True
                        k += 1
                want = "DEFAULT" if need else "NONREF"
                if want != skip:
                    ctx.skip_frame = skip = want
            try:
                out = self.stream.decode(packet)
            except av.error.FFmpegError:
                pts = packet.pts if packet.pts is not None else packet.dts
                self.bad_packets.append(
                    float((pts - self.start_pts) * self.tb) if pts is not None else math.nan
                )
                damaged = True
                continue
            for frame in out:
                if frame.pts is None:
                    continue
                if frame.is_corrupt or (damaged and not frame.key_frame):
                    damaged = True
                    self.skipped += 1
                    continue
                damaged = False
                self.last_t = t = self.time(frame)
                while pending < n and t + _EPS >= targets[pending]:
                    pending += 1
                yield frame

    def keyframe_at(self, t: float) -> Any | None:
        """Seek to the keyframe at or before ``t`` s and decode just it (None: nothing there).

        The keyframe packet is decoded and the decoder drained at once: otherwise the
        B-frame reorder buffer would hold it back until more keyframes are decoded.
        """
        av = _av()
        self.seek(t)
        try:
            for packet in self.container.demux(self.stream):
                if packet.size == 0 or not packet.is_keyframe:
                    continue
                frames = [*self.stream.decode(packet), *self.stream.decode(None)]
                frame = next((f for f in frames if f.pts is not None and not f.is_corrupt), None)
                if frame is not None:
                    self.last_t = self.time(frame)
                    return frame
                self.bad_packets.append(float((packet.pts - self.start_pts) * self.tb))
                return None
        except av.error.FFmpegError as e:
            self.stopped = _reason(e)
        return None

    def seek(self, t: float) -> None:
        """Jump to (roughly) the keyframe at or before ``t`` s; t <= 0: the very start.

        Without an index (MPEG-TS) the demuxer bisects on timestamps and may land past the
        keyframe, even for t = 0; an hour before the start always lands on the first one.
        """
        if t <= 0:
            pts = self.start_pts - math.ceil(3600 / self.tb)
        else:
            pts = self.start_pts + math.floor(t / self.tb)
        self.container.seek(int(pts), stream=self.stream, backward=True)


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


def _scaled_size(w: int, h: int, max_side: int) -> tuple[int, int]:
    """(w, h) scaled so the long side <= max_side, but the short side stays >= 224."""
    long_, short = max(w, h), min(w, h)
    scale = min(1.0, max(max_side / long_, min(MIN_SHORT_SIDE, short) / short))
    return max(2, round(w * scale)), max(2, round(h * scale))


def _duration(container: Any, stream: Any, dec: _Decoder) -> float:
    if stream.duration:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    # No duration in the headers (raw streams, broken files): read every packet's pts.
    last = 0.0
    for packet in container.demux(stream):
        if packet.pts is not None:
            end = packet.pts + (packet.duration or 0) - dec.start_pts
            last = max(last, float(end * stream.time_base))
    return last


def _probe(container: Any, path: str | Path) -> tuple[VideoInfo, list[Image.Transpose]]:
    stream = _video_stream(container, path)
    stream.codec_context.thread_count = 1  # one frame: threads would only add latency
    dec = _Decoder(container, stream)
    first = next(dec.frames(), None)
    if first is None:
        raise CorruptMediaError(
            f"{path}: no frame of the video stream could be decoded"
            + (f" ({dec.stopped})" if dec.stopped else "")
        )
    rotation, ops = _orientation(_display_matrix(first))
    duration = _duration(container, stream, dec)
    sar = stream.sample_aspect_ratio or Fraction(1)
    w, h = max(1, round(first.width * sar)), first.height
    if rotation in (90, 270):
        w, h = h, w
    rate = stream.average_rate
    fps = float(rate) if rate else None
    count = stream.frames or (round(duration * fps) if fps else 0)
    info = VideoInfo(
        duration=duration,
        width=w,
        height=h,
        fps=fps,
        rotation=rotation,
        codec=stream.codec_context.name,
        frame_count=int(count),
        has_audio=len(container.streams.audio) > 0,
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
    with _open(path) as container:
        return _probe(container, path)[0]


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


class FrameReader:
    """Streams the sampled frames of one video; use `decode_frames` to get them all at once.

    ``with FrameReader(path, sampler) as r: for f in r: ...``. ``info``, ``mode``,
    ``targets`` are known after construction (shots: after iteration starts); ``warning``
    and ``shots`` are final once iteration ends.

    Args:
        path: video file.
        sampler: a `FrameSampler` or its string form (``"fps:1"``).
        max_side: long side of returned images (short side kept >= 224; never upscaled).
        mode: ``auto`` | ``sequential`` | ``seek`` | ``keyframes`` (approximate).
        threads: codec threads; 0 lets FFmpeg use every core (frame + slice threading),
            1 decodes on the calling thread only (use in multi-process pipelines).
    Raises (from the constructor): as `probe_video`, and UsageError for a bad mode/sampler.
    """

    def __init__(
        self,
        path: str | Path,
        sampler: FrameSampler | str = "auto",
        *,
        max_side: int = 448,
        mode: DecodeMode = "auto",
        threads: int = 0,
    ) -> None:
        if mode not in MODES:
            raise UsageError(f"unknown decode mode {mode!r}; use one of {', '.join(MODES)}")
        if max_side < 16:
            raise UsageError(f"max_side must be at least 16, got {max_side}")
        self.path = Path(path)
        self.sampler = FrameSampler.parse(sampler) if isinstance(sampler, str) else sampler
        self.max_side, self.threads, self.requested_mode = max_side, threads, mode
        with _open(path) as container:
            self.info, self._ops = _probe(container, path)
        self.shots: list[Shot] | None = None
        self.targets = np.zeros(0)
        if not self.sampler.needs_shots:
            self.targets = self.sampler.timestamps(self.info.duration)
        self.mode = "sequential"  # shots: pass 1 is sequential; the mode is chosen after it
        self._open_decoder(resolve=not self.sampler.needs_shots)
        self.warning: str | None = None
        self.kept = 0
        self._unreached: float | None = None

    @property
    def approximate(self) -> bool:
        """True in keyframes mode: frames are the keyframes nearest the targets."""
        return self.mode == "keyframes"

    def _open_decoder(self, *, resolve: bool) -> None:
        """Open the container for decoding; pick the mode; set codec threads for it."""
        self._container = _open(self.path)
        try:
            self._stream = _video_stream(self._container, self.path)
            self._keyframes = keyframe_times(self._stream)
            if resolve:
                self.mode = self.requested_mode
                if self.mode == "auto":
                    self.mode = choose_mode(
                        self.targets,
                        self._keyframes,
                        duration=self.info.duration,
                        fps=self.info.fps,
                        frame_count=self.info.frame_count,
                    )
            ctx = self._stream.codec_context
            ctx.thread_count = self.threads
            # Frame threading delays output by a frame per thread: after every seek in
            # keyframes mode that would decode the next keyframe too. Slices only there.
            if self.threads == 1:
                ctx.thread_type = "NONE"
            else:
                ctx.thread_type = "SLICE" if self.mode == "keyframes" else "AUTO"
            self._dec = _Decoder(self._container, self._stream)
        except BaseException:
            self._container.close()
            raise

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def __iter__(self) -> Iterator[SampledFrame]:
        if self.sampler.needs_shots and self.shots is None:
            self._find_shots()
        dec = self._dec
        if self.mode == "sequential":
            pairs = self._sequential(dec)
        elif self.mode == "seek":
            pairs = self._seek(dec)
        else:
            pairs = self._keyframe_pairs(dec)
        size = self._size()
        for t, frame in pairs:
            image = frame.to_image(width=size[0], height=size[1], interpolation="BILINEAR")
            for op in self._ops:
                image = image.transpose(op)
            self.kept += 1
            yield SampledFrame(t, image)
        self.warning = self._compose_warning(dec)
        if self.kept == 0:
            raise CorruptMediaError(
                f"{self.path}: no frame could be decoded ({self.warning or 'empty stream'})"
            )

    def _size(self) -> tuple[int, int]:
        w, h = self.info.width, self.info.height
        if self.info.rotation in (90, 270):  # scale in coded orientation, rotate after
            w, h = h, w
        return _scaled_size(w, h, self.max_side)

    # --- the three decode strategies: each yields (t, av.VideoFrame) to keep -------------
    def _sequential(self, dec: _Decoder) -> Iterator[tuple[float, Any]]:
        targets, i, last, kept_t = self.targets, 0, None, -math.inf
        for frame in dec.frames(targets):
            t = dec.time(frame)
            if t + _EPS >= targets[i]:
                kept_t = t
                yield t, frame
                while i < len(targets) and t + _EPS >= targets[i]:
                    i += 1
                if i == len(targets):
                    return
            last = (t, frame)
        self._unreached = float(targets[i])
        if last is not None and last[0] > kept_t:  # targets past the end get the last frame
            yield last

    def _seek(self, dec: _Decoder) -> Iterator[tuple[float, Any]]:
        kf, fps = self._keyframes, self.info.fps or 25.0
        frames: Iterator[Any] | None = None
        cur, kept_t, last = -math.inf, -math.inf, None
        for target in self.targets:
            if kept_t + _EPS >= target:
                continue  # the frame kept for the previous target is at/after this one too
            if frames is None or self._worth_seeking(target, cur, kf, fps):
                frames = self._seek_before(dec, target)
            for frame in frames:
                cur = dec.time(frame)
                last = (cur, frame)
                if cur + _EPS >= target:
                    kept_t = cur
                    yield cur, frame
                    break
            else:
                self._unreached = float(target)
                if last is not None and last[0] > kept_t:
                    yield last
                return

    @staticmethod
    def _worth_seeking(target: float, cur: float, kf: np.ndarray | None, fps: float) -> bool:
        if kf is None:
            return target - cur > NO_INDEX_SEEK_S
        i = int(np.searchsorted(kf, target + _EPS, side="right")) - 1
        return i >= 0 and (kf[i] - cur) * fps > SEEK_COST_FRAMES

    def _seek_before(self, dec: _Decoder, target: float) -> Iterator[Any]:
        """Frames from a keyframe before ``target``: if the decoder starts after it (decode
        times in the index, imprecise seeks without one), seek 1, 2, 4... s earlier, down to
        the start of the stream, which is always early enough. So seek mode stays exact."""
        back = 0.0
        while True:
            dec.seek(target - back)
            frames = dec.frames(self.targets[self.targets >= target - _EPS])
            first = next(frames, None)
            if first is None or dec.time(first) <= target + _EPS or target - back <= 0:
                break
            back = max(1.0, 2 * back)
        return frames if first is None else chain([first], frames)

    def _keyframe_pairs(self, dec: _Decoder) -> Iterator[tuple[float, Any]]:
        self._stream.codec_context.skip_frame = "NONKEY"
        kf = self._keyframes
        if kf is None:
            yield from self._nearest_keyframes_scan(dec)
            return
        idx = np.searchsorted(kf, self.targets)
        lo, hi = np.clip(idx - 1, 0, len(kf) - 1), np.clip(idx, 0, len(kf) - 1)
        nearest = np.where(self.targets - kf[lo] <= kf[hi] - self.targets, lo, hi)
        # Seek half-way to the next keyframe: index times are decode times, and a seek to
        # exactly one may land on the keyframe before it.
        after = np.append(kf[1:], max(self.info.duration, kf[-1] + 1.0))
        kept_t = -math.inf
        for i in np.unique(nearest):
            frame = dec.keyframe_at(float(kf[i] + after[i]) / 2)
            if frame is None:
                self._unreached = float(kf[i])
                return
            t = dec.time(frame)
            if t > kept_t + _EPS:
                kept_t = t
                yield t, frame

    def _nearest_keyframes_scan(self, dec: _Decoder) -> Iterator[tuple[float, Any]]:
        targets, i, prev, kept_t = self.targets, 0, None, -math.inf
        for frame in dec.frames():
            t = dec.time(frame)
            while i < len(targets) and t + _EPS >= targets[i]:
                near = prev if prev and targets[i] - prev[0] < t - targets[i] else (t, frame)
                if near[0] > kept_t + _EPS:
                    kept_t = near[0]
                    yield near
                i += 1
            if i == len(targets):
                return
            prev = (t, frame)
        if prev is not None and prev[0] > kept_t + _EPS:
            yield prev

    # --- shots --------------------------------------------------------------------------
    def _find_shots(self) -> None:
        """Pass 1: decode every frame small, detect cuts; then reopen for pass 2."""
        dec, w = self._dec, SHOT_DETECT_WIDTH
        h = max(2, round(w * self._stream.codec_context.height / self._stream.codec_context.width))

        def small() -> Iterator[tuple[int, np.ndarray]]:
            for frame in dec.frames():
                bgr = frame.to_ndarray(width=w, height=h, format="bgr24")
                yield frame.pts - dec.start_pts, bgr

        self.shots = detect_shots(
            small(),
            time_base=self._stream.time_base,
            frame_rate=self._stream.average_rate or 25,
            duration=self.info.duration,
        )
        self.targets = self.sampler.timestamps(self.info.duration, shots=self.shots)
        # Pass 2 on a fresh container (threads set for its mode); damage seen in pass 1 is
        # seen again in pass 2, so its bookkeeping starts afresh.
        self._container.close()
        self._open_decoder(resolve=True)

    # --- reporting ----------------------------------------------------------------------
    def _compose_warning(self, dec: _Decoder) -> str | None:
        parts = []
        if dec.bad_packets or dec.skipped:
            times = [t for t in dec.bad_packets if not math.isnan(t)]
            where = f" at {min(times):.1f}–{max(times):.1f} s" if times else ""
            parts.append(
                f"corrupt data{where}: {len(dec.bad_packets)} packet(s) failed to decode, "
                f"{dec.skipped} damaged frame(s) skipped"
            )
        if dec.stopped:
            parts.append(f"decoding stopped at {dec.last_t or 0.0:.1f} s: {dec.stopped}")
        end = dec.last_t
        if self._unreached is not None and end is not None:
            tol = max(0.5, 3.0 / (self.info.fps or 25.0))
            if end + tol < self._unreached or end + tol < self.info.duration - tol:
                parts.append(
                    f"no frames after {end:.1f} s of {self.info.duration:.1f} s "
                    "(file truncated or damaged)"
                )
        if not parts:
            return None
        return "; ".join(parts) + f"; kept {self.kept} frame(s)"


def decode_frames(
    path: str | Path,
    sampler: FrameSampler | str = "auto",
    *,
    max_side: int = 448,
    mode: DecodeMode = "auto",
    threads: int = 0,
) -> DecodedVideo:
    """Decode the frames ``sampler`` asks for. See `FrameReader` for the arguments.

    Returns:
        `DecodedVideo` (frames in time order, upright RGB, long side <= ``max_side``).
    Raises:
        as `probe_video`; CorruptMediaError if no frame decodes; UsageError for a bad mode.
    """
    with FrameReader(path, sampler, max_side=max_side, mode=mode, threads=threads) as reader:
        frames = list(reader)
        return DecodedVideo(
            info=reader.info,
            frames=frames,
            warning=reader.warning,
            mode=reader.mode,
            approximate=reader.approximate,
            shots=reader.shots,
            targets=reader.targets,
        )
