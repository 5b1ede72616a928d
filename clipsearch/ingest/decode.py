"""Decoding one file for the encoder: image → pixels, video → sampled frames' pixels.

The same `FileDecoder` runs in the local pipeline's thread pool and inside every Ray
actor, so a file is decoded identically wherever it is encoded. It never raises for bad
media: a file that cannot be decoded comes back with ``error`` set (one bad file never
stops a run: docs/architecture.md#errors).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from clipsearch.errors import MediaError
from clipsearch.ingest.reading import FRAME_SIDE, TextReading
from clipsearch.ingest.tasks import FileTask
from clipsearch.media import load_image
from clipsearch.models.base import Encoder
from clipsearch.search.engine import decode_side
from clipsearch.store.records import TextRead


@dataclass
class DecodedFile:
    """A decoded file ready for encoding: pixels (n, 3, H, W), one row per vector."""

    task: FileTask
    pixels: np.ndarray | None = None
    timestamps: np.ndarray | None = None  # video frames only
    cuts: np.ndarray | None = None  # videos: shot cut times found while decoding
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    error: str | None = None  # failed: why
    warning: str | None = None  # ok but partial (e.g. video damaged mid-stream)
    cancelled: bool = False  # stopped mid-file (Ctrl-C): not written, redone next run
    text: TextRead | None = None  # what was read in the picture (OCR), if it was read

    @property
    def text_only(self) -> bool:
        """An indexed item decoded only to read its text (no pixels, nothing encoded)."""
        return self.task.item_id is not None

    @property
    def rows(self) -> int:
        """Vectors this file will produce before pooling (0 when it failed)."""
        return 0 if self.pixels is None or self.error is not None else len(self.pixels)


class Stopped(Exception):
    """Raised inside a decode worker when the run is asked to stop."""


class FileDecoder:
    """Decodes and preprocesses files for one encoder.

    video_sampler, max_frames: see `clipsearch.media.sampling.FrameSampler.parse`.
    should_stop: polled between video frames; a stopped file comes back ``cancelled``.
    reading: when the run reads text in pictures (`clipsearch.ingest.reading`), the text
        is read from the picture just decoded, never from a second decode.
    Thread-safe: one instance serves a whole decode pool.
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        video_sampler: str = "auto",
        max_frames: int = 512,
        should_stop: Callable[[], bool] | None = None,
        reading: TextReading | None = None,
    ) -> None:
        self.encoder = encoder
        self.video_sampler = video_sampler
        self.max_frames = max_frames
        self.reading = reading
        self._should_stop = should_stop or (lambda: False)

    @functools.cached_property
    def _min_side(self) -> int:
        # Asked when the first file is decoded: a run with nothing to encode never loads a
        # deferred model (`clipsearch.models.deferred`).
        return decode_side(self.encoder)

    def _reading_for(self, kind: str) -> TextReading | None:
        return self.reading if self.reading is not None and self.reading.reads(kind) else None

    def decode(self, task: FileTask) -> DecodedFile:
        """Decode + preprocess one file. Never raises for bad media."""
        out = DecodedFile(task=task)
        try:
            if task.media.size == 0:
                raise MediaError("empty file")
            if task.media.kind == "image":
                reading = self._reading_for("image")
                side = reading.image_side(self._min_side) if reading else self._min_side
                img = load_image(task.media.path, min_side=side)
                out.width, out.height = img.width, img.height
                if reading:  # the decoded image itself: the file is decoded once
                    out.text = reading.read_image(img.image)
                if not out.text_only:
                    out.pixels = self.encoder.preprocess(img.image)[None]  # (1, 3, H, W)
            else:
                self._decode_video(task, out)
        except Stopped:
            out.cancelled, out.pixels = True, None
        except MediaError as e:
            out.error = str(e) or type(e).__name__
        except OSError as e:
            out.error = f"cannot read file: {e.strerror or e}"
        except Exception as e:  # one bad file must never stop a run
            out.error = f"unexpected error while decoding: {type(e).__name__}: {e}"
        return out

    def _decode_video(self, task: FileTask, out: DecodedFile) -> None:
        from clipsearch.media.sampling import FrameSampler
        from clipsearch.media.video import FrameReader

        sampler = FrameSampler.parse(self.video_sampler, max_frames=self.max_frames)
        times: list[float] = []
        pixels: list[np.ndarray] = []
        reading = self._reading_for("video")
        texts = reading.frame_texts() if reading else None
        # Stream frames and preprocess each at once: only model-sized pixels are kept.
        # One codec thread per video: the pool already runs one video per core.
        side = {"max_side": FRAME_SIDE} if reading else {}
        with FrameReader(task.media.path, sampler, threads=1, **side) as reader:
            for frame in reader:
                if self._should_stop():
                    raise Stopped
                times.append(frame.t)
                if texts is not None:
                    texts.add(frame.t, frame.image)
                if out.text_only:
                    continue
                # fp16 while waiting for the encoder halves the memory of long videos; the
                # rounding (~1e-3) is far below one 8-bit pixel step after normalisation.
                pixels.append(self.encoder.preprocess(frame.image).astype(np.float16))
            info, out.warning = reader.info, reader.warning
            if reader.shots is not None:
                out.cuts = np.array([start for start, _ in reader.shots[1:]], dtype=np.float64)
        if not times:
            raise MediaError("no frame could be decoded")
        out.text = texts.result() if texts is not None else None
        out.width, out.height, out.duration = info.width, info.height, info.duration
        out.timestamps = np.array(times, dtype=np.float64)
        if not out.text_only:
            out.pixels = np.stack(pixels)  # (F, 3, H, W)
