"""Generate small test videos with PyAV: coloured scenes with exact cut times, an optional
moving shape, variable frame rate, rotation metadata, an audio track; and damage them.

Nothing is downloaded: PyAV ships libx264 and AAC encoders.

Ground truth. Frame ``k`` has presentation time ``frame_times(...)[k]`` seconds, exactly
(pts are integers in the stream time base, 1/fps for CFR and 1/1000 s for VFR). A frame's
colour is the colour of the scene whose half-open interval ``[start, end)`` holds that
time, so a cut at 2.0 s is exact to the frame. ``scene_spans`` gives the intervals.

Colours are chosen so they survive yuv420p compression and can be told apart by nearest
RGB (see ``COLOURS``). With ``moving_shape=True`` a white square slides left to right
once per scene, so frames inside a scene differ from each other (useful to check that two
decoders returned *the same* frame, not just a frame of the same colour).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

# One palette for generated test media and the synthetic benchmark.
from clipsearch.eval.synthetic import COLOURS

Scene = tuple[str | tuple[int, int, int], float]

# VFR frame-duration pattern in milliseconds (cycled): mean 40 ms = 25 fps nominal.
_VFR_PATTERN_MS = (20, 40, 60, 40, 20, 60)


def scene_spans(scenes: Sequence[Scene]) -> list[tuple[str, float, float]]:
    """[(name, start_s, end_s)] for each scene (tuples are named ``"r,g,b"``)."""
    out, t = [], 0.0
    for colour, dur in scenes:
        name = colour if isinstance(colour, str) else ",".join(map(str, colour))
        out.append((name, t, t + dur))
        t += dur
    return out


def frame_times(scenes: Sequence[Scene], *, fps: int = 25, vfr: bool = False) -> list[float]:
    """Exact presentation times (s) of every frame ``make_video`` writes for these arguments."""
    return [pts * float(tb) for pts, tb in _frame_pts(scenes, fps=fps, vfr=vfr)]


def scene_at(scenes: Sequence[Scene], t: float) -> str:
    """Name of the scene shown at time ``t`` (the last one if ``t`` is past the end)."""
    spans = scene_spans(scenes)
    for name, start, end in spans:
        if start <= t < end:
            return name
    return spans[-1][0]


def nearest_colour(rgb: Sequence[float]) -> str:
    """Name of the ``COLOURS`` entry nearest to ``rgb`` (e.g. a decoded frame's mean)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return min(COLOURS, key=lambda name: float(np.sum((np.asarray(COLOURS[name]) - rgb) ** 2)))


def _frame_pts(scenes: Sequence[Scene], *, fps: int, vfr: bool) -> list[tuple[int, Fraction]]:
    total = sum(d for _, d in scenes)
    if not vfr:
        tb = Fraction(1, fps)
        n = round(total * fps)
        return [(k, tb) for k in range(n)]
    tb = Fraction(1, 1000)
    out, pts, k = [], 0, 0
    while pts < round(total * 1000):
        out.append((pts, tb))
        pts += _VFR_PATTERN_MS[k % len(_VFR_PATTERN_MS)] * 25 // fps
        k += 1
    return out


def _rgb(colour: str | tuple[int, int, int]) -> tuple[int, int, int]:
    return COLOURS[colour] if isinstance(colour, str) else tuple(colour)


def make_video(
    path: str | Path,
    scenes: Sequence[Scene] = (("red", 2.0), ("blue", 3.0)),
    *,
    fps: int = 25,
    size: tuple[int, int] = (160, 120),
    codec: str = "libx264",
    gop: int = 50,
    vfr: bool = False,
    rotation: int = 0,
    hflip: bool = False,
    moving_shape: bool = False,
    audio: bool = False,
    faststart: bool = True,
    preset: str = "veryfast",
    pattern: np.ndarray | None = None,
    texture: bool = False,
    crf: int = 23,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write a video of coloured scenes and return its path.

    Args:
        path: output file; the suffix picks the container (.mp4, .mkv, .mov, .ts...).
        scenes: (colour name or RGB, duration s) in order.
        fps: frame rate (nominal rate for ``vfr``).
        size: coded (width, height); even numbers for yuv420p.
        codec: encoder name (libx264 by default; B-frames on, as cameras do).
        gop: keyframe interval in frames (fixed: x264 scene-cut keyframes are disabled).
        vfr: variable frame rate: frame durations cycle through 20/40/60 ms (at 25 fps).
        rotation: display rotation, degrees clockwise (0/90/180/270), written as the
            container's display matrix (what phones write for portrait video).
        hflip: the display matrix also mirrors left-right (as some front cameras write).
        moving_shape: draw a white square that slides across each scene.
        audio: add an AAC sine-tone track as long as the video.
        faststart: for .mp4/.mov, put the index (moov) first, as phones and web exports
            do; a truncated file then still has its index.
        preset: x264 speed preset.
        pattern: an (H, W, 3) uint8 picture drawn on every frame instead of the scene colour
            (e.g. to check orientation); scenes still set durations.
        texture: blend a smooth random texture that pans like a camera (fixed seed), so
            the bitrate and decode cost look like real footage (for benchmarks; frames are
            built in yuv420p, ``moving_shape`` and ``pattern`` are ignored; height % 4 == 0).
        crf: x264 constant-rate factor (quality).
        metadata: container tags, e.g. ``{"creation_time": "2020-05-01T12:00:00Z"}``.
    """
    import av

    path = Path(path)
    w, h = size
    options = {}
    if faststart and path.suffix.lower() in {".mp4", ".mov", ".m4v"}:
        options["movflags"] = "+faststart"
    frames = _frame_pts(scenes, fps=fps, vfr=vfr)
    spans = scene_spans(scenes)
    with av.open(str(path), "w", options=options) as container:
        container.metadata.update(metadata or {})
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        stream.time_base = frames[0][1]
        stream.codec_context.time_base = frames[0][1]
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {
                "preset": preset,
                "crf": str(crf),
                "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
            }
        if rotation % 360 or hflip:
            stream.set_display_rotation(-rotation, hflip=hflip)  # PyAV: counter-clockwise
        astream = None
        if audio:
            astream = container.add_stream("aac", rate=44100)
            astream.layout = "mono"
        tex = _TexturedScenes(scenes, w, h) if texture else None
        for pts, tb in frames:
            t = float(pts * tb)
            if tex is not None:
                frame = tex.frame(t)
            else:
                img = _draw(spans, scenes, t, w, h, moving_shape, pattern)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = pts
            frame.time_base = tb
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if astream is not None:
            _write_tone(container, astream, sum(d for _, d in scenes))
    return path


def _draw(spans, scenes, t, w, h, moving_shape, pattern) -> np.ndarray:
    if pattern is not None:
        return np.ascontiguousarray(pattern, dtype=np.uint8)
    idx = next((i for i, (_, s, e) in enumerate(spans) if s <= t < e), len(spans) - 1)
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[:] = _rgb(scenes[idx][0])
    if moving_shape:
        _, start, end = spans[idx]
        side = max(4, h // 4)
        x = int((t - start) / max(end - start, 1e-9) * (w - side))
        y = (h - side) // 2
        img[y : y + side, x : x + side] = 255
    return img


class _TexturedScenes:
    """Frames built directly in yuv420p (fast at 1080p): scene colour averaged with a smooth
    random texture (fixed seed) that pans 40 px/s, like a camera; bitrate looks like footage."""

    def __init__(self, scenes: Sequence[Scene], w: int, h: int) -> None:
        import av
        from PIL import Image

        rng = np.random.default_rng(0)
        rgb = np.zeros((h, 2 * w, 3), dtype=np.float32)
        for cell, weight in ((64, 0.6), (8, 0.3), (2, 0.1)):
            small = rng.integers(0, 256, (max(2, h // cell), max(2, 2 * w // cell), 3), np.uint8)
            big = Image.fromarray(small).resize((2 * w, h), Image.Resampling.BILINEAR)
            rgb += weight * np.asarray(big, dtype=np.float32)
        planes = self._planes(av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24"))
        self.tex = [p // 2 for p in planes]  # halves, so texture + colour fits in uint8
        self.spans, self.w, self.h = scene_spans(scenes), w, h
        self.colours = []
        for colour, _ in scenes:
            one = np.empty((2, 2, 3), dtype=np.uint8)
            one[:] = _rgb(colour)
            ys = self._planes(av.VideoFrame.from_ndarray(one, format="rgb24"))
            self.colours.append([int(p[0, 0]) // 2 for p in ys])

    @staticmethod
    def _planes(frame) -> list[np.ndarray]:
        yuv = frame.reformat(format="yuv420p")
        out = []
        for i, plane in enumerate(yuv.planes):
            pw = yuv.width if i == 0 else yuv.width // 2
            ph = yuv.height if i == 0 else yuv.height // 2
            arr = np.frombuffer(bytes(plane), np.uint8).reshape(ph, plane.line_size)
            out.append(arr[:, :pw].copy())
        return out

    def frame(self, t: float):
        import av

        idx = next((i for i, (_, s, e) in enumerate(self.spans) if s <= t < e), -1)
        dx = (int(t * 40) % (self.tex[0].shape[1] - self.w)) & ~1  # even: chroma aligned
        w, h = self.w, self.h
        y = self.tex[0][:, dx : dx + w] + self.colours[idx][0]
        u = self.tex[1][:, dx // 2 : dx // 2 + w // 2] + self.colours[idx][1]
        v = self.tex[2][:, dx // 2 : dx // 2 + w // 2] + self.colours[idx][2]
        packed = np.concatenate([y, u.reshape(h // 4, w), v.reshape(h // 4, w)])
        return av.VideoFrame.from_ndarray(packed, format="yuv420p")


def _write_tone(container, astream, seconds: float) -> None:
    import av

    rate, n = 44100, 1024
    total = int(seconds * rate)
    for start in range(0, total, n):
        k = np.arange(start, min(start + n, total))
        samples = (0.2 * np.sin(2 * np.pi * 440 * k / rate)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        container.mux(astream.encode(frame))
    container.mux(astream.encode(None))


def make_audio_only(path: str | Path, seconds: float = 1.0) -> Path:
    """Write an AAC-only file (no video stream) and return its path."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as container:
        astream = container.add_stream("aac", rate=44100)
        astream.layout = "mono"
        _write_tone(container, astream, seconds)
    return path


def truncate(path: str | Path, fraction: float) -> Path:
    """Cut the file in place to its first ``fraction`` of bytes (a partial download)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def corrupt_middle(path: str | Path, *, span: float = 0.1, seed: int = 0) -> Path:
    """Overwrite ``span`` of the file's bytes, centred on its middle, with random bytes."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    n = max(1, int(len(data) * span))
    start = (len(data) - n) // 2
    data[start : start + n] = np.random.default_rng(seed).integers(0, 256, n, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path
