"""The Library wiring of classification, tags as search filters, moderation, duplicates,
rerankers, the gap correction and composed queries, on a real library (ingest + catalog +
index) built with the ColourEncoder. The features themselves are unit-tested on catalogs
(tests/unit/test_classify.py, test_dedup.py, test_rescore.py, test_banks.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsearch.errors import NotFoundError, QueryError, QueryFileRefusedError, UsageError
from clipsearch.library import Library
from clipsearch.search import classify as C
from clipsearch.search import gap, rerank
from clipsearch.search.engine import SearchOptions
from tests.fakes import PALETTE, ColourEncoder, make_image
from tests.videogen import make_video

IMAGES = {
    "red_a.jpg": "red",
    "red_b.jpg": "red",
    "sub/red_c.png": "red",
    "blue_a.jpg": "blue",
    "blue_b.jpg": "blue",
    "sub/blue_c.png": "blue",
    "green_a.jpg": "green",
    "green_b.png": "green",
    "yellow_a.jpg": "yellow",
}
NEAR_THRESHOLD = 0.97  # same-colour images of different patterns score at most 0.96


def grid_image(size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(5)
    names = list(PALETTE)
    cells = np.array(
        [[PALETTE[names[c]] for c in row] for row in rng.integers(0, len(names), (3, 4))], np.uint8
    )
    return Image.fromarray(cells).resize(size, Image.Resampling.NEAREST)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for i, (name, colour) in enumerate(IMAGES.items()):
        make_image(root / name, colour, seed=100 + i)
    shutil.copyfile(root / "blue_a.jpg", root / "sub" / "blue_a copy.jpg")  # exact duplicate
    os.utime(root / "sub" / "blue_a copy.jpg", (2_000_000_000, 2_000_000_000))  # the newer one
    grid_image((320, 240)).save(root / "grid.png")
    grid_image((160, 120)).save(root / "sub" / "grid small.jpg", quality=85)  # near duplicate
    make_video(root / "clip.mp4", (("red", 2.0), ("blue", 2.0)), fps=8, size=(64, 48))
    return root


@pytest.fixture
def lib(tmp_path: Path, photos: Path):
    enc = ColourEncoder()
    with Library(tmp_path / "lib", encoder=enc) as lib:
        report = lib.index([photos])
        assert report.failed == 0 and report.added == len(IMAGES) + 4
        yield lib


def _name(path: str) -> str:
    return Path(path).name


def test_auto_tags_are_usable_as_search_filters(lib):
    clf = C.build_classifier(lib.encoder, "red,blue,purple")  # no item has any purple
    report = lib.tag(clf, threshold="auto")
    assert report.thresholds["red"] is not None and report.thresholds["blue"] is not None
    tagged = lib.catalog.tags(list(lib.catalog.items(range(1, 100))))
    red_items = {i for i, t in tagged.items() if "red" in t}
    paths = {i: r.path for i, r in lib.catalog.items(list(tagged)).items()}
    red_names = {_name(paths[i]) for i in red_items}
    assert {_name(n) for n, c in IMAGES.items() if c == "red"} <= red_names
    assert not red_names & {_name(n) for n, c in IMAGES.items() if c != "red"}
    hits = lib.search("anything at all", where=["tag:red"], k=50)
    assert {h.item_id for h in hits} == red_items
    assert {h.item_id for h in lib.search("a blue sky", where=["tag:RED"], k=50)} == red_items
    # purple matches nothing: its scores are one group, so auto tags no item and says so
    assert report.thresholds["purple"] is None and report.counts["purple"] == 0
    assert any("'purple'" in n for n in report.notes)


def test_library_search_reranks_through_its_cached_banks(lib):
    q = lib.embed_query("a red thing")
    plain = lib.search("a red thing", k=5)
    assert plain == lib.searcher().search(q, SearchOptions(k=5, min_score=plain.min_score))
    assert not (lib.path / "rerank").exists()  # nothing is built for a plain search
    for method in ("is", "qbnorm", "dbnorm", "dbnorm-dynamic"):
        hits = lib.search("a red thing", k=5, rerank=method)
        gallery_bank = rerank.GALLERY_BANK_SIZE if method.startswith("dbnorm") else 0
        rescorer = rerank.HubnessRescorer(lib.banks.terms(gallery_bank_size=gallery_bank), method)
        same_cut = SearchOptions(k=5, min_score=hits.min_score)
        assert hits == lib.searcher().search(q, same_cut, rescorer=rescorer)
    assert len(list((lib.path / "rerank").glob("bank-*.npz"))) == 2  # with and without G_B
    with pytest.raises(UsageError, match="unknown reranker"):
        lib.search("red", rerank="bm25")  # type: ignore[arg-type]


def test_library_search_corrects_the_gap_for_example_images(lib, photos):
    hits = lib.search(image=photos / "red_a.jpg", k=3, gap_correction="center")
    assert _name(hits[0].path) == "red_a.jpg" and hits[0].score == pytest.approx(1.0, abs=2e-3)
    q = lib.embed_query(image=photos / "red_a.jpg")
    rescorer = gap.GapRescorer(lib.banks.gap(), lib.catalog.item_vectors, mode="center")
    same_cut = SearchOptions(k=3, min_score=hits.min_score)
    assert hits == lib.searcher().search(q, same_cut, rescorer=rescorer)
    assert len(list((lib.path / "rerank").glob("gap-*.npz"))) == 1


def test_compose_query_from_text_example_images_and_liked_items(lib, photos):
    red = lib.catalog.item_by_path(str(photos / "red_a.jpg"))
    liked = lib.compose_query(like=[red.id])
    assert lib.search(vector=liked, k=1)[0].item_id == red.id  # more like this: itself first
    moved = lib.compose_query("blue", like=[red.id], text_weight=3.0)
    assert _name(lib.search(vector=moved, k=1, kind="image")[0].path).startswith("blue")
    by_file = lib.compose_query(str(photos / "red_a.jpg"))  # a path in the text: an example
    np.testing.assert_allclose(by_file, liked, atol=2e-3)
    image = Image.open(photos / "green_a.jpg").convert("RGB")
    uploaded = lib.compose_query(images=[image])
    assert _name(lib.search(vector=uploaded, k=1)[0].path) == "green_a.jpg"
    with pytest.raises(QueryFileRefusedError):
        lib.compose_query(str(photos / "red_a.jpg"), files=False)
    with pytest.raises(NotFoundError, match="999999"):
        lib.compose_query("red", like=[999999])
    with pytest.raises(QueryError, match="empty"):
        lib.compose_query("   ")


# --- the CLI -------------------------------------------------------------------------------------
@pytest.fixture
def cli(lib, monkeypatch, run_cli):
    """``clipsearch classify|tag|moderate|dedup ...`` on ``lib`` with its colour encoder."""
    from clipsearch.cli import options

    monkeypatch.setattr(options, "open_library", lambda *a, **k: _reopen(lib))
    monkeypatch.setattr(options, "load_encoder", lambda *a, **k: lib.encoder)
    return run_cli


def _reopen(lib: Library) -> Library:
    return Library(lib.path, encoder=lib.encoder, create=False)


def test_cli_classify_files_and_items_as_json(cli, photos):
    res = cli(
        "classify",
        str(photos / "red_a.jpg"),
        str(photos / "clip.mp4"),
        "--labels",
        "red,blue",
        "--json",
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out[0]["top"][0]["label"] == "red" and 0.5 < out[0]["top"][0]["prob"] <= 1.0
    assert out[1]["kind"] == "video"
    res = cli("classify", "--labels", "red,blue,green,yellow", "--json", "-k", "1")
    items = {_name(r["path"]): r["top"][0]["label"] for r in json.loads(res.stdout)}
    assert items["green_b.png"] == "green" and len(items) == len(IMAGES) + 4


def test_cli_tag_moderate_dedup(cli, tmp_path):
    res = cli("tag", "--labels", "red,blue", "--threshold", "0.5", "--json")
    assert res.exit_code == 0, res.output
    counts = {r["label"]: r["tagged"] for r in json.loads(res.stdout)["labels"]}
    assert counts["red"] >= 3 and counts["blue"] >= 4
    policy = tmp_path / "p.toml"
    policy.write_text('[labels]\n"yellow" = 0.6\n')
    res = cli("moderate", "--policy", str(policy), "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["flagged"] == 1
    res = cli("dedup", "--threshold", str(NEAR_THRESHOLD), "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["removable"] == 2
    assert cli("dedup", "--threshold", str(NEAR_THRESHOLD)).exit_code == 0  # the Rich table


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tag", "--labels", "red", "--threshold", "1.5"], "between -1 and 1"),
        (["tag", "--labels", "red,Red"], "duplicate labels"),
        (["classify", "--labels", " , "], "no labels"),
        (["dedup", "--threshold", "-2"], "between -1 and 1"),
        (["moderate", "--policy", "POLICY"], "line 2"),
    ],
)
def test_cli_bad_input_is_one_red_line_and_exit_code_2(cli, tmp_path, args, message):
    bad = tmp_path / "bad.toml"
    bad.write_text('[labels]\n"red" = 7\n')
    res = cli(*[str(bad) if a == "POLICY" else a for a in args])
    assert res.exit_code == 2
    assert res.stderr.startswith("error:") and message in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
