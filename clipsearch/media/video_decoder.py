"""The damage-surviving packet decoder under video probing and frame reading.

`StreamDecoder` decodes one video stream from the container's current position. A packet
that fails to decode, or a frame flagged corrupt, marks the stream damaged until the next
keyframe and the frames in between are dropped; decoding goes on and the decoder counts
what was lost (``bad_packets``, ``skipped``, ``stopped``) for the caller's warning. With
target times it sends packets that cannot be a target's frame with ``skip_frame = NONREF``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from clipsearch.errors import MissingDependencyError

TIME_EPS = 1e-6  # seconds: frame times this close to a target count as at it


def import_av() -> Any:
    """The ``av`` module (PyAV); MissingDependencyError naming the ``video`` extra if absent."""
    try:
        import av
    except ImportError:
        raise MissingDependencyError("av", "video") from None
    return av


def error_reason(e: BaseException) -> str:
    """A short reason for an FFmpeg/OS error, for messages."""
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


class StreamDecoder:
    """Decodes one stream from the container's current position, surviving damage."""

    def __init__(self, container: Any, stream: Any) -> None:
        self.container, self.stream = container, stream
        self.tb = stream.time_base
        self.start_pts = stream.start_time or 0
        self.bad_packets: list[float] = []  # times of packets that failed to decode
        self.skipped = 0  # damaged frames dropped
        self.stopped: str | None = None  # demuxing failed: the reason
        self.last_t: float | None = None
        # Called with (time, frame) for every frame decoded in full (e.g. a CutDetector).
        self.on_frame: Callable[[float, Any], None] | None = None

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
        av = import_av()
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
                self.stopped = error_reason(e)
                return
            if n:
                need = pending >= n or packet.pts is None  # past the last target: all go
                if not need:
                    p = float((packet.pts - self.start_pts) * self.tb)
                    k = pending
                    while k < n and targets[k] <= p + TIME_EPS:
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
                while pending < n and t + TIME_EPS >= targets[pending]:
                    pending += 1
                if self.on_frame is not None:
                    self.on_frame(t, frame)
                yield frame

    def keyframe_at(self, t: float) -> Any | None:
        """Seek to the keyframe at or before ``t`` s and decode just it (None: nothing there).

        The keyframe packet is decoded and the decoder drained at once: otherwise the
        B-frame reorder buffer would hold it back until more keyframes are decoded.
        """
        av = import_av()
        self.seek(t)
        try:
            for packet in self.container.demux(self.stream):
                if packet.size == 0 or not packet.is_keyframe:
                    continue
                frames = [*self.stream.decode(packet), *self.stream.decode(None)]
                frame = next((f for f in frames if f.pts is not None and not f.is_corrupt), None)
                if frame is not None:
                    self.last_t = self.time(frame)
                    if self.on_frame is not None:
                        self.on_frame(self.last_t, frame)
                    return frame
                self.bad_packets.append(float((packet.pts - self.start_pts) * self.tb))
                return None
        except av.error.FFmpegError as e:
            self.stopped = error_reason(e)
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
