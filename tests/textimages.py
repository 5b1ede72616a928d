"""Pictures and videos with rendered words, for tests of text reading (OCR).

The font is the one Pillow ships (``ImageFont.load_default(size=...)``: FreeType is part
of Pillow's wheels), so nothing depends on the fonts installed on the machine. Words are
drawn black on a light sign over a background of one palette colour, large enough
(40–60 px) for PP-OCRv4 to read them reliably.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tests.fakes import PALETTE


def sign_picture(
    text: str | None,
    background: str = "blue",
    *,
    size: tuple[int, int] = (640, 400),
    font_size: int = 56,
) -> Image.Image:
    """A picture of one palette colour with ``text`` on a light sign (None: no sign)."""
    img = Image.new("RGB", size, PALETTE[background])
    if text:
        draw = ImageDraw.Draw(img)
        font = ImageFont.load_default(size=font_size)
        left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font)
        pad = font_size // 2
        w, h = right - left + 2 * pad, bottom - top + 2 * pad
        x, y = (size[0] - w) // 2, (size[1] - h) // 2
        draw.rectangle((x, y, x + w, y + h), fill=(245, 245, 240))
        draw.multiline_text((x + pad - left, y + pad - top), text, font=font, fill=(15, 15, 15))
    return img


def write_sign(path: Path, text: str | None, background: str = "blue", **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sign_picture(text, background, **kw).save(path, quality=95)
    return path


def text_video(
    path: Path,
    scenes: Sequence[tuple[str | None, float]],
    *,
    size: tuple[int, int] = (640, 400),
    fps: int = 4,
) -> Path:
    """An H.264 video whose scenes show signs: (text or None, seconds) in order."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        n = 0
        for text, seconds in scenes:
            picture = np.asarray(sign_picture(text, "green", size=size))
            for _ in range(round(seconds * fps)):
                frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
                frame.pts = n
                n += 1
                container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
