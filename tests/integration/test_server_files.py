"""Thumbnails and media over HTTP: cached once, upright, byte ranges for video seeking,
and only the catalog's files (ids only; no traversal; no symlinks out of the roots;
deleted items and vanished files are 404)."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from clipsearch.library import Library
from clipsearch.server import create_app
from tests.fakes import ColourEncoder, make_image
from tests.videogen import make_video

RED, BLUE = (220, 20, 20), (20, 20, 220)


def _exif_rotated_jpeg(path: Path) -> Path:
    """Stored landscape 80x40, red left / blue right, EXIF orientation 6 (display rotated
    90° clockwise): shown upright it is portrait 40x80 with red on TOP."""
    px = np.zeros((40, 80, 3), np.uint8)
    px[:, :40] = RED
    px[:, 40:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(px).save(path, format="JPEG", quality=95, exif=exif.tobytes())
    return path


@pytest.fixture
def media_root(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    make_image(root / "red.jpg", "red")
    Image.new("RGB", (1200, 900), (0, 200, 0)).save(
        root / "big.png"
    )  # (make_image is slow at this size)
    _exif_rotated_jpeg(root / "rotated.jpg")
    make_video(root / "clip.mp4", (("red", 2.0), ("blue", 3.0)), size=(160, 120))
    return root


@pytest.fixture
def lib(tmp_path: Path, media_root: Path):
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        report = lib.index([media_root])
        assert report.failed == 0, report.to_dict()
        yield lib


@pytest.fixture
def client(lib):
    with TestClient(create_app(lib), base_url="http://127.0.0.1") as c:
        yield c


def item_id(lib: Library, path: Path) -> int:
    rec = lib.catalog.item_by_path(str(path))
    assert rec is not None, path
    return rec.id


def image_of(response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    return Image.open(io.BytesIO(response.content)).convert("RGB")


def is_close(rgb, target, tol=60) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(rgb, target, strict=True))


def error_code(response) -> str:
    return response.json()["error"]["code"]


# -- thumbnails --------------------------------------------------------------------------------
def test_thumbnail_is_generated_once_then_served_from_disk(client, lib, media_root, monkeypatch):
    iid = item_id(lib, media_root / "big.png")
    first = client.get(f"/api/items/{iid}/thumb")
    assert first.headers["x-thumbnail-cache"] == "miss"
    cached = list((Path(lib.path) / "thumbs").rglob(f"{iid}_*.jpg"))
    assert len(cached) == 1
    # The second request must not decode anything: break the decoder and ask again.
    import clipsearch.server.thumbs as thumbs

    def boom(*a, **kw):
        raise AssertionError("decoded again instead of serving the cached thumbnail")

    monkeypatch.setattr(thumbs, "load_image", boom)
    second = client.get(f"/api/items/{iid}/thumb")
    assert second.headers["x-thumbnail-cache"] == "hit"
    assert second.content == first.content


def test_thumbnail_size_snaps_and_never_upscales(client, lib, media_root):
    big = item_id(lib, media_root / "big.png")
    assert image_of(client.get(f"/api/items/{big}/thumb", params={"size": 200})).size == (341, 256)
    assert image_of(client.get(f"/api/items/{big}/thumb", params={"size": 256})).size == (341, 256)
    assert image_of(client.get(f"/api/items/{big}/thumb", params={"size": 2000})).size == (
        1200,
        900,
    )
    small = item_id(lib, media_root / "red.jpg")
    assert image_of(client.get(f"/api/items/{small}/thumb")).size == (64, 48)
    r = client.get(f"/api/items/{big}/thumb", params={"size": 10**6})
    assert r.status_code == 422 and error_code(r) == "validation_error"


def test_thumbnail_of_exif_rotated_jpeg_is_upright(client, lib, media_root):
    iid = item_id(lib, media_root / "rotated.jpg")
    im = image_of(client.get(f"/api/items/{iid}/thumb"))
    w, h = im.size
    assert (w, h) == (40, 80)  # portrait, as displayed
    assert is_close(im.getpixel((w // 2, h // 5)), RED)  # red on top
    assert is_close(im.getpixel((w // 2, 4 * h // 5)), BLUE)
    meta = client.get(f"/api/items/{iid}").json()
    assert (meta["width"], meta["height"]) == (40, 80)


def test_video_thumbnail_shows_the_frame_at_t(client, lib, media_root):
    iid = item_id(lib, media_root / "clip.mp4")
    at1 = image_of(client.get(f"/api/items/{iid}/thumb", params={"t": 1.0}))
    at3 = image_of(client.get(f"/api/items/{iid}/thumb", params={"t": 3.0}))
    assert is_close(at1.getpixel((80, 60)), RED)
    assert is_close(at3.getpixel((80, 60)), BLUE)
    # past the end: the last frame, not an error
    end = image_of(client.get(f"/api/items/{iid}/thumb", params={"t": 999}))
    assert is_close(end.getpixel((80, 60)), BLUE)


def test_rotated_video_thumbnail_is_upright(tmp_path):
    root = tmp_path / "v"
    root.mkdir()
    pattern = np.zeros((120, 160, 3), np.uint8)
    pattern[:, :80] = RED  # coded: red left, blue right
    pattern[:, 80:] = BLUE
    make_video(root / "phone.mp4", (("red", 1.0),), rotation=90, pattern=pattern)
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        lib.index([root])
        with TestClient(create_app(lib), base_url="http://127.0.0.1") as c:
            iid = item_id(lib, root / "phone.mp4")
            im = image_of(c.get(f"/api/items/{iid}/thumb", params={"t": 0.5}))
    w, h = im.size
    assert h > w  # displayed portrait
    # turned 90° clockwise for display: the coded left edge (red) is now on top
    assert is_close(im.getpixel((w // 2, h // 5)), RED)
    assert is_close(im.getpixel((w // 2, 4 * h // 5)), BLUE)


def test_video_search_hit_carries_moment_and_thumb_at_best_frame(client):
    r = client.get("/api/search", params={"q": "blue", "kind": "video", "k": 1})
    assert r.status_code == 200
    hit = r.json()["hits"][0]
    assert hit["kind"] == "video" and hit["name"] == "clip.mp4"
    m = hit["moment"]
    assert 2.0 - 0.5 <= m["start"] <= m["best_t"] <= m["end"] <= 5.0 + 0.01
    assert hit["thumb_url"] == f"/api/items/{hit['item_id']}/thumb?t={m['best_t']}"
    thumb = image_of(client.get(hit["thumb_url"]))
    assert is_close(thumb.getpixel((thumb.width // 2, thumb.height // 2)), BLUE)


def test_edited_file_gets_a_fresh_thumbnail(client, lib, media_root):
    path = media_root / "red.jpg"
    iid = item_id(lib, path)
    client.get(f"/api/items/{iid}/thumb")
    make_image(path, "blue")  # edited in place (same id until re-indexed)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    r = client.get(f"/api/items/{iid}/thumb")
    assert r.headers["x-thumbnail-cache"] == "miss"
    assert is_close(image_of(r).getpixel((32, 24)), (0, 0, 255), tol=70)
    assert len(list((Path(lib.path) / "thumbs").rglob(f"{iid}_*.jpg"))) == 1  # stale one removed


def test_thumbnail_of_an_undecodable_file_is_a_json_error(client, lib, media_root):
    path = media_root / "red.jpg"
    iid = item_id(lib, path)
    size = path.stat().st_size
    path.write_bytes(b"\xff\xd8\xff" + b"\0" * (size - 3))  # damaged after indexing
    r = client.get(f"/api/items/{iid}/thumb")
    assert r.status_code == 422 and error_code(r) == "media_error"


# -- media and ranges --------------------------------------------------------------------------
def test_media_full_file(client, lib, media_root):
    path = media_root / "clip.mp4"
    r = client.get(f"/api/items/{item_id(lib, path)}/media")
    assert r.status_code == 200
    assert r.content == path.read_bytes()
    assert r.headers["content-type"] == "video/mp4"
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-disposition"] == "inline"


@pytest.mark.parametrize(
    "header, start, end",
    [
        ("bytes=0-9", 0, 10),
        ("bytes=100-199", 100, 200),
        ("bytes=-50", None, None),
        ("bytes=300-", 300, None),
    ],
)
def test_media_range_requests_answer_206_with_the_exact_bytes(
    client, lib, media_root, header, start, end
):
    path = media_root / "clip.mp4"
    data = path.read_bytes()
    n = len(data)
    if start is None:  # suffix range: the last 50 bytes
        start, end = n - 50, n
    end = n if end is None else end
    r = client.get(f"/api/items/{item_id(lib, path)}/media", headers={"Range": header})
    assert r.status_code == 206
    assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{n}"
    assert int(r.headers["content-length"]) == end - start
    assert r.content == data[start:end]


def test_media_multi_range(client, lib, media_root):
    path = media_root / "clip.mp4"
    data = path.read_bytes()
    r = client.get(f"/api/items/{item_id(lib, path)}/media", headers={"Range": "bytes=0-3,10-13"})
    assert r.status_code == 206
    assert r.headers["content-type"].startswith("multipart/byteranges")
    assert data[0:4] in r.content and data[10:14] in r.content


@pytest.mark.parametrize(
    "header, status, code",
    [
        ("bytes=99999999-", 416, "range_not_satisfiable"),
        ("bytes=abc", 400, "bad_range"),
        ("items=0-10", 400, "bad_range"),
        ("bytes=20-10", 400, "bad_range"),
        ("bytes=1_0-2_0", 400, "bad_range"),  # int() would read these as 10 and 20
        ("bytes=+1-+5", 400, "bad_range"),
        ("bytes= 1 - 5", 400, "bad_range"),
        ("bytes=0-9,abc", 400, "bad_range"),  # one bad part spoils the set
        ("bytes=0x10-0x20", 400, "bad_range"),
        ("bytes=-", 400, "bad_range"),
        ("bytes=", 400, "bad_range"),
        ("bytes=-0", 416, "range_not_satisfiable"),
    ],
)
def test_bad_ranges_are_json_errors(client, lib, media_root, header, status, code):
    path = media_root / "clip.mp4"
    r = client.get(f"/api/items/{item_id(lib, path)}/media", headers={"Range": header})
    assert r.status_code == status and error_code(r) == code
    if status == 416:
        assert r.headers["content-range"] == f"bytes */{path.stat().st_size}"


def test_a_malformed_range_is_not_echoed_back(client, lib, media_root):
    path = media_root / "clip.mp4"
    header = "bytes=<script>alert(1)</script>" + "x" * 5000
    r = client.get(f"/api/items/{item_id(lib, path)}/media", headers={"Range": header})
    assert r.status_code == 400
    assert "script" not in r.text and len(r.text) < 500


def test_ranges_with_spaces_around_commas_are_allowed(client, lib, media_root):
    path = media_root / "clip.mp4"
    data = path.read_bytes()
    r = client.get(f"/api/items/{item_id(lib, path)}/media", headers={"Range": "bytes=0-3 , 10-13"})
    assert r.status_code == 206
    assert data[0:4] in r.content and data[10:14] in r.content


@pytest.mark.parametrize("what", ["media", "thumb"])
def test_head_answers_like_get_without_a_body(client, lib, media_root, what):
    path = media_root / "clip.mp4"
    url = f"/api/items/{item_id(lib, path)}/{what}"
    got = client.get(url)
    head = client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["content-length"] == str(len(got.content))
    partial = client.head(f"/api/items/{item_id(lib, path)}/media", headers={"Range": "bytes=0-9"})
    assert partial.status_code == 206 and partial.content == b""
    assert client.head("/api/items/999999/media").status_code == 404


# -- only the catalog's files ------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "/api/items/..%2F..%2Fetc%2Fpasswd/media",
        "/api/items/%2e%2e/media",
        "/api/items/1%2F..%2F..%2Fcatalog.sqlite/media",
        "/static/%2e%2e/app.py",
        "/static/..%2F..%2Flibrary.py",
        "/api/items/-1/media",
    ],
)
def test_traversal_attempts_never_reach_a_file(client, url):
    r = client.get(url)
    assert r.status_code in (404, 422)
    assert "error" in r.json()


def test_extra_path_parameters_are_ignored(client, lib, media_root):
    iid = item_id(lib, media_root / "red.jpg")
    r = client.get(f"/api/items/{iid}/media", params={"path": "/etc/passwd", "file": "../x"})
    assert r.status_code == 200
    assert r.content == (media_root / "red.jpg").read_bytes()


def test_symlink_out_of_the_root_is_refused(tmp_path):
    outside = tmp_path / "outside"
    make_image(outside / "secret.jpg", "red")
    root = tmp_path / "root"
    make_image(root / "ok.jpg", "blue")
    (root / "link.jpg").symlink_to(outside / "secret.jpg")
    (root / "inner.jpg").symlink_to(root / "ok.jpg")
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        lib.index([root])
        with TestClient(create_app(lib), base_url="http://127.0.0.1") as c:
            link = lib.catalog.item_by_path(str(root / "link.jpg"))
            if link is None:  # the scanner may decline symlinked files; swap one in instead
                (root / "ok2.jpg").write_bytes((root / "ok.jpg").read_bytes())
                lib.index([root])
                link = lib.catalog.item_by_path(str(root / "ok2.jpg"))
                (root / "ok2.jpg").unlink()
                (root / "ok2.jpg").symlink_to(outside / "secret.jpg")
            for kind in ("media", "thumb"):
                r = c.get(f"/api/items/{link.id}/{kind}")
                assert r.status_code == 403 and error_code(r) == "outside_roots"
                assert (outside / "secret.jpg").read_bytes() not in r.content
            inner = lib.catalog.item_by_path(str(root / "inner.jpg"))
            if inner is not None:  # a link inside the root is fine
                assert c.get(f"/api/items/{inner.id}/media").status_code == 200


def test_file_swapped_for_an_outward_symlink_after_indexing_is_refused(
    client, lib, media_root, tmp_path
):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    path = media_root / "red.jpg"
    iid = item_id(lib, path)
    path.unlink()
    path.symlink_to(secret)
    r = client.get(f"/api/items/{iid}/media")
    assert r.status_code == 403 and b"top secret" not in r.content


def test_vanished_file_is_404_and_swept_item_is_404(client, lib, media_root):
    path = media_root / "red.jpg"
    iid = item_id(lib, path)
    path.unlink()
    for kind in ("media", "thumb"):
        r = client.get(f"/api/items/{iid}/{kind}")
        assert r.status_code == 404 and error_code(r) == "file_gone"
    assert client.get(f"/api/items/{iid}").status_code == 200  # still in the catalog
    lib.index([media_root])  # sweeps it
    for suffix in ("", "/media", "/thumb"):
        r = client.get(f"/api/items/{iid}{suffix}")
        assert r.status_code == 404 and error_code(r) == "not_found"


def test_removed_root_folder_makes_files_unservable(client, lib, media_root, tmp_path):
    iid = item_id(lib, media_root / "red.jpg")
    shutil.move(media_root, tmp_path / "moved")
    media_root.mkdir()
    r = client.get(f"/api/items/{iid}/media")
    assert r.status_code == 404
