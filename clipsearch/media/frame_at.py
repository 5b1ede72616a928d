"""One video frame at a given time: what a thumbnail or a cross-encoder looks at.

`grab_video_frame` seeks to the keyframe before ``t`` and decodes forward to the first
frame presented at or after ``t`` (bounded by `MAX_FRAMES_AFTER_SEEK`), upright.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from clipsearch.errors import CorruptMediaError, MissingDependencyError, UnsupportedMediaError

DEFAULT_SIZE = 256
MAX_FRAMES_AFTER_SEEK = 1000  # cap on frames decoded from the seek point to the target


def grab_video_frame(path: Path | str, t: float, *, size: int = DEFAULT_SIZE) -> Image.Image:
    """The frame shown at ``t`` seconds (the first frame presented at or after ``t``, or
    the last one when ``t`` is past the end), upright, shorter side about ``size``.

    Seeks to the keyframe before ``t`` and decodes forward (at most
    ``MAX_FRAMES_AFTER_SEEK`` frames). Raises CorruptMediaError / UnsupportedMediaError.
    """
    try:
        import av
    except ImportError:  # pragma: no cover - av is a core dependency
        raise MissingDependencyError("av", "all") from None
    try:
        container = av.open(str(path))
    except Exception as e:  # av.error.* subclasses: not a video, damaged header
        raise CorruptMediaError(f"cannot open video ({e})") from e
    with container:
        if not container.streams.video:
            raise UnsupportedMediaError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = stream.time_base
        start_s = float(stream.start_time * tb) if stream.start_time is not None and tb else 0.0
        target = start_s + t
        chosen = None
        try:
            if tb:
                container.seek(int(target / tb), stream=stream, backward=True, any_frame=False)
            for n, frame in enumerate(container.decode(stream)):
                if frame.pts is None:
                    continue
                chosen = frame
                if frame.time is not None and frame.time >= target - 1e-3:
                    break
                if n >= MAX_FRAMES_AFTER_SEEK:
                    break
        except Exception as e:  # damaged packets: keep the last good frame if there is one
            if chosen is None:
                raise CorruptMediaError(f"cannot decode a frame at {t:.1f} s ({e})") from e
        if chosen is None:
            raise CorruptMediaError(f"no decodable frame at {t:.1f} s")
        w, h = chosen.width, chosen.height
        scale = min(1.0, size / min(w, h))
        frame_w, frame_h = max(2, round(w * scale)), max(2, round(h * scale))
        image = chosen.reformat(width=frame_w, height=frame_h, format="rgb24").to_image()
        rotation = int(getattr(chosen, "rotation", 0) or 0) % 360
        if rotation:
            # PyAV reports the display rotation counter-clockwise, as PIL's rotate() takes it.
            image = image.rotate(rotation, expand=True)
        return image
