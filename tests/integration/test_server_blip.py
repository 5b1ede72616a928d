"""BLIP over HTTP: rerank=itm re-scores the top k, captions come back with hits and are
searchable with where=text:..., and errors are JSON with the right status."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clipsearch.library import Library
from clipsearch.models.blip import load_matcher
from clipsearch.server import create_app
from tests.blipgen import ColourCaptioner
from tests.fakes import ColourEncoder, make_image

COLOURS = ["red", "green", "blue", "yellow", "magenta", "cyan"]


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory, tiny_blip_itm: Path):
    root = tmp_path_factory.mktemp("blip-api")
    for c in COLOURS:
        make_image(root / "photos" / f"{c}.jpg", c)
    matcher = load_matcher(str(tiny_blip_itm), precision="fp32")
    with Library(
        root / "lib", encoder=ColourEncoder(), matcher=matcher, captioner=ColourCaptioner()
    ) as lib:
        lib.index([root / "photos"])
        lib.caption()
        yield lib


@pytest.fixture(scope="module")
def client(lib):
    with TestClient(create_app(lib), base_url="http://127.0.0.1") as c:
        yield c


def test_rerank_itm_returns_the_libraries_reranked_order_with_scores(client, lib):
    r = client.get(
        "/api/search", params={"q": "a red thing", "k": 6, "rerank": "itm", "rerank_k": 4}
    )
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    want = lib.search("a red thing", k=6, rerank="itm", rerank_k=4)
    assert [h["item_id"] for h in hits] == [h.item_id for h in want]
    assert all(h["itm_score"] is not None for h in hits[:4])
    assert all(h["itm_score"] is None for h in hits[4:])
    assert [h["score"] for h in hits[:4]] == sorted((h["score"] for h in hits[:4]), reverse=True)
    plain = client.get("/api/search", params={"q": "a red thing", "k": 6}).json()["hits"]
    assert "itm_score" not in plain[0] or plain[0]["itm_score"] is None


def test_post_json_rerank_equals_get(client):
    body = {"q": "a blue thing", "k": 5, "rerank": "itm", "rerank_score": "itm"}
    post = client.post("/api/search", json=body).json()["hits"]
    get = client.get("/api/search", params=body).json()["hits"]
    assert [h["item_id"] for h in post] == [h["item_id"] for h in get]
    assert all(h["score"] == h["itm_score"] for h in post)


def test_captions_are_returned_and_searchable(client):
    r = client.get(
        "/api/search", params={"q": "green", "captions": "true", "where": "text:something green"}
    )
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert [h["name"] for h in hits] == ["green.jpg"]
    assert hits[0]["caption"] == "a photo of something green"


def test_rerank_without_text_is_a_400(client, lib):
    item = lib.search("red", k=1)[0].item_id
    r = client.post("/api/search", json={"like": [item], "rerank": "itm"})
    assert r.status_code == 400, r.text
    assert "text" in r.json()["error"]["message"]
    r = client.get("/api/search", params={"q": "red", "rerank": "bm25"})
    assert r.status_code == 422


def test_missing_itm_model_is_a_503_saying_how_to_supply_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    make_image(tmp_path / "p" / "red.jpg", "red")
    with Library(tmp_path / "lib", encoder=ColourEncoder()) as lib:
        lib.index([tmp_path / "p"])
        with TestClient(create_app(lib), base_url="http://127.0.0.1") as c:
            r = c.get("/api/search", params={"q": "red", "rerank": "itm"})
    assert r.status_code == 503, r.text
    assert "--itm-model" in r.json()["error"]["message"]


def test_status_reports_caption_coverage(client):
    st = client.get("/api/status").json()
    assert (
        st["captions"]["by_kind"]["image"]["with_text"]
        == st["captions"]["by_kind"]["image"]["items"]
    )
    assert st["captions"]["texts"] >= st["captions"]["by_kind"]["image"]["items"]
