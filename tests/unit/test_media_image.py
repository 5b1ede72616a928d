"""load_image: every kind of picture a person may have decodes upright, in RGB, small,
and every kind of bad file becomes a typed error with a readable reason."""

from __future__ import annotations

import gc
import io
import os
import struct
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsearch.errors import (
    CorruptMediaError,
    MediaError,
    MediaTooLargeError,
    UnsupportedMediaError,
    UsageError,
)
from clipsearch.media import DecodedImage, load_image
from clipsearch.media import image as image_module
from clipsearch.media.image import decode_cost

RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)
WHITE = (255, 255, 255)


def quadrants(width: int = 80, height: int = 60) -> np.ndarray:
    """(H, W, 3) uint8: red top-left, green top-right, blue bottom-left, yellow bottom-right.
    Not symmetric under any flip or rotation, so each EXIF orientation is distinguishable."""
    a = np.zeros((height, width, 3), np.uint8)
    h2, w2 = height // 2, width // 2
    a[:h2, :w2], a[:h2, w2:], a[h2:, :w2], a[h2:, w2:] = RED, GREEN, BLUE, YELLOW
    return a


def corner_colours(im: Image.Image) -> list[tuple[int, ...]]:
    """Colours at the centres of the four quadrants: TL, TR, BL, BR."""
    w, h = im.size
    points = [
        (w // 4, h // 4),
        (3 * w // 4, h // 4),
        (w // 4, 3 * h // 4),
        (3 * w // 4, 3 * h // 4),
    ]
    return [im.getpixel(p) for p in points]


def assert_close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 12) -> None:
    assert len(actual) == len(expected)
    assert all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True)), (actual, expected)


def exif_with_orientation(value: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


# What a viewer shows for each EXIF orientation of a stored array (EXIF 2.3, tag 0x0112),
# written with numpy so the test does not reuse the code under test's table.
DISPLAYED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, k=-1),  # rotate 90° clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, k=1),  # rotate 90° counter-clockwise
}


# --- orientation and draft -----------------------------------------------------------------
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    stored = quadrants(80, 60)
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=exif_with_orientation(orientation))

    decoded = load_image(path, min_side=None)

    expected = Image.fromarray(np.ascontiguousarray(DISPLAYED[orientation](stored)))
    assert decoded.image.mode == "RGB"
    assert decoded.image.size == expected.size
    assert (decoded.width, decoded.height) == expected.size
    for got, want in zip(corner_colours(decoded.image), corner_colours(expected), strict=True):
        assert_close(got, want)


@pytest.mark.parametrize("orientation", [1, 6, 8])
def test_draft_decode_keeps_shorter_side_and_orientation(tmp_path: Path, orientation: int) -> None:
    path = tmp_path / "big.jpg"
    stored = np.repeat(np.repeat(quadrants(40, 30), 100, axis=0), 100, axis=1)  # (3000, 4000, 3)
    Image.fromarray(stored).save(path, quality=90, exif=exif_with_orientation(orientation))

    decoded = load_image(path, min_side=224)

    rotated = orientation in (6, 8)
    assert (decoded.width, decoded.height) == ((3000, 4000) if rotated else (4000, 3000))
    short = min(decoded.image.size)
    assert 224 <= short < 2 * 224, decoded.image.size
    assert (decoded.image.height > decoded.image.width) == rotated
    expected = Image.fromarray(np.ascontiguousarray(DISPLAYED[orientation](quadrants(40, 30))))
    for got, want in zip(corner_colours(decoded.image), corner_colours(expected), strict=True):
        assert_close(got, want)


def test_jpeg_is_decoded_at_reduced_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Draft mode is the speed-up: libjpeg must hand over 1/8 of a 4000x3000 photo
    (500x375, still >= 224 a side), not the full 12 MP that is reduced afterwards."""
    path = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), RED).save(path, quality=80)
    decoded_sizes: list[tuple[int, int]] = []
    to_rgb = image_module._to_rgb

    def spy(im: Image.Image) -> Image.Image:
        decoded_sizes.append(im.size)
        return to_rgb(im)

    monkeypatch.setattr(image_module, "_to_rgb", spy)
    load_image(path, min_side=224)
    load_image(path, min_side=400)
    load_image(path, min_side=None)

    assert decoded_sizes == [(500, 375), (1000, 750), (4000, 3000)]


def test_draft_decode_matches_full_decode_content(tmp_path: Path) -> None:
    yy, xx = np.mgrid[0:1200, 0:1600]
    photo = np.stack([xx * 255 // 1599, yy * 255 // 1199, (xx + yy) * 255 // 2798], -1)
    path = tmp_path / "gradient.jpg"
    Image.fromarray(photo.astype(np.uint8)).save(path, quality=92)

    small = load_image(path, min_side=224).image
    full = load_image(path, min_side=None).image

    assert full.size == (1600, 1200)
    assert min(small.size) >= 224 and small.size[0] < full.size[0]
    reference = np.asarray(full.resize(small.size, Image.Resampling.BOX), np.float32)
    assert np.abs(np.asarray(small, np.float32) - reference).mean() < 3.0


def test_small_image_is_not_reduced(tmp_path: Path) -> None:
    path = tmp_path / "small.jpg"
    Image.fromarray(quadrants(300, 200)).save(path, quality=95)
    decoded = load_image(path, min_side=224)
    assert decoded.image.size == (300, 200)


def test_non_jpeg_is_reduced_by_an_integer_factor(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    Image.fromarray(quadrants(1000, 900)).save(path)
    decoded = load_image(path, min_side=224)
    assert decoded.image.size == (250, 225)  # reduce(4): the shorter side stays >= 224
    assert (decoded.width, decoded.height) == (1000, 900)
    assert corner_colours(decoded.image) == [RED, GREEN, BLUE, YELLOW]


# --- colour modes --------------------------------------------------------------------------
def test_palette_png_with_transparency_is_composited_on_white(tmp_path: Path) -> None:
    indices = np.zeros((40, 40), np.uint8)
    indices[:, 20:] = 1  # right half: red; left half: index 0, black but transparent
    im = Image.fromarray(indices, mode="L").convert("P")
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    path = tmp_path / "palette.png"
    im.save(path, transparency=0)
    assert Image.open(path).mode == "P"

    decoded = load_image(path).image

    assert decoded.getpixel((5, 20)) == WHITE
    assert decoded.getpixel((35, 20)) == RED


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_composited_on_white_not_black(tmp_path: Path, mode: str) -> None:
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., :3] = (200, 0, 0) if mode == "RGBA" else (100, 100, 100)
    rgba[:, :10, 3] = 0  # fully transparent
    rgba[:, 10:20, 3] = 128  # half
    rgba[:, 20:, 3] = 255  # opaque
    path = tmp_path / f"alpha_{mode}.png"
    Image.fromarray(rgba, mode="RGBA").convert(mode).save(path)

    decoded = load_image(path).image

    opaque = (200, 0, 0) if mode == "RGBA" else (100, 100, 100)
    half = tuple(round((c * 128 + 255 * 127) / 255) for c in opaque)
    assert decoded.getpixel((5, 10)) == WHITE
    assert_close(decoded.getpixel((15, 10)), half, tol=2)
    assert decoded.getpixel((25, 10)) == opaque


def test_cmyk_jpeg_decodes_to_the_right_colours(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(quadrants(64, 64)).convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"

    decoded = load_image(path).image

    assert decoded.mode == "RGB"
    for got, want in zip(corner_colours(decoded), [RED, GREEN, BLUE, YELLOW], strict=True):
        assert_close(got, want, tol=16)


def test_cmyk_with_a_broken_icc_profile_falls_back_to_plain_conversion(tmp_path: Path) -> None:
    path = tmp_path / "cmyk_bad_icc.jpg"
    Image.fromarray(quadrants(64, 64)).convert("CMYK").save(
        path, quality=95, icc_profile=b"not an icc profile" * 10
    )
    decoded = load_image(path).image
    assert_close(decoded.getpixel((16, 16)), RED, tol=16)


def test_16_bit_png_becomes_a_proper_8_bit_gradient(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (8, 1))  # (8, 256)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")

    grey = np.asarray(load_image(path).image)[..., 0].astype(int)  # (8, 256)

    row = grey[0]
    assert row[0] == 0 and row[-1] == 255
    assert np.all(np.diff(row) >= 0)  # monotone, no wrap-around
    assert abs(row[128] - 128) <= 1  # mid-grey stays mid-grey (clipping would give 255)
    assert len(np.unique(row)) > 200  # a gradient, not a few bands


def test_float_tiff_in_unit_range_is_scaled(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0.0, 1.0, 100, dtype=np.float32), (4, 1))
    path = tmp_path / "float.tif"
    Image.fromarray(ramp, mode="F").save(path)

    row = np.asarray(load_image(path).image)[0, :, 0].astype(int)

    assert row[0] == 0 and row[-1] == 255 and abs(row[50] - 129) <= 2


def test_one_bit_image(tmp_path: Path) -> None:
    bits = np.zeros((16, 16), bool)
    bits[:, 8:] = True
    path = tmp_path / "bits.png"
    Image.fromarray(bits).save(path)
    assert Image.open(path).mode == "1"

    decoded = load_image(path).image

    assert decoded.getpixel((2, 2)) == (0, 0, 0)
    assert decoded.getpixel((12, 2)) == WHITE


@pytest.mark.parametrize("ext", ["gif", "webp", "png"])
def test_animated_image_gives_its_first_frame(tmp_path: Path, ext: str) -> None:
    frames = [Image.new("RGB", (32, 32), c) for c in (RED, GREEN, BLUE)]
    path = tmp_path / f"anim.{ext}"
    options = {"lossless": True} if ext == "webp" else {}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, **options)
    assert getattr(Image.open(path), "n_frames", 1) == 3

    decoded = load_image(path).image

    assert_close(decoded.getpixel((16, 16)), RED, tol=4)


def test_heic_round_trip(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    path = tmp_path / "photo.heic"
    pillow_heif.from_pillow(Image.fromarray(quadrants(128, 96))).save(path, quality=95)

    decoded = load_image(path)

    assert (decoded.width, decoded.height) == (128, 96)
    for got, want in zip(corner_colours(decoded.image), [RED, GREEN, BLUE, YELLOW], strict=True):
        assert_close(got, want, tol=20)


def test_heic_without_the_plugin_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    path = tmp_path / "photo.heic"
    pillow_heif.from_pillow(Image.fromarray(quadrants(64, 64))).save(path)
    without_heif = tuple(f for f in image_module._formats() if f != "HEIF")
    monkeypatch.setattr(image_module, "_formats_cache", without_heif)

    with pytest.raises(UnsupportedMediaError, match=r"pillow-heif.*clipsearch\[heif\]"):
        load_image(path)


def test_avif_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "photo.avif"
    Image.fromarray(quadrants(128, 96)).save(path, quality=95)
    decoded = load_image(path).image
    assert_close(decoded.getpixel((32, 24)), RED, tol=20)


def test_png_content_named_jpg_is_decoded_by_content(tmp_path: Path) -> None:
    path = tmp_path / "really_a_png.jpg"
    Image.fromarray(quadrants()).save(path, format="PNG")
    assert corner_colours(load_image(path).image) == [RED, GREEN, BLUE, YELLOW]


def test_bytes_source(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(quadrants()).save(buffer, format="PNG")
    decoded = load_image(buffer.getvalue())
    assert isinstance(decoded, DecodedImage)
    assert corner_colours(decoded.image) == [RED, GREEN, BLUE, YELLOW]


# --- decompression bombs -------------------------------------------------------------------
def png_header_only(width: int, height: int, *, colour_type: int = 2) -> bytes:
    """A PNG whose header claims width x height (and whose pixels are absent); colour type
    2 is RGB, 6 is RGBA."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_decompression_bomb_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(50_000, 50_000))
    limit_before = Image.MAX_IMAGE_PIXELS

    with pytest.raises(MediaTooLargeError, match=r"too large|limit"):
        load_image(path)

    assert limit_before == Image.MAX_IMAGE_PIXELS  # no process-wide side effect


def test_max_pixels_is_a_per_call_limit(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    Image.fromarray(quadrants(100, 80)).save(path)

    with pytest.raises(MediaTooLargeError, match=r"8,000 pixels.*limit of 7,999"):
        load_image(path, max_pixels=7_999)
    assert load_image(path, max_pixels=8_000).image.size == (100, 80)
    assert load_image(path).image.size == (100, 80)  # the tight limit did not stick


# --- decode memory budget ------------------------------------------------------------------
MiB = 2**20


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decode_budget_refuses_from_the_header_before_any_pixel_is_decoded() -> None:
    # 13300 x 13300 RGBA is under the pixel cap, yet decoding it takes gigabytes. Its pixels
    # are absent here: a decoder that started would fail as "truncated" instead.
    data = png_header_only(13_300, 13_300, colour_type=6)
    with pytest.raises(MediaTooLargeError, match=r"13300x13300 .*GiB.*limit of 256 MiB"):
        load_image(data, max_decode_bytes=256 * MiB)


def test_decode_cost_counts_jpeg_draft_and_png_full_size() -> None:
    pixels = np.full((3000, 4000, 3), 90, np.uint8)
    jpeg, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(pixels).save(jpeg, format="JPEG")
    Image.fromarray(pixels).save(png, format="PNG")

    png_cost = decode_cost(png.getvalue(), min_side=224)
    jpeg_cost = decode_cost(jpeg.getvalue(), min_side=224)

    assert png_cost >= 4000 * 3000 * 4  # Pillow holds RGB as 4 bytes a pixel
    assert jpeg_cost <= png_cost / 32  # drafted at 1/8 scale: 1/64 of the pixels
    budget = 8 * MiB
    assert jpeg_cost < budget < png_cost
    assert min(load_image(jpeg.getvalue(), max_decode_bytes=budget).image.size) >= 224
    with pytest.raises(MediaTooLargeError, match=r"4000x3000 PNG needs about 4\d MiB"):
        load_image(png.getvalue(), max_decode_bytes=budget)


def test_decode_cost_includes_the_transparency_composite() -> None:
    rgba, rgb = io.BytesIO(), io.BytesIO()
    Image.new("RGBA", (500, 400), (10, 20, 30, 40)).save(rgba, format="PNG")
    Image.new("RGB", (500, 400), (10, 20, 30)).save(rgb, format="PNG")
    # RGBA: the decoded picture, a white canvas of the same size and its alpha mask.
    assert decode_cost(rgba.getvalue(), min_side=224) >= 2 * decode_cost(rgb.getvalue())


def test_a_budget_that_fits_changes_nothing() -> None:
    buffer = io.BytesIO()
    Image.fromarray(quadrants(400, 300)).save(buffer, format="PNG")
    plain = load_image(buffer.getvalue())
    budgeted = load_image(buffer.getvalue(), max_decode_bytes=64 * MiB)
    assert np.array_equal(np.asarray(plain.image), np.asarray(budgeted.image))


# --- bad files -----------------------------------------------------------------------------
def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.touch()
    with pytest.raises(CorruptMediaError, match=r"^empty file$"):
        load_image(path)
    with pytest.raises(CorruptMediaError, match=r"^empty file$"):
        load_image(b"")


def test_truncated_jpeg(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, format="JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])

    with pytest.raises(CorruptMediaError, match=r"^truncated JPEG \(image file is truncated\)$"):
        load_image(path)


def test_jpeg_header_then_garbage(tmp_path: Path) -> None:
    path = tmp_path / "garbage.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    with pytest.raises(CorruptMediaError, match="JPEG"):
        load_image(path)


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("these are not the pixels you are looking for\n")
    with pytest.raises(CorruptMediaError, match=r"^not an image \(cannot identify image file\)$"):
        load_image(path)


def test_exotic_formats_are_not_handed_to_their_plugins(tmp_path: Path) -> None:
    path = tmp_path / "vector.jpg"  # EPS would run Ghostscript if Pillow tried it
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(CorruptMediaError, match="not an image"):
        load_image(path)


def test_jpeg_xl_is_reported_as_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\x0a" + b"\x00" * 100)
    with pytest.raises(UnsupportedMediaError, match="JPEG XL"):
        load_image(path)


def test_directory_named_jpg(tmp_path: Path) -> None:
    folder = tmp_path / "album.jpg"
    folder.mkdir()
    with pytest.raises(UnsupportedMediaError, match="folder"):
        load_image(folder)


def test_fifo_named_jpg_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(UnsupportedMediaError, match="not a regular file"):
        load_image(fifo)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="not found"):
        load_image(tmp_path / "gone.jpg")


@pytest.mark.parametrize("kwargs", [{"min_side": 0}, {"max_pixels": 0}, {"max_decode_bytes": 0}])
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, int]) -> None:
    with pytest.raises(UsageError):
        load_image(tmp_path / "x.jpg", **kwargs)


# --- resources and threads -----------------------------------------------------------------
def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_no_file_handles_leak(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.fromarray(quadrants()).save(good)
    anim = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (8, 8), c) for c in (RED, GREEN)]
    frames[0].save(anim, save_all=True, append_images=frames[1:])
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(50_000, 50_000))
    load_image(good)  # warm up lazy plugin registration
    before = open_descriptors()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)  # "unclosed file" if we relied on GC
        for _ in range(20):
            load_image(good)
            load_image(anim)
            for broken in (bad, bomb):
                with pytest.raises(MediaError):
                    load_image(broken)
        gc.collect()

    assert open_descriptors() <= before  # others (threads of earlier tests) may close fds meanwhile
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_concurrent_decoding_gives_the_same_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    paths = []
    for i in range(12):
        path = tmp_path / f"p{i}.jpg"
        pixels = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, quality=85, exif=exif_with_orientation(1 + i % 8))
        paths.append(path)

    sequential = [load_image(p).image.tobytes() for p in paths]
    with ThreadPoolExecutor(max_workers=4) as pool:
        threaded = [d.image.tobytes() for d in pool.map(load_image, paths * 3)]

    assert threaded == sequential * 3
