"""Robust, fast image decoding for indexing and for query images.

``load_image`` turns any photo a person may have into an RGB ``PIL.Image`` that is as
small as the encoder allows, and turns every way a file can be bad into a typed error
with a short reason a user can read. What it does, in order:

1. open with Pillow, restricted to the formats we index (``_FORMATS``): an ``.eps`` or a
   text file named ``.jpg`` is rejected, not handed to an exotic plugin;
2. decompression-bomb guard: ``width × height > max_pixels`` raises before any pixel is
   decoded (a per-call check; Pillow's process-wide ``MAX_IMAGE_PIXELS`` is never changed,
   so its own hard limit of ``2 × MAX_IMAGE_PIXELS`` = 178,956,970 pixels still applies);
3. JPEG draft mode: libjpeg-turbo decodes at 1/2, 1/4 or 1/8 scale (DCT scaling), the
   largest reduction that keeps both sides ≥ ``min_side``, so the shorter side, whichever
   way the picture is rotated, stays ≥ ``min_side``. 4× faster than a full decode of
   1080p and 12 MP photos on the development machine (docs/architecture.md#performance);
4. mode conversion to RGB: transparency (P with a transparent index, PA, LA, RGBA…)
   composited on white; CMYK through its embedded ICC profile when it has one; 16-bit and
   32-bit greyscale (``I;16``, ``I``, ``F``) scaled to 8 bits rather than clipped;
5. for any format, an integer box reduction (``Image.reduce``) while the shorter side
   stays ≥ ``min_side``, so the result's shorter side is in [min_side, 2·min_side) for
   every image larger than that;
6. EXIF orientation applied (the table of ``ImageOps.exif_transpose``), on the small image.

Animated GIF / WebP / APNG give their first frame. HEIC/HEIF decode through
``pillow-heif`` when it is installed (registered once, on first use); AVIF is built into
Pillow ≥ 11.

Thread-safe: each call opens its own file object, closed before returning; Pillow
releases the GIL while decoding and resizing, so a thread pool scales
(docs/architecture.md#performance).
"""

from __future__ import annotations

import io
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

import numpy as np
from PIL import Image, ImageCms, UnidentifiedImageError

from clipsearch.errors import (
    CorruptMediaError,
    MediaError,
    MediaTooLargeError,
    UnsupportedMediaError,
    UsageError,
)

DEFAULT_MAX_PIXELS = 178_956_970  # Pillow's own hard limit, 2 × Image.MAX_IMAGE_PIXELS

ImageSource = Path | str | bytes
T = TypeVar("T")

# Pillow format ids we decode; anything else is refused. HEIF appears once pillow-heif
# registers its opener.
_WANTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", "DIB", "AVIF", "HEIF", "JPEG2000")

# EXIF orientation → the transpose that undoes it (as in ImageOps.exif_transpose).
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION_TAG = 0x0112

_TRANSPARENT_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})
_DEEP_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})


@dataclass(frozen=True, slots=True)
class DecodedImage:
    """A decoded picture, ready for an encoder's preprocessing."""

    image: Image.Image  # mode RGB, EXIF orientation applied, possibly reduced (see min_side)
    width: int  # original width in pixels, after EXIF orientation, before any reduction
    height: int  # original height in pixels, after EXIF orientation, before any reduction


def load_image(
    source: ImageSource,
    *,
    min_side: int | None = 224,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decode_bytes: int | None = None,
) -> DecodedImage:
    """Decode an image file (or its bytes) into RGB, small and upright.

    Args:
        source: a path, or the file's bytes (an upload).
        min_side: the encoder's input size. The image is decoded/reduced by an integer
            factor only while its shorter side stays ≥ ``min_side`` (JPEG draft mode, then
            ``Image.reduce``); an image already smaller is returned at full size.
            ``None`` decodes and returns the full resolution.
        max_pixels: refuse images with more pixels than this (decompression bombs).
            Values above Pillow's own hard limit (178,956,970 by default) cannot raise it.
        max_decode_bytes: refuse, from the header and before decoding anything, an image
            whose decode would need more memory than this at its peak (see
            `decode_cost`). JPEGs are measured after draft-mode scaling, so even a huge
            JPEG stays cheap; PNG, WebP, TIFF… decode at full size and cost what their
            pixels cost. None: no limit beyond ``max_pixels``.

    Returns:
        ``DecodedImage`` with the RGB image and the original (oriented) width and height.

    Raises:
        CorruptMediaError: empty, truncated, damaged, or not an image at all (a text
            file named ``.jpg``). The message is a short reason, e.g. "empty file",
            "truncated JPEG (image file is truncated)", "not an image (cannot identify
            image file)".
        UnsupportedMediaError: a real image in a format we do not decode (JPEG XL, HEIC
            without pillow-heif, a colour mode with no RGB conversion), or not a file.
        MediaTooLargeError: more than ``max_pixels`` pixels, or a decode costing more
            than ``max_decode_bytes``.
        MediaError: the file cannot be read (missing, permission denied).
        UsageError: ``min_side``, ``max_pixels`` or ``max_decode_bytes`` is not positive.
    """
    _check_limits(min_side, max_pixels, max_decode_bytes)
    return _with_image(source, lambda im: _to_decoded(im, min_side, max_pixels, max_decode_bytes))


def decode_cost(
    source: ImageSource,
    *,
    min_side: int | None = 224,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decode_bytes: int | None = None,
) -> int:
    """Bytes of memory `load_image` (same ``min_side``) needs at its peak for this image,
    estimated from the header alone: nothing is decoded.

    The estimate is the decoded picture at the size the decoder produces (JPEG after
    draft-mode scaling, every other format at full size) in Pillow's in-memory layout,
    plus the full-size copies the conversion to RGB makes (a white canvas and the alpha
    mask for transparent pictures, float arrays for 16/32-bit greyscale). A server
    reserves this much of its decode budget before decoding an upload.

    Raises the same errors as `load_image` for files that cannot be opened, and
    MediaTooLargeError above ``max_pixels`` or ``max_decode_bytes``.
    """
    _check_limits(min_side, max_pixels, max_decode_bytes)

    def measure(im: Image.Image) -> int:
        _check_pixels(im, max_pixels)
        size = im.size
        if min_side is not None:
            im.draft("RGB", (min_side, min_side))
        return _checked_cost(im, size, max_decode_bytes)

    return _with_image(source, measure)


def _check_limits(min_side: int | None, max_pixels: int, max_decode_bytes: int | None) -> None:
    if min_side is not None and min_side < 1:
        raise UsageError(f"min_side must be a positive number of pixels or None, not {min_side}")
    if max_pixels < 1:
        raise UsageError(f"max_pixels must be positive, not {max_pixels}")
    if max_decode_bytes is not None and max_decode_bytes < 1:
        raise UsageError(f"max_decode_bytes must be positive or None, not {max_decode_bytes}")


def _with_image(source: ImageSource, use: Callable[[Image.Image], T]) -> T:
    """Open ``source`` with Pillow (restricted formats) and return ``use(image)``, turning
    every failure into a typed MediaError; the file is closed before returning."""
    formats = _formats()
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if not data:
            raise CorruptMediaError("empty file")
        return _open_and_use(io.BytesIO(data), data[:64], formats, use)
    try:
        mode = os.stat(source).st_mode
        if stat.S_ISDIR(mode):
            raise UnsupportedMediaError("not a file (it is a folder)")
        if not stat.S_ISREG(mode):  # a FIFO would block open() forever
            raise UnsupportedMediaError("not a regular file")
        f = open(source, "rb")  # noqa: SIM115 - closed by the with-block just below
    except FileNotFoundError:
        raise MediaError("file not found") from None
    except OSError as e:
        raise MediaError(f"cannot read file ({(e.strerror or str(e)).lower()})") from e
    with f:
        try:
            head = f.read(64)
            f.seek(0)
        except OSError as e:
            raise MediaError(f"cannot read file ({(e.strerror or str(e)).lower()})") from e
        if not head:
            raise CorruptMediaError("empty file")
        return _open_and_use(f, head, formats, use)


def _open_and_use(
    fp: IO[bytes], head: bytes, formats: tuple[str, ...], use: Callable[[Image.Image], T]
) -> T:
    fmt = _sniff(head)[0] or "image"
    try:
        im = Image.open(fp, formats=formats)
    except Image.DecompressionBombError as e:
        raise MediaTooLargeError(f"image too large to decode safely ({_first_line(e)})") from None
    except UnidentifiedImageError:
        raise _unidentified(head) from None
    except MediaError:
        raise
    except MemoryError:
        raise MediaTooLargeError("out of memory while opening the image") from None
    except Exception as e:  # a plugin choking on a malformed header
        raise _damaged(fmt, e) from e
    with im:
        fmt = im.format or fmt
        try:
            return use(im)
        except MediaError:
            raise
        except MemoryError:
            raise MediaTooLargeError("out of memory while decoding the image") from None
        except Exception as e:  # Pillow decoders raise OSError, SyntaxError, ValueError...
            raise _damaged(fmt, e) from e


def _check_pixels(im: Image.Image, max_pixels: int) -> None:
    width, height = im.size
    if width * height > max_pixels:
        raise MediaTooLargeError(
            f"{width}x{height} image has {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,} (decompression-bomb guard)"
        )


def _pixel_bytes(mode: str) -> int:
    """Bytes a pixel takes in Pillow's memory (3-band images are stored as 4 bytes)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def _peak_bytes(im: Image.Image) -> int:
    """Peak memory of `_to_decoded` for ``im`` at its current (drafted) size and mode: the
    decoded picture plus the full-size images and arrays `_to_rgb` makes from it."""
    pixels = im.size[0] * im.size[1]
    mode = im.mode
    decoded = pixels * _pixel_bytes(mode)
    if mode == "RGB":
        conversion = 0
    elif mode in _DEEP_GREY_MODES:
        conversion = pixels * 3 * 8 + pixels * 5  # float64 working arrays, L and RGB images
    elif mode in _TRANSPARENT_MODES or "transparency" in im.info:
        # an RGBA copy (none when already RGBA), the white canvas and the alpha mask
        conversion = pixels * ((0 if mode == "RGBA" else 4) + 4 + 1)
    else:
        conversion = pixels * 4  # one RGB image
    return decoded + conversion


def _to_decoded(
    im: Image.Image, min_side: int | None, max_pixels: int, max_decode_bytes: int | None
) -> DecodedImage:
    _check_pixels(im, max_pixels)
    width, height = im.size
    if min_side is not None:
        im.draft("RGB", (min_side, min_side))  # JPEG only; a no-op for other formats
    _checked_cost(im, (width, height), max_decode_bytes)
    im.load()
    method = _ORIENTATION.get(_orientation(im))
    rgb = _to_rgb(im)
    if min_side is not None:
        factor = min(rgb.size) // min_side
        if factor >= 2:
            rgb = rgb.reduce(factor)
    if method is not None:
        rgb = rgb.transpose(method)
        if method in (
            Image.Transpose.TRANSPOSE,
            Image.Transpose.TRANSVERSE,
            Image.Transpose.ROTATE_90,
            Image.Transpose.ROTATE_270,
        ):
            width, height = height, width
    if rgb is im:  # never hand out the file-backed object itself
        rgb = im.copy()
    return DecodedImage(image=rgb, width=width, height=height)


def _checked_cost(im: Image.Image, size: tuple[int, int], limit: int | None) -> int:
    """`_peak_bytes` of the (drafted) image; MediaTooLargeError above ``limit``."""
    cost = _peak_bytes(im)
    if limit is not None and cost > limit:
        raise MediaTooLargeError(
            f"decoding this {size[0]}x{size[1]} {im.format or 'image'} needs about "
            f"{_size_text(cost)} of memory, more than the limit of {_size_text(limit)} "
            "(a JPEG of the same picture decodes at reduced scale and costs far less)"
        )
    return cost


def _size_text(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation (1..8), 1 when absent or unreadable: bad metadata must not
    cost the picture."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION_TAG, 1)
        return int(value) if int(value) in _ORIENTATION else 1
    except Exception:
        return 1


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in _DEEP_GREY_MODES:
        return _deep_grey_to_rgb(im)
    if mode == "CMYK":
        return _cmyk_to_rgb(im)
    if mode in _TRANSPARENT_MODES or "transparency" in im.info:
        return _on_white(im if mode == "RGBA" else im.convert("RGBA"))
    try:
        return im.convert("RGB")  # L, 1, P, YCbCr, HSV, I;16 variants with alpha...
    except ValueError as e:
        raise UnsupportedMediaError(f"colour mode {mode} cannot be converted to RGB") from e


def _on_white(rgba: Image.Image) -> Image.Image:
    """Composite on white: transparent logos and screenshots are drawn on white paper,
    and a black background (what dropping alpha gives) changes what CLIP sees."""
    canvas = Image.new("RGB", rgba.size, (255, 255, 255))
    canvas.paste(rgba, mask=rgba.getchannel("A"))
    return canvas


def _deep_grey_to_rgb(im: Image.Image) -> Image.Image:
    """16/32-bit greyscale to 8 bits by scaling, not clipping.

    ``I;16*``: v·255/65535. ``I`` (32-bit int, no declared depth): as 8-bit if every
    value fits in 0..255, as 16-bit if in 0..65535, else stretched from min..max.
    ``F``: ×255 if every value is in [0, 1], else stretched from min..max.
    """
    values = np.asarray(im)  # (H, W)
    if im.mode.startswith("I;16"):
        scaled = values.astype(np.float32) * (255.0 / 65535.0)
    else:
        values = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if im.mode == "F" and lo >= 0.0 and hi <= 1.0:
            scaled = values * 255.0
        elif im.mode == "I" and lo >= 0 and hi <= 255:
            scaled = values
        elif im.mode == "I" and lo >= 0 and hi <= 65535:
            scaled = values * (255.0 / 65535.0)
        elif hi > lo:
            scaled = (values - lo) * (255.0 / (hi - lo))
        else:
            scaled = np.zeros_like(values)
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


_SRGB: ImageCms.ImageCmsProfile | None = None


def _cmyk_to_rgb(im: Image.Image) -> Image.Image:
    """CMYK through the embedded ICC profile when there is one (print files from
    Photoshop carry one, and the naive formula shifts their colours); else Pillow's
    naive conversion."""
    icc = im.info.get("icc_profile")
    if icc:
        global _SRGB
        try:
            if _SRGB is None:
                _SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(im, source, _SRGB, outputMode="RGB")
            if converted is not None:
                return converted
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass  # a broken profile: fall back to the formula
    return im.convert("RGB")


# --- formats -----------------------------------------------------------------------------
_formats_lock = threading.Lock()
_formats_cache: tuple[str, ...] | None = None


def _formats() -> tuple[str, ...]:
    """The formats ``Image.open`` may try: registers plugins (and pillow-heif) once."""
    global _formats_cache
    if _formats_cache is None:
        with _formats_lock:
            if _formats_cache is None:
                Image.init()
                try:
                    import pillow_heif  # optional extra "heif"

                    pillow_heif.register_heif_opener()
                except ImportError:
                    pass
                _formats_cache = tuple(f for f in _WANTED_FORMATS if f in Image.OPEN)
    return _formats_cache


# (name, whether we decode it) by magic bytes, for error messages when Pillow cannot
# identify a file.
def _sniff(head: bytes) -> tuple[str | None, bool]:
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG", True
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG", True
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF", True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP", True
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF", True
    if head[:2] == b"BM":
        return "BMP", True
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF", "AVIF" in _formats()
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"):
            return "HEIF", "HEIF" in _formats()
        return "video", False
    if head.startswith(b"\xff\x0a") or head.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return "JPEG XL", False
    if head.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or head.startswith(b"\xff\x4f\xff\x51"):
        return "JPEG 2000", "JPEG2000" in _formats()
    if head.startswith(b"8BPS"):
        return "Photoshop", False
    return None, False


def _unidentified(head: bytes) -> MediaError:
    name, decodable = _sniff(head)
    if name is None:
        return CorruptMediaError("not an image (cannot identify image file)")
    if decodable:
        return CorruptMediaError(f"damaged {name} (cannot identify image file)")
    if name == "HEIF":
        return UnsupportedMediaError(
            "HEIC/HEIF image needs pillow-heif: pip install 'clipsearch[heif]'"
        )
    if name == "video":
        return UnsupportedMediaError("not an image (looks like a video file)")
    return UnsupportedMediaError(f"{name} images are not supported")


def _damaged(fmt: str, e: BaseException) -> CorruptMediaError:
    message = _first_line(e)
    if "truncated" in message.lower():
        return CorruptMediaError(f"truncated {fmt} (image file is truncated)")
    return CorruptMediaError(f"damaged {fmt} ({message})")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= 160 else line[:157] + "..."
