"""Video frame decoding with PyAV (docs/video.md): the frames a `FrameSampler` asks for.

`decode_frames` (or the streaming `FrameReader`) returns the frames a sampler asks for,
downscaled and turned upright. Container probing lives in `video_probe` (`probe_video`,
`VideoInfo`, re-exported here) and the damage-surviving packet decoder in `video_decoder`.

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
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from clipsearch.errors import CorruptMediaError, UsageError
from clipsearch.media.cuts import CutDetector
from clipsearch.media.sampling import (
    NO_INDEX_SEEK_S,
    SEEK_COST_FRAMES,
    FrameSampler,
    Shot,
    choose_mode,
    detect_shots,
)
from clipsearch.media.video_decoder import TIME_EPS, StreamDecoder
from clipsearch.media.video_probe import (
    VideoInfo,
    keyframe_times,
    open_container,
    probe_container,
    probe_video,
    scaled_size,
    video_stream,
)

__all__ = [
    "MODES",
    "DecodeMode",
    "DecodedVideo",
    "FrameReader",
    "SampledFrame",
    "VideoInfo",
    "decode_frames",
    "keyframe_times",
    "probe_video",
]

DecodeMode = Literal["auto", "sequential", "seek", "keyframes"]
MODES = ("auto", "sequential", "seek", "keyframes")
SHOT_DETECT_WIDTH = 128  # frames are shrunk to this width for shot detection


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
    # Shot boundaries [(start, end)] covering the video: PySceneDetect's for the shots
    # sampler, else cuts found on the frames this decode produced (`media.cuts`).
    shots: list[Shot] | None = None
    targets: np.ndarray = field(default_factory=lambda: np.zeros(0))  # requested times (s)


class FrameReader:
    """Streams the sampled frames of one video; use `decode_frames` to get them all at once.

    ``with FrameReader(path, sampler) as r: for f in r: ...``. ``info``, ``mode``,
    ``targets`` are known after construction (shots: after iteration starts); ``warning``
    and ``shots`` are final once iteration ends. ``shots`` are the shot boundaries: for
    the shots sampler PySceneDetect's, else cuts found on the frames the decode produced
    anyway (`clipsearch.media.cuts`; None if iteration stopped early).

    Args:
        path: video file.
        sampler: a `FrameSampler` or its string form (``"fps:1"``).
        max_side: long side of returned images (short side kept >= 224; never upscaled).
        mode: ``auto`` | ``sequential`` | ``seek`` | ``keyframes`` (approximate).
        threads: codec threads; 0 lets FFmpeg use every core (frame + slice threading),
            1 decodes on the calling thread only (use in multi-process pipelines).
        detect_cuts: find shot boundaries on the decoded frames (``shots``); costs a few
            tens of microseconds per decoded frame.
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
        detect_cuts: bool = True,
    ) -> None:
        if mode not in MODES:
            raise UsageError(f"unknown decode mode {mode!r}; use one of {', '.join(MODES)}")
        if max_side < 16:
            raise UsageError(f"max_side must be at least 16, got {max_side}")
        self.path = Path(path)
        self.sampler = FrameSampler.parse(sampler) if isinstance(sampler, str) else sampler
        self.max_side, self.threads, self.requested_mode = max_side, threads, mode
        self.detect_cuts = detect_cuts
        with open_container(path) as container:
            self.info, self._ops = probe_container(container, path)
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
        self._container = open_container(self.path)
        try:
            self._stream = video_stream(self._container, self.path)
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
            self._dec = StreamDecoder(self._container, self._stream)
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
        cuts = CutDetector() if self.detect_cuts and not self.sampler.needs_shots else None
        dec.on_frame = cuts.observe if cuts is not None else None
        kept_times: list[float] = []
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
            kept_times.append(t)
            if cuts is not None:
                cuts.keep(t, frame)
            yield SampledFrame(t, image)
        if cuts is not None:
            self.shots = cuts.shots(np.asarray(kept_times), self.info.duration)
        self.warning = self._compose_warning(dec)
        if self.kept == 0:
            raise CorruptMediaError(
                f"{self.path}: no frame could be decoded ({self.warning or 'empty stream'})"
            )

    def _size(self) -> tuple[int, int]:
        w, h = self.info.width, self.info.height
        if self.info.rotation in (90, 270):  # scale in coded orientation, rotate after
            w, h = h, w
        return scaled_size(w, h, self.max_side)

    # --- the three decode strategies: each yields (t, av.VideoFrame) to keep -------------
    def _sequential(self, dec: StreamDecoder) -> Iterator[tuple[float, Any]]:
        targets, i, last, kept_t = self.targets, 0, None, -math.inf
        for frame in dec.frames(targets):
            t = dec.time(frame)
            if t + TIME_EPS >= targets[i]:
                kept_t = t
                yield t, frame
                while i < len(targets) and t + TIME_EPS >= targets[i]:
                    i += 1
                if i == len(targets):
                    return
            last = (t, frame)
        self._unreached = float(targets[i])
        if last is not None and last[0] > kept_t:  # targets past the end get the last frame
            yield last

    def _seek(self, dec: StreamDecoder) -> Iterator[tuple[float, Any]]:
        kf, fps = self._keyframes, self.info.fps or 25.0
        frames: Iterator[Any] | None = None
        cur, kept_t, last = -math.inf, -math.inf, None
        for target in self.targets:
            if kept_t + TIME_EPS >= target:
                continue  # the frame kept for the previous target is at/after this one too
            if frames is None or self._worth_seeking(target, cur, kf, fps):
                frames = self._seek_before(dec, target)
            for frame in frames:
                cur = dec.time(frame)
                last = (cur, frame)
                if cur + TIME_EPS >= target:
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
        i = int(np.searchsorted(kf, target + TIME_EPS, side="right")) - 1
        return i >= 0 and (kf[i] - cur) * fps > SEEK_COST_FRAMES

    def _seek_before(self, dec: StreamDecoder, target: float) -> Iterator[Any]:
        """Frames from a keyframe before ``target``: if the decoder starts after it (decode
        times in the index, imprecise seeks without one), seek 1, 2, 4... s earlier, down to
        the start of the stream, which is always early enough. So seek mode stays exact."""
        back = 0.0
        while True:
            dec.seek(target - back)
            frames = dec.frames(self.targets[self.targets >= target - TIME_EPS])
            first = next(frames, None)
            if first is None or dec.time(first) <= target + TIME_EPS or target - back <= 0:
                break
            back = max(1.0, 2 * back)
        return frames if first is None else chain([first], frames)

    def _keyframe_pairs(self, dec: StreamDecoder) -> Iterator[tuple[float, Any]]:
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
            if t > kept_t + TIME_EPS:
                kept_t = t
                yield t, frame

    def _nearest_keyframes_scan(self, dec: StreamDecoder) -> Iterator[tuple[float, Any]]:
        targets, i, prev, kept_t = self.targets, 0, None, -math.inf
        for frame in dec.frames():
            t = dec.time(frame)
            while i < len(targets) and t + TIME_EPS >= targets[i]:
                near = prev if prev and targets[i] - prev[0] < t - targets[i] else (t, frame)
                if near[0] > kept_t + TIME_EPS:
                    kept_t = near[0]
                    yield near
                i += 1
            if i == len(targets):
                return
            prev = (t, frame)
        if prev is not None and prev[0] > kept_t + TIME_EPS:
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
    def _compose_warning(self, dec: StreamDecoder) -> str | None:
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
        claimed = self.info.header_duration
        if claimed is not None and claimed > self.info.duration:
            parts.append(
                f"the header says {claimed:.1f} s but the stream ends at "
                f"{self.info.duration:.1f} s (file truncated or damaged)"
            )
        elif self._unreached is not None and end is not None:
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
    detect_cuts: bool = True,
) -> DecodedVideo:
    """Decode the frames ``sampler`` asks for. See `FrameReader` for the arguments.

    Returns:
        `DecodedVideo` (frames in time order, upright RGB, long side <= ``max_side``).
    Raises:
        as `probe_video`; CorruptMediaError if no frame decodes; UsageError for a bad mode.
    """
    with FrameReader(
        path, sampler, max_side=max_side, mode=mode, threads=threads, detect_cuts=detect_cuts
    ) as reader:
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
