"""The HTTP API over a real library: search (text, upload, composed, more-like-this),
paging, filters, item metadata, status, OpenAPI, and every bad input answered with the
right status and a JSON error body.

Library: a few solid-colour images indexed with the deterministic ColourEncoder
(tests/fakes.py), so "red" really ranks the red image first.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from clipsearch.library import Library
from clipsearch.server import create_app
from tests.fakes import ColourEncoder, colour_image, make_image

COLOURS = ["red", "green", "blue", "yellow", "magenta", "cyan"]


# The library is shared by the module's tests: none of them changes it (those that need
# other files build their own).
@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api") / "photos"
    for i, c in enumerate(COLOURS):
        make_image(root / ("sub" if i % 2 else ".") / f"{c}.jpg", c)
    return root


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory, photos: Path):
    with Library(tmp_path_factory.mktemp("api") / "lib", encoder=ColourEncoder()) as lib:
        report = lib.index([photos])
        assert report.encoded == len(COLOURS)
        yield lib


@pytest.fixture(scope="module")
def client(lib):
    with TestClient(create_app(lib), base_url="http://127.0.0.1") as c:
        yield c


def jpeg_bytes(colour: str, size=(64, 48), seed: int = 7) -> bytes:
    buf = io.BytesIO()
    colour_image(colour, size, seed=seed).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def names(response) -> list[str]:
    return [h["name"] for h in response.json()["hits"]]


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    err = response.json()["error"]
    assert err["message"] and isinstance(err["message"], str)
    assert "Traceback" not in err["message"]
    if code is not None:
        assert err["code"] == code
    return err


# -- search ------------------------------------------------------------------------------------
@pytest.mark.parametrize("colour", ["red", "blue", "cyan"])
def test_text_search_ranks_the_named_colour_first(client, colour):
    r = client.get("/api/search", params={"q": f"something {colour}", "k": 3})
    assert r.status_code == 200
    body = r.json()
    assert names(r)[0] == f"{colour}.jpg"
    hits = body["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert hits[0]["kind"] == "image" and hits[0]["width"] == 64 and hits[0]["height"] == 48
    assert hits[0]["thumb_url"] == f"/api/items/{hits[0]['item_id']}/thumb"
    assert hits[0]["media_url"] == f"/api/items/{hits[0]['item_id']}/media"
    assert body["count"] == 3 and body["k"] == 3 and body["next_offset"] == 3


def test_post_json_search_equals_get(client):
    g = client.get("/api/search", params={"q": "green", "k": 4})
    p = client.post("/api/search", json={"q": "green", "k": 4})
    assert p.status_code == 200
    assert names(p) == names(g)


def test_paging_walks_every_item_once(client):
    seen: list[str] = []
    offset = 0
    while offset is not None:
        r = client.get("/api/search", params={"q": "red", "k": 4, "offset": offset})
        assert r.status_code == 200
        seen += names(r)
        offset = r.json()["next_offset"]
    assert sorted(seen) == sorted(f"{c}.jpg" for c in COLOURS)
    page2 = client.get("/api/search", params={"q": "red", "k": 4, "offset": 4}).json()
    assert [h["rank"] for h in page2["hits"]] == [5, 6]
    assert page2["next_offset"] is None


def test_upload_search_finds_the_same_colour(client):
    r = client.post(
        "/api/search",
        files={"image": ("query.jpg", jpeg_bytes("magenta"), "image/jpeg")},
        data={"k": "2"},
    )
    assert r.status_code == 200, r.text
    assert names(r)[0] == "magenta.jpg"


def test_upload_of_an_indexed_file_finds_itself_with_score_one(client, photos):
    data = (photos / "sub" / "green.jpg").read_bytes()
    r = client.post("/api/search", files={"image": ("g.jpg", data, "image/jpeg")})
    top = r.json()["hits"][0]
    assert top["name"] == "green.jpg"
    assert top["score"] == pytest.approx(1.0, abs=1e-2)


def test_upload_with_a_lying_content_type_is_sniffed_not_trusted(client):
    png = io.BytesIO()
    colour_image("yellow", (40, 40)).save(png, format="PNG")
    r = client.post(
        "/api/search", files={"image": ("notes.txt", png.getvalue(), "text/plain")}, data={"k": "1"}
    )
    assert r.status_code == 200
    assert names(r) == ["yellow.jpg"]


def test_composed_upload_plus_text_moves_towards_the_text(client):
    """A red image + "blue" (weights 1:1) should rank red and blue above the rest."""
    r = client.post(
        "/api/search",
        files={"image": ("q.jpg", jpeg_bytes("red"), "image/jpeg")},
        data={"q": "blue", "k": "2", "text_weight": "1", "image_weight": "1"},
    )
    assert r.status_code == 200
    assert set(names(r)) == {"red.jpg", "blue.jpg"}
    only_image = client.post(
        "/api/search", files={"image": ("q.jpg", jpeg_bytes("red"), "image/jpeg")}, data={"k": "2"}
    )
    assert "blue.jpg" not in names(only_image)


def test_text_weights_steer_a_composed_query(client):
    heavy_text = client.post(
        "/api/search",
        files={"image": ("q.jpg", jpeg_bytes("red"), "image/jpeg")},
        data={"q": "blue", "k": "1", "text_weight": "3", "image_weight": "1"},
    )
    heavy_image = client.post(
        "/api/search",
        files={"image": ("q.jpg", jpeg_bytes("red"), "image/jpeg")},
        data={"q": "blue", "k": "1", "text_weight": "1", "image_weight": "3"},
    )
    assert names(heavy_text) == ["blue.jpg"]
    assert names(heavy_image) == ["red.jpg"]


def test_more_like_this_by_item_id(client):
    red_id = client.get("/api/search", params={"q": "red", "k": 1}).json()["hits"][0]["item_id"]
    r = client.get("/api/search", params={"like": red_id, "k": 2})
    assert r.status_code == 200
    hits = r.json()["hits"]
    assert hits[0]["item_id"] == red_id
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-2)
    # composed: "this, but cyan" (JSON body)
    r = client.post("/api/search", json={"like": [red_id], "q": "cyan", "text_weight": 3, "k": 1})
    assert names(r) == ["cyan.jpg"]


def test_composed_text_grammar_with_a_negative_term(client):
    r = client.get("/api/search", params={"q": '"red" + "blue" - "red"', "k": 1})
    assert r.status_code == 200
    assert names(r) == ["blue.jpg"]


def test_path_filter_and_kind_filter(client, photos):
    r = client.get("/api/search", params={"q": "red", "k": 10, "where": f"path:{photos / 'sub'}/*"})
    assert r.status_code == 200
    assert sorted(names(r)) == sorted(c + ".jpg" for i, c in enumerate(COLOURS) if i % 2)
    r = client.get("/api/search", params={"q": "red", "k": 10, "kind": "video"})
    assert r.status_code == 200 and r.json()["hits"] == []


def test_video_hits_carry_every_moment_with_its_own_thumbnail(tmp_path):
    from tests.videogen import make_video

    media = tmp_path / "media"
    media.mkdir()
    make_video(media / "twice.mp4", (("red", 2.0), ("blue", 3.0), ("red", 3.0), ("green", 2.0)))
    with Library(tmp_path / "lib-video", encoder=ColourEncoder()) as lib:
        lib.index([media])
        with TestClient(create_app(lib), base_url="http://127.0.0.1") as c:
            r = c.get("/api/search", params={"q": "red", "kind": "video", "moments": 3})
            assert r.status_code == 200, r.text
            (hit,) = r.json()["hits"]
            moments = hit["moments"]
            assert len(moments) == 2 and hit["moment"] == moments[0]
            assert sorted(round(m["start"]) for m in moments) == [0, 5]
            for m in moments:
                assert m["thumb_url"] == f"/api/items/{hit['item_id']}/thumb?t={m['best_t']}"
                assert m["start"] <= m["best_t"] <= m["end"] and -1 <= m["score"] <= 1
                thumb = c.get(m["thumb_url"])
                assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
            assert hit["thumb_url"] == moments[0]["thumb_url"]
            one = c.get("/api/search", params={"q": "red", "kind": "video"}).json()["hits"][0]
            assert len(one["moments"]) == 1  # one moment unless asked for more
            for bad in ({"moments": 0}, {"moments": 21}, {"pooling": "median"}, {"tau": 0}):
                assert_error(c.get("/api/search", params={"q": "red", **bad}), 422)


def test_a_folded_video_copy_carries_its_own_moments(tmp_path):
    import shutil

    from tests.videogen import make_video

    media = tmp_path / "media"
    media.mkdir()
    make_video(media / "twice.mp4", (("red", 2.0), ("blue", 3.0), ("red", 3.0), ("green", 2.0)))
    shutil.copyfile(media / "twice.mp4", media / "copy.mp4")
    with Library(tmp_path / "lib-video", encoder=ColourEncoder()) as lib:
        lib.index([media])
        with TestClient(create_app(lib), base_url="http://127.0.0.1") as c:
            params = {"q": "red", "kind": "video", "moments": 3, "collapse": "true"}
            r = c.get("/api/search", params=params)
            assert r.status_code == 200, r.text
            (hit,) = r.json()["hits"]
            (member,) = hit["members"]
            assert {hit["name"], member["name"]} == {"twice.mp4", "copy.mp4"}
            assert len(member["moments"]) == 2 and member["moment"] == member["moments"][0]
            assert [(m["start"], m["end"]) for m in member["moments"]] == [
                (m["start"], m["end"]) for m in hit["moments"]
            ]
            for m in member["moments"]:  # thumbnails of the copy's own frames
                assert m["thumb_url"] == f"/api/items/{member['item_id']}/thumb?t={m['best_t']}"
            assert member["thumb_url"] == member["moments"][0]["thumb_url"]


def test_date_filters(tmp_path):
    photos = tmp_path / "photos"
    for c in COLOURS:
        make_image(photos / f"{c}.jpg", c)
    os.utime(photos / "red.jpg", (946_684_800, 946_684_800))  # 2000-01-01
    with Library(tmp_path / "lib-dates", encoder=ColourEncoder()) as lib:
        lib.index([photos])
        with TestClient(create_app(lib), base_url="http://127.0.0.1") as c:
            r = c.get("/api/search", params={"q": "blue", "k": 10, "where": "before:2001"})
            assert names(r) == ["red.jpg"]
            r = c.get(
                "/api/search",
                params={"q": "red", "k": 10, "where": ["after:2001-01-01", "kind:image"]},
            )
            assert "red.jpg" not in names(r) and len(names(r)) == len(COLOURS) - 1


def test_a_path_typed_as_text_is_never_read(client, photos):
    target = photos / "red.jpg"
    r = client.get("/api/search", params={"q": str(target)})
    err = assert_error(r, 400, "invalid_query")
    assert "upload" in err["message"]
    # quoted, it is plain text (and runs as a text query)
    r = client.get("/api/search", params={"q": f'"{target}"', "k": 1})
    assert r.status_code == 200


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("params", [{"q": ""}, {"q": "   "}, {}])
def test_empty_query_is_400(client, params):
    assert_error(client.get("/api/search", params=params), 400, "invalid_query")


def test_empty_json_body_query_is_400(client):
    assert_error(client.post("/api/search", json={}), 400, "invalid_query")


@pytest.mark.parametrize("k", [0, -1, 10**9])
def test_k_out_of_range_is_422_naming_k(client, k):
    err = assert_error(
        client.get("/api/search", params={"q": "red", "k": k}), 422, "validation_error"
    )
    assert err["message"].startswith("k:")
    err = assert_error(client.post("/api/search", json={"q": "red", "k": k}), 422)
    assert "k" in err["message"]


@pytest.mark.parametrize(
    "params, field",
    [
        ({"q": "red", "offset": -1}, "offset"),
        ({"q": "red", "k": "ten"}, "k"),
        ({"q": "red", "kind": "audio"}, "kind"),
        ({"q": "red", "pooling": "median"}, "pooling"),
        ({"q": "red", "tau": 0}, "tau"),
        ({"like": "abc"}, "like"),
        ({"like": 9223372036854775808}, "like"),  # beyond any id SQLite can hold
        ({"like": 0}, "like"),
    ],
)
def test_bad_parameters_are_422_naming_the_field(client, params, field):
    err = assert_error(client.get("/api/search", params=params), 422, "validation_error")
    assert field in err["message"]


def test_an_id_beyond_64_bits_in_a_json_body_is_422(client):
    r = client.post("/api/search", json={"like": [9223372036854775808]})
    assert "like" in assert_error(r, 422, "validation_error")["message"]


@pytest.mark.parametrize(
    "clause", ["after:2263", "before:2262-04-12", "after:1000", "size>99999999999999999999999999"]
)
def test_filter_bounds_beyond_64_bits_are_answered_not_500(client, clause):
    r = client.get("/api/search", params={"q": "red", "where": clause, "k": 3})
    assert r.status_code == 200, r.text


def test_bad_filter_clause_is_400_naming_it(client):
    err = assert_error(
        client.get("/api/search", params={"q": "red", "where": "colour:blue"}), 400, "invalid_query"
    )
    assert "colour:blue" in err["message"]


@pytest.mark.parametrize(
    "body", [b"{bad json", b"", b"[1, 2]", b'{"q": "red", "unknown": 1}', b'{"q": 5}']
)
def test_malformed_json_body_is_422(client, body):
    r = client.post("/api/search", content=body, headers={"content-type": "application/json"})
    assert_error(r, 422, "validation_error")


def test_unsupported_body_type_is_415(client):
    r = client.post("/api/search", content=b"q=red", headers={"content-type": "text/plain"})
    assert_error(r, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "payload",
    [b"this is not an image at all", b"", b"\xff\xd8\xff\xe0 truncated jpeg", b"%PDF-1.4 fake"],
)
def test_non_image_upload_is_415(client, payload):
    r = client.post("/api/search", files={"image": ("x.jpg", payload, "image/jpeg")})
    err = assert_error(r, 415, "unsupported_media_type")
    assert "x.jpg" in err["message"]


def test_upload_too_large_is_413(lib):
    with TestClient(create_app(lib, max_upload_bytes=50_000), base_url="http://127.0.0.1") as c:
        big = io.BytesIO()
        Image.effect_noise((700, 700), 100).convert("RGB").save(big, format="PNG")
        assert len(big.getvalue()) > 50_000 + 256 * 1024  # over the whole-body cap
        r = c.post("/api/search", files={"image": ("big.png", big.getvalue(), "image/png")})
        assert_error(r, 413, "payload_too_large")
        # just over the per-upload limit but inside the body slack: still 413
        r = c.post("/api/search", files={"image": ("b.jpg", b"\xff" * 60_000, "image/jpeg")})
        assert_error(r, 413, "payload_too_large")
        # a small upload still works on the same server
        ok = c.post("/api/search", files={"image": ("s.jpg", jpeg_bytes("red"), "image/jpeg")})
        assert ok.status_code == 200


def test_like_unknown_item_is_404(client):
    assert_error(client.get("/api/search", params={"like": 999999}), 404, "not_found")


def test_unknown_route_and_method_are_json(client):
    assert_error(client.get("/api/nothing-here"), 404, "not_found")
    assert_error(client.put("/api/search", json={}), 405, "method_not_allowed")


# -- items, status, schema ---------------------------------------------------------------------
def test_item_metadata(client, photos):
    hit = client.get("/api/search", params={"q": "blue", "k": 1}).json()["hits"][0]
    r = client.get(f"/api/items/{hit['item_id']}")
    assert r.status_code == 200
    item = r.json()
    assert item["path"] == str(photos / "blue.jpg")
    assert item["kind"] == "image" and item["status"] == "ok"
    assert item["size"] == (photos / "blue.jpg").stat().st_size
    assert item["root"] == str(photos)
    assert item["mtime"].startswith("20")


@pytest.mark.parametrize("bad", ["0", "-3", "abc", "1.5", "99999999999999999999999"])
def test_bad_item_ids_are_rejected_as_json(client, bad):
    r = client.get(f"/api/items/{bad}")
    assert r.status_code in (404, 422)
    assert "error" in r.json()


def test_unknown_item_is_404(client):
    assert_error(client.get("/api/items/424242"), 404, "not_found")


def test_status(client, photos):
    st = client.get("/api/status").json()
    assert st["model"] == "fake:colour"
    assert st["items"]["ok"] == len(COLOURS)
    assert st["roots"] == [str(photos)]
    assert st["model_loaded"] is True and st["model_error"] is None
    assert st["indexing"] is False
    assert st["failures"] == []


def test_openapi_documents_every_endpoint_with_examples(client):
    spec = client.get("/api/openapi.json").json()
    paths = spec["paths"]
    for path, method in [
        ("/api/search", "get"),
        ("/api/search", "post"),
        ("/api/items/{item_id}", "get"),
        ("/api/items/{item_id}/thumb", "get"),
        ("/api/items/{item_id}/media", "get"),
        ("/api/status", "get"),
        ("/api/index", "get"),
        ("/api/index", "post"),
        ("/api/index", "delete"),
    ]:
        op = paths[path][method]
        assert op.get("summary") and op.get("description"), (path, method)
    post = paths["/api/search"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(post)
    schemas = spec["components"]["schemas"]
    for name in ("SearchRequest", "SearchResponse", "HitOut", "ItemOut", "ErrorOut"):
        assert schemas[name].get("examples"), name


def test_openapi_lists_the_errors_routes_really_answer(client):
    paths = client.get("/api/openapi.json").json()["paths"]
    for method in ("get", "post"):
        assert "404" in paths["/api/search"][method]["responses"]  # unknown `like` id
    assert "413" in paths["/api/items/{item_id}/thumb"]["get"]["responses"]  # bomb guard


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/api/index", {"GET", "HEAD", "POST", "DELETE", "OPTIONS"}),
        ("/api/search", {"GET", "HEAD", "POST", "OPTIONS"}),
        ("/api/items/1/media", {"GET", "HEAD", "OPTIONS"}),
    ],
)
def test_options_and_405_list_every_method_of_the_path(client, path, methods):
    r = client.options(path)
    assert r.status_code == 204
    assert set(r.headers["allow"].replace(" ", "").split(",")) == methods
    assert "access-control-allow-origin" not in r.headers  # OPTIONS is no CORS preflight
    wrong = client.put(path, json={})
    assert wrong.status_code == 405
    assert set(wrong.headers["allow"].replace(" ", "").split(",")) == methods


def test_options_on_an_unknown_path_is_404(client):
    assert client.options("/api/nope").status_code == 404


def test_the_page_and_its_files_are_served_without_cdn(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text
    assert "/static/app.js" in html and "/static/style.css" in html
    assert "http://" not in html and "https://" not in html
    for asset in ("/static/app.js", "/static/style.css", "/static/favicon.svg"):
        r = client.get(asset)
        assert r.status_code == 200 and len(r.content) > 100
        content = r.content.replace(b'xmlns="http://www.w3.org/2000/svg"', b"")  # a name, not a URL
        assert b"https://" not in content and b"http://" not in content


def test_model_load_failure_is_reported_and_search_is_503(tmp_path):
    from clipsearch.errors import WeightsUnavailableError

    class BrokenLibrary(Library):
        @property
        def encoder(self):
            raise WeightsUnavailableError("no weights here: pass a local file with --model")

    with (
        BrokenLibrary(tmp_path / "lib2") as lib,
        TestClient(create_app(lib), base_url="http://127.0.0.1") as c,
    ):
        st = c.get("/api/status").json()
        assert st["model_loaded"] is False and "no weights" in st["model_error"]
        err = assert_error(c.get("/api/search", params={"q": "red"}), 503, "model_unavailable")
        assert "no weights" in err["message"]
