"""Text in pictures through the faces: the command line (index --ocr, search --json with
the matched text, --no-phrases, status) and the HTTP API (search fields, status), with the
real OCR reader on signs rendered here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clipsearch.ingest import IndexOptions
from clipsearch.library import Library
from clipsearch.server import create_app
from tests.fakes import ColourEncoder
from tests.textimages import write_sign


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faces") / "photos"
    write_sign(root / "pizza.jpg", "PIZZA NAPOLI", "red")
    write_sign(root / "birthday.jpg", "HAPPY BIRTHDAY", "blue")
    write_sign(root / "plain.jpg", None, "green")
    return root


def test_cli_index_search_status(photos, tmp_path, tiny_checkpoint, run_cli):
    lib = ["--library", str(tmp_path / "lib")]
    res = run_cli("index", photos, *lib, "--model", tiny_checkpoint, "--ocr", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["read"] == 3

    res = run_cli("search", "napoli", *lib, "-k", "2", "--json")
    assert res.exit_code == 0, res.output
    hits = json.loads(res.stdout)
    assert Path(hits[0]["path"]).name == "pizza.jpg"
    match = hits[0]["text_match"]
    assert match["text"].replace(" ", "") == "PIZZANAPOLI" and match["terms"] == ["napoli"]
    assert match["text"][slice(*match["spans"][0])].upper() == "NAPOLI"
    assert "text_match" not in hits[1]

    res = run_cli("search", '"happy birthday"', *lib, "--json")
    assert [Path(h["path"]).name for h in json.loads(res.stdout)] == ["birthday.jpg"]
    res = run_cli("search", '"happy birthday"', *lib, "--json", "--no-phrases")
    assert len(json.loads(res.stdout)) == 3

    res = run_cli("search", "napoli", *lib)  # the table shows the text in the picture
    assert "text in picture" in res.stdout and "NAPOLI" in res.stdout

    res = run_cli("status", *lib, "--json")
    ocr = json.loads(res.stdout)["ocr"]
    assert ocr["enabled"] and ocr["by_kind"]["image"] == {"items": 3, "read": 3, "with_text": 2}
    res = run_cli("status", *lib)
    assert "text in pictures (OCR)" in res.stdout


@pytest.fixture(scope="module")
def client(photos, tmp_path_factory):
    with Library(tmp_path_factory.mktemp("faces") / "lib", encoder=ColourEncoder()) as lib:
        lib.index([photos], options=IndexOptions(ocr=True))
        with TestClient(create_app(lib), base_url="http://127.0.0.1") as c:
            yield c


def test_http_search_returns_the_matched_text(client):
    res = client.get("/api/search", params={"q": "birthday", "k": 2})
    assert res.status_code == 200, res.text
    hits = res.json()["hits"]
    assert hits[0]["name"] == "birthday.jpg"
    assert hits[0]["text_match"]["terms"] == ["birthday"]
    assert hits[1]["text_match"] is None
    off = client.post("/api/search", json={"q": "birthday", "k": 2, "text_match": False})
    assert all(h["text_match"] is None for h in off.json()["hits"])


def test_http_quoted_phrases(client):
    hits = client.get("/api/search", params={"q": '"pizza napoli"'}).json()["hits"]
    assert [h["name"] for h in hits] == ["pizza.jpg"]
    hits = client.get("/api/search", params={"q": '"pizza napoli"', "phrases": "false"}).json()
    assert len(hits["hits"]) == 3


def test_http_status_has_ocr_coverage(client):
    ocr = client.get("/api/status").json()["ocr"]
    assert ocr["enabled"] is True and ocr["by_kind"]["image"]["with_text"] == 2
