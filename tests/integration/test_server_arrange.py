"""``/api/search`` with min_score, sort, collapse and capture-date bounds, over a library
indexed with the deterministic ColourEncoder: red pictures with EXIF dates (one copied),
and pictures of other colours."""

from __future__ import annotations

import io
import os
import shutil
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from clipsearch.library import Library
from clipsearch.server import create_app
from tests.fakes import ColourEncoder, colour_image

REDS = {"red-a.jpg": "2018:01:02 03:04:05", "red-b.jpg": "2020:06:07 08:09:10"}
OTHERS = ["green", "blue", "yellow", "cyan", "magenta"]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("arrange-api") / "photos"
    root.mkdir()
    for i, (name, when) in enumerate(REDS.items()):
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9003] = when
        exif.get_ifd(0x8769)[0x9011] = "+03:00"
        colour_image("red", (64, 48), seed=i).save(root / name, quality=95, exif=exif)
    shutil.copy(root / "red-a.jpg", root / "red-a-copy.jpg")
    for i, c in enumerate(OTHERS):
        colour_image(c, (64, 48), seed=10 + i).save(root / f"{c}.jpg")
    old = datetime(2010, 1, 1, tzinfo=UTC).timestamp()
    for p in root.iterdir():
        os.utime(p, (old, old))
    lib_dir = tmp_path_factory.mktemp("arrange-api") / "lib"
    with Library(lib_dir, encoder=ColourEncoder()) as lib:
        lib.index([root])
        with TestClient(create_app(lib), base_url="http://127.0.0.1") as c:
            yield c


def search(client, **params) -> dict:
    r = client.get("/api/search", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_hits_say_whether_they_are_relevant_and_the_cut_is_reported(client):
    body = search(client, q="red", k=8)
    hits = body["hits"]
    assert [h["relevant"] for h in hits] == [True] * 3 + [False] * 5
    assert {h["name"] for h in hits[:3]} == {"red-a.jpg", "red-b.jpg", "red-a-copy.jpg"}
    assert 0 < body["min_score"] < hits[2]["score"]
    none = search(client, q="red", k=8, min_score="none")
    assert none["min_score"] is None and all(h["relevant"] for h in none["hits"])
    fixed = search(client, q="red", k=8, min_score=0.99)
    assert fixed["min_score"] == 0.99 and not any(h["relevant"] for h in fixed["hits"])


def test_newest_first_with_capture_times_and_their_offsets(client):
    hits = search(client, q="red", k=8, sort="-date")["hits"]
    assert [h["name"] for h in hits[:1]] == ["red-b.jpg"]
    assert hits[0]["taken"] == "2020-06-07T08:09:10+03:00" and hits[0]["taken_source"] == "exif"
    assert {h["name"] for h in hits[1:3]} == {"red-a.jpg", "red-a-copy.jpg"}
    assert hits[3]["taken_source"] == "mtime" and not hits[3]["relevant"]
    between = search(client, q="red", taken_after="2019", taken_before="2021")
    assert [h["name"] for h in between["hits"]] == ["red-b.jpg"]


def test_collapse_folds_copies_with_links_for_the_members(client):
    hits = search(client, q="red", k=3, collapse="true")["hits"]
    folded = [h for h in hits if h["members"]]
    assert len(folded) == 1
    member = folded[0]["members"][0]
    assert {folded[0]["name"], member["name"]} == {"red-a.jpg", "red-a-copy.jpg"}
    assert member["similarity"] > 0.99
    assert member["thumb_url"] == f"/api/items/{member['item_id']}/thumb"
    assert member["media_url"] == f"/api/items/{member['item_id']}/media"
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits[2]["members"] == []


def test_post_json_and_multipart_take_the_same_fields(client):
    r = client.post("/api/search", json={"q": "red", "k": 4, "collapse": True, "sort": "date"})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert [h["name"] for h in hits[:2]] in (
        ["red-a.jpg", "red-b.jpg"],
        ["red-a-copy.jpg", "red-b.jpg"],
    )
    buf = io.BytesIO()
    colour_image("red", (64, 48), seed=0).save(buf, format="JPEG", quality=95)
    r = client.post(
        "/api/search",
        files={"image": ("q.jpg", buf.getvalue(), "image/jpeg")},
        data={"collapse": "true", "min_score": "none", "k": "3"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["min_score"] is None and any(h["members"] for h in body["hits"])


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"min_score": "high"}, 422),
        ({"min_score": "1.5"}, 422),
        ({"sort": "size"}, 422),
        ({"taken_after": "last week"}, 400),
    ],
)
def test_bad_values_are_clear_errors(client, params, status):
    r = client.get("/api/search", params={"q": "red", **params})
    assert r.status_code == status, r.text
    assert r.json()["error"]["message"]


def test_openapi_documents_the_new_fields(client):
    spec = client.get("/api/openapi.json").json()
    props = spec["components"]["schemas"]["SearchRequest"]["properties"]
    assert {"min_score", "sort", "collapse", "taken_after", "taken_before"} <= set(props)
    hit = spec["components"]["schemas"]["HitOut"]["properties"]
    assert {"relevant", "taken", "taken_source", "members"} <= set(hit)


def test_status_counts_capture_dates_by_source(client):
    r = client.get("/api/status")
    assert r.status_code == 200
    assert r.json()["capture_times"] == {"exif": 3, "container": 0, "mtime": 5, "unread": 0}
