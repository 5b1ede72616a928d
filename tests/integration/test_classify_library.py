"""Classification, tags as search filters, moderation, duplicates, rerankers and the gap
correction on a real library (ingest + catalog + index) built with the ColourEncoder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from clipsearch.errors import UsageError
from clipsearch.library import Library
from clipsearch.search import classify as C
from clipsearch.search import dedup, gap, rerank
from clipsearch.search.engine import SearchOptions
from clipsearch.search.moderation import ModerationPolicy, moderate
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


class ExactIndex:
    """Exact inner-product index over the catalog (used only while clipsearch.index has no
    IndexCache yet; the library's own index is used when it exists)."""

    def __init__(self, catalog) -> None:
        table = catalog.load_vectors()
        self.ids, self.vectors = table.ids, table.vectors.astype(np.float32)
        self.dim = self.vectors.shape[1]

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, queries, k, *, allowed=None, exact=False):
        from clipsearch.index.base import Matches

        S = np.atleast_2d(queries) @ self.vectors.T
        if allowed is not None:
            S[:, ~np.isin(self.ids, allowed)] = -np.inf
        top = np.argsort(-S, axis=1, kind="stable")[:, : min(k, len(self.ids))]
        scores = np.take_along_axis(S, top, axis=1)
        return Matches(np.where(np.isfinite(scores), self.ids[top], -1), scores.astype(np.float32))


def _attach_index(lib: Library) -> None:
    try:
        from clipsearch.index import IndexCache  # noqa: F401
    except ImportError:
        lib.vector_index = lambda: ExactIndex(lib.catalog)  # type: ignore[method-assign]


@pytest.fixture
def lib(tmp_path: Path, photos: Path):
    enc = ColourEncoder()
    with Library(tmp_path / "lib", encoder=enc) as lib:
        report = lib.index([photos])
        assert report.failed == 0 and report.added == len(IMAGES) + 4
        _attach_index(lib)
        yield lib


def _name(path: str) -> str:
    return Path(path).name


def test_items_are_classified_from_stored_vectors_without_decoding(lib):
    clf = C.build_classifier(lib.encoder, "red,blue,green,yellow", templates="simple")
    before = lib.encoder.images_encoded
    results = {_name(r.path): r for r in C.classify_items(lib, clf, top_k=2, per_moment=True)}
    assert lib.encoder.images_encoded == before
    for name, colour in IMAGES.items():
        assert results[_name(name)].prediction.labels[0] == colour
    clip = results["clip.mp4"]
    assert set(clip.prediction.labels) == {"red", "blue"}
    assert [m.label for m in clip.moments] == ["red", "blue"]
    assert clip.moments[0].end == pytest.approx(2.0, abs=0.5)


def test_auto_tags_are_usable_as_search_filters(lib):
    clf = C.build_classifier(lib.encoder, "red,blue,purple")  # no item has any purple
    report = C.tag_library(lib, clf, threshold="auto")
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


def test_retagging_one_label_keeps_the_others(lib):
    C.tag_library(lib, C.build_classifier(lib.encoder, "red"), threshold=0.5)
    C.tag_library(lib, C.build_classifier(lib.encoder, "blue"), threshold=0.5)
    tags = lib.catalog.tags(range(1, 100))
    assert any("red" in t for t in tags.values()) and any("blue" in t for t in tags.values())
    report = C.tag_library(lib, C.build_classifier(lib.encoder, "red"), threshold=1.0)
    assert report.counts["red"] == 0
    tags = lib.catalog.tags(range(1, 100))
    assert not any("red" in t for t in tags.values()) and any("blue" in t for t in tags.values())


def test_auto_needs_enough_items(tmp_path, fake_encoder):
    make_image(tmp_path / "p" / "one.jpg", "red")
    with Library(tmp_path / "small", encoder=fake_encoder) as small:
        small.index([tmp_path / "p"])
        with pytest.raises(UsageError, match="at least 8 items"):
            C.tag_library(small, C.build_classifier(fake_encoder, "red"), threshold="auto")


def test_moderation_flags_items_with_reason_score_and_video_time(lib, tmp_path):
    policy_file = tmp_path / "policy.toml"
    policy_file.write_text(
        '[labels]\n"red" = { threshold = 0.75, reason = "too red" }\n"yellow" = 0.75\n'
    )
    flags, checked = moderate(lib, ModerationPolicy.load(policy_file), tag=True)
    assert checked == len(IMAGES) + 4
    by_item = {}
    for f in flags:
        by_item.setdefault(_name(f.path), []).append(f)
    red_names = {_name(n) for n, c in IMAGES.items() if c == "red"}
    assert {n for n, fs in by_item.items() if fs[0].label == "red"} == red_names | {"clip.mp4"}
    assert [f.reason for f in by_item["yellow_a.jpg"]] == ["yellow"]
    (video_flag,) = by_item["clip.mp4"]
    assert video_flag.reason == "too red" and 0.0 <= video_flag.t < 2.0  # its best (red) frame
    assert all(f.score >= f.threshold for f in flags)
    assert [f.score for f in flags] == sorted((f.score for f in flags), reverse=True)
    tags = lib.catalog.tags(range(1, 100))
    assert sum("red" in t for t in tags.values()) == len(red_names) + 1
    # pooled video vectors are half red: below the threshold, so not flagged
    pooled = ModerationPolicy(ModerationPolicy.load(policy_file).rules, video="pooled")
    assert "clip.mp4" not in {_name(f.path) for f in moderate(lib, pooled)[0]}


def test_duplicates_exact_by_content_and_near_by_embedding(lib):
    report = dedup.find_duplicates(lib, threshold=NEAR_THRESHOLD, k=5)
    groups = {g.kind: g for g in report.groups}
    assert len(report.groups) == 2
    exact = groups["exact"]
    assert _name(exact.keep.path) == "blue_a.jpg"  # the older of two identical files
    assert [_name(m.path) for m in exact.remove] == ["blue_a copy.jpg"]
    near = groups["near"]
    assert _name(near.keep.path) == "grid.png"  # the larger resolution
    assert [_name(m.path) for m in near.remove] == ["grid small.jpg"]
    assert near.remove[0].similarity >= NEAR_THRESHOLD
    assert report.removable == 2
    exact_only = dedup.find_duplicates(lib, near=False)
    assert [g.kind for g in exact_only.groups] == ["exact"]
    # the exact (no index) neighbour search agrees with the index-backed one
    no_index = dedup.find_duplicates(lib, threshold=NEAR_THRESHOLD, k=5, use_index=False)
    assert [g.to_dict() for g in no_index.groups] == [g.to_dict() for g in report.groups]


def test_rerank_bank_is_built_once_persisted_and_refreshed(lib, photos, monkeypatch):
    terms = rerank.library_bank(lib, gallery_bank_size=0)
    files = list((lib.path / "rerank").glob("bank-*.npz"))
    assert len(files) == 1
    assert rerank.library_bank(lib, gallery_bank_size=0) is terms  # remembered until a change
    assert len(terms.item_ids) == len(IMAGES) + 4 and terms.n_query_bank == len(
        rerank.default_captions()
    )

    def no_rebuild(*a, **k):
        raise AssertionError("the bank was rebuilt although nothing changed")

    monkeypatch.setattr(rerank, "build_bank_terms", no_rebuild)
    C.tag_library(lib, C.build_classifier(lib.encoder, "red"), threshold=0.5)  # tags: same vectors
    again = rerank.library_bank(lib, gallery_bank_size=0)
    np.testing.assert_array_equal(again.query_lse, terms.query_lse)
    monkeypatch.undo()
    make_image(photos / "new_green.jpg", "green", seed=77)
    lib.index([photos])
    fresh = rerank.library_bank(lib, gallery_bank_size=0)
    assert len(fresh.item_ids) == len(terms.item_ids) + 1
    assert [p.name for p in (lib.path / "rerank").glob("bank-*.npz")] != [f.name for f in files]
    assert len(list((lib.path / "rerank").glob("bank-*.npz"))) == 1  # the stale file is gone


def test_reranked_search_rescored_candidates(lib):
    q = lib.embed_query("a red thing")
    options = SearchOptions(k=5)
    plain = lib.searcher().search(q, options)
    assert rerank.reranked_search(lib, q, options, method="none") == plain
    terms = rerank.library_bank(lib)
    wide = lib.searcher().search(q, SearchOptions(k=50))
    for method in ("is", "qbnorm", "dbnorm", "dbnorm-dynamic"):
        hits = rerank.reranked_search(lib, q, options, method=method, terms=terms)
        expected = terms.rescore(
            np.array([h.item_id for h in wide]),
            np.array([h.score for h in wide]),
            method=method,
            top1=wide[0].item_id,
        )
        best = sorted(
            zip(expected.tolist(), [h.item_id for h in wide], strict=True),
            key=lambda t: (-t[0], t[1]),
        )[:5]
        assert [h.item_id for h in hits] == [i for _, i in best]
        np.testing.assert_allclose([h.score for h in hits], [s for s, _ in best], atol=1e-6)
        assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    page2 = rerank.reranked_search(lib, q, SearchOptions(k=2, offset=2), method="is", terms=terms)
    first = rerank.reranked_search(lib, q, SearchOptions(k=4), method="is", terms=terms)
    assert [h.item_id for h in page2] == [h.item_id for h in first[2:4]] and page2[0].rank == 3


def test_gap_corrected_image_search(lib, photos):
    g = gap.library_gap(lib)
    assert len(list((lib.path / "rerank").glob("gap-*.npz"))) == 1
    q = lib.embed_query(image=photos / "red_a.jpg")
    hits = gap.gap_corrected_search(lib, q, SearchOptions(k=3), gap=g, mode="center")
    assert _name(hits[0].path) == "red_a.jpg" and hits[0].score == pytest.approx(1.0, abs=2e-3)
    vecs = lib.catalog.item_vectors([h.item_id for h in hits])
    for h in hits:
        assert h.score == pytest.approx(
            float(g.correct(vecs[h.item_id], mode="center") @ g.correct(q, mode="center")), abs=1e-5
        )


# --- the CLI -------------------------------------------------------------------------------------
@pytest.fixture
def cli(lib, monkeypatch):
    from clipsearch.cli import classify_cmd

    monkeypatch.setattr(classify_cmd, "_open_library", lambda library, create=False: _reopen(lib))
    monkeypatch.setattr(classify_cmd, "_file_encoder", lambda model, library: lib.encoder)
    app = typer.Typer()
    for fn in (classify_cmd.classify, classify_cmd.tag, classify_cmd.moderate, classify_cmd.dedup):
        app.command()(fn)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def _reopen(lib: Library) -> Library:
    other = Library(lib.path, encoder=lib.encoder, create=False)
    _attach_index(other)
    return other


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
    assert message in res.output and "Traceback" not in res.output
