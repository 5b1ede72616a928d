"""Uploaded images cost bounded memory: an upload whose decode would exceed the server's
per-decode memory limit is refused from its header with 413 before any pixel is decoded,
and the server decodes at most its decode budget's worth of pixels at once."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from PIL import Image

import clipsearch.media.image as image_module
from clipsearch.library import Library
from clipsearch.search.engine import decode_side
from clipsearch.server import create_app
from tests.fakes import ColourEncoder, make_image

MiB = 2**20


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("uploads") / "photos"
    for c in ("red", "green", "blue"):
        make_image(root / f"{c}.jpg", c)
    with Library(tmp_path_factory.mktemp("uploads") / "lib", encoder=ColourEncoder()) as lib:
        lib.index([root])
        yield lib


def png_claiming(width: int, height: int) -> bytes:
    """An RGBA PNG whose header claims width x height; its pixel data is absent."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def encoded(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def upload(client: TestClient, data: bytes, name: str = "query.png", **fields):
    return client.post(
        "/api/search", files=[("image", (name, data, "image/png"))], data={"k": "2", **fields}
    )


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_huge_png_is_refused_from_its_header_with_the_default_limits(lib):
    # 13300 x 13300 RGBA: 688 KB on the wire, under the pixel cap, gigabytes to decode.
    with TestClient(create_app(lib), base_url="http://127.0.0.1") as client:
        r = upload(client, png_claiming(13_300, 13_300))
    assert r.status_code == 413, r.text
    err = r.json()["error"]
    assert err["code"] == "payload_too_large"
    assert "13300x13300" in err["message"] and "memory" in err["message"]


def test_the_decode_limit_weighs_decoded_pixels_not_bytes_on_the_wire(lib):
    app = create_app(lib, max_decode_bytes=8 * MiB)
    big_red_png = encoded(Image.new("RGBA", (2000, 1500), (255, 0, 0, 255)), "PNG")
    big_red_jpeg = encoded(Image.new("RGB", (4000, 3000), (255, 0, 0)), "JPEG")
    assert len(big_red_png) < 100_000  # small file, 12 MB of pixels
    with TestClient(app, base_url="http://127.0.0.1") as client:
        refused = upload(client, big_red_png)
        accepted = upload(client, big_red_jpeg, name="query.jpg")  # draft: 1/8 scale
    assert refused.status_code == 413, refused.text
    assert "limit of 8 MiB" in refused.json()["error"]["message"]
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["hits"][0]["name"] == "red.jpg"


def _count_concurrent_decodes(monkeypatch) -> Callable[[], int]:
    """Slow every image decode down and count how many run at once; returns a function
    giving the peak."""
    running, peak, lock = 0, 0, threading.Lock()
    real_to_decoded = image_module._to_decoded

    def slow_decode(*args, **kwargs):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.15)
        try:
            return real_to_decoded(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(image_module, "_to_decoded", slow_decode)
    return lambda: peak


@pytest.mark.parametrize(("budget_images", "expected_peak"), [(1, 1), (2, 2)])
def test_concurrent_uploads_decode_within_one_server_wide_budget(
    lib, monkeypatch, budget_images, expected_peak
):
    photo = encoded(Image.new("RGB", (600, 400), (0, 0, 255)), "PNG")
    cost = image_module.decode_cost(photo, min_side=decode_side(ColourEncoder()))
    peak = _count_concurrent_decodes(monkeypatch)
    app = create_app(lib, max_decode_bytes=cost, decode_budget_bytes=budget_images * cost)
    with TestClient(app, base_url="http://127.0.0.1") as client, ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: upload(client, photo), range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    assert peak() == expected_peak


def test_thumbnails_are_made_within_the_same_budget(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    root.mkdir()
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)]):
        Image.new("RGB", (1200, 900), colour).save(root / f"{i}.png")
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as library:
        library.index([root])
        ids = [h.item_id for h in library.search("red", k=4)]
        cost = image_module.decode_cost(root / "0.png", min_side=256)
        peak = _count_concurrent_decodes(monkeypatch)
        app = create_app(library, max_decode_bytes=cost, decode_budget_bytes=cost)
        with TestClient(app, base_url="http://127.0.0.1") as client, ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda i: client.get(f"/api/items/{i}/thumb"), ids))
    assert [r.status_code for r in responses] == [200] * 4
    assert all(r.headers["content-type"] == "image/jpeg" for r in responses)
    assert peak() == 1
