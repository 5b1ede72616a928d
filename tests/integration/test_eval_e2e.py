"""End-to-end evaluation on generated datasets: fake encoder (known recall), tiny open_clip
model (runs, in range, cache reused), reports, and the `clipsearch eval` CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clipsearch.errors import DatasetError, UsageError
from clipsearch.eval.datasets import load_class_folders, load_retrieval
from clipsearch.eval.report import write_report
from clipsearch.eval.runner import evaluate_classification, evaluate_retrieval
from clipsearch.eval.synthetic import COLOURS, make_image_set, make_video_set
from tests.fakes import ColourEncoder, make_image


@pytest.fixture(scope="module")
def colour_images(tmp_path_factory) -> Path:
    """9 images, each a distinct background colour; captions name only that colour."""
    out = tmp_path_factory.mktemp("synth-img")
    make_image_set(out, n=len(COLOURS), caption_style="background", seed=3)
    return out


@pytest.fixture(scope="module")
def scene_videos(tmp_path_factory) -> tuple[Path, list]:
    out = tmp_path_factory.mktemp("synth-vid")
    videos = make_video_set(out, n=8, seed=1, caption_style="scene")
    return out, videos


def test_synthetic_sets_are_deterministic(tmp_path, colour_images):
    again = tmp_path / "again"
    make_image_set(again, n=len(COLOURS), caption_style="background", seed=3)
    assert (again / "images.csv").read_text() == (colour_images / "images.csv").read_text()
    for p in sorted((colour_images / "images").iterdir()):
        assert (again / "images" / p.name).read_bytes() == p.read_bytes()
    with pytest.raises(UsageError):
        make_image_set(tmp_path / "x", n=len(COLOURS) + 1, caption_style="background")


def test_fake_encoder_finds_every_distinct_colour(colour_images, tmp_path):
    ds = load_retrieval(colour_images / "images.csv")
    enc = ColourEncoder()
    report = evaluate_retrieval(ds, enc, cache_dir=tmp_path / "cache")
    (run,) = report.runs
    assert run.metrics.text_to_media.recall == {1: 100.0, 5: 100.0, 10: 100.0}
    assert run.metrics.media_to_text.recall[1] == 100.0
    assert run.metrics.text_to_media.mean_rank == 1.0
    assert report.n_media == report.n_texts == len(COLOURS)
    assert enc.images_encoded == len(COLOURS) and enc.texts_encoded == len(COLOURS)
    assert report.cache.misses == 2 and report.cache.hits == 0

    # second run: everything from the cache, no encoding at all
    enc2 = ColourEncoder()
    again = evaluate_retrieval(ds, enc2, cache_dir=tmp_path / "cache")
    assert enc2.images_encoded == 0 and enc2.texts_encoded == 0
    assert again.cache.hits == 2 and again.cache.misses == 0
    assert (again.runs[0].metrics.text_to_media.ranks == run.metrics.text_to_media.ranks).all()


def test_missing_and_corrupt_media_are_counted_and_evaluation_continues(colour_images, tmp_path):
    work = tmp_path / "set"
    make_image_set(work, n=len(COLOURS), caption_style="background", seed=3)
    images = sorted((work / "images").iterdir())
    images[0].unlink()  # missing
    images[1].write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)  # corrupt
    ds = load_retrieval(work / "images.csv")
    assert len(ds.skipped.missing_media) == 1
    report = evaluate_retrieval(ds, ColourEncoder(), cache_dir=None)
    assert len(report.skipped.undecodable_media) == 1
    assert images[1].name in report.skipped.undecodable_media[0]
    assert report.n_media == len(COLOURS) - 2 == report.n_texts
    assert report.runs[0].metrics.text_to_media.recall[1] == 100.0
    d = report.to_dict()["skipped"]
    assert d["missing_media"] == 1 and d["undecodable_media"] == 1


def test_nothing_decodable_is_a_dataset_error(tmp_path):
    make_image_set(tmp_path, n=2, caption_style="background")
    for p in (tmp_path / "images").iterdir():
        p.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="none of the 2 media could be decoded"):
        evaluate_retrieval(load_retrieval(tmp_path / "images.csv"), ColourEncoder(), cache_dir=None)


def test_unknown_reranker_fails_before_encoding(colour_images):
    enc = ColourEncoder()
    with pytest.raises(UsageError, match=r"unknown reranker 'bogus'; available: .*none.*qbnorm"):
        evaluate_retrieval(
            load_retrieval(colour_images / "images.csv"), enc, cache_dir=None, reranks=["bogus"]
        )
    assert enc.images_encoded == 0


def test_reranker_hook_is_applied_per_direction(colour_images):
    from clipsearch.eval import rerank

    seen = []

    def reverse(S, ctx):  # worst-first: every ground truth drops to the bottom
        seen.append((ctx.direction, S.shape, ctx.queries.shape[0], ctx.gallery.shape[0]))
        return -S

    rerank.register_reranker("reverse-test", reverse)
    ds = load_retrieval(colour_images / "images.csv")
    report = evaluate_retrieval(
        ds, ColourEncoder(), cache_dir=None, reranks=["none", "reverse-test"]
    )
    none, rev = report.runs
    n = len(COLOURS)
    assert none.metrics.text_to_media.recall[1] == 100.0
    assert rev.metrics.text_to_media.mean_rank == n and rev.metrics.media_to_text.mean_rank == n
    assert seen == [("text_to_media", (n, n), n, n), ("media_to_text", (n, n), n, n)]


def test_search_layer_rerankers_run_in_the_harness(colour_images):
    ds = load_retrieval(colour_images / "images.csv")
    report = evaluate_retrieval(
        ds, ColourEncoder(), cache_dir=None, reranks=["none", "qbnorm", "dbnorm"]
    )
    assert [r.rerank for r in report.runs] == ["none", "qbnorm", "dbnorm"]
    for run in report.runs:
        for d in (run.metrics.text_to_media, run.metrics.media_to_text):
            assert d.n == len(COLOURS) and 1 <= d.mean_rank <= len(COLOURS)


def test_video_poolings_from_one_cached_decode(scene_videos, tmp_path):
    out, videos = scene_videos
    ds = load_retrieval(out / "videos.csv", out / "videos", kind="video")
    enc = ColourEncoder()
    report = evaluate_retrieval(
        ds, enc, cache_dir=tmp_path / "c", poolings=["mean", "max", "softmax"], sampler="uniform:12"
    )
    assert [r.pooling for r in report.runs] == ["mean", "max", "softmax"]
    assert enc.images_encoded == 12 * len(videos)  # every video decoded and encoded once
    by = {r.pooling: r.metrics for r in report.runs}
    # Every scene lasts >= 1 s and uniform:12 samples every <= 1 s, so each video has pure
    # frames of both colours its caption names: under max pooling no video beats the
    # ground truth (R@1 = 100), but every other video showing one of them ties with it.
    assert by["max"].text_to_media.recall[1] == 100.0
    captions = [v.caption for v in videos]
    assert len(set(captions)) == len(captions)  # moments are unique in small sets

    def colours(v):
        return {v.scenes[v.target_scene].colour, v.scenes[v.target_scene + 1].colour}

    expected_ties = sum(
        any(colours(v) & {s.colour for s in w.scenes} for w in videos if w is not v) for v in videos
    )
    assert expected_ties > 0
    assert by["max"].text_to_media.n_tied == expected_ties
    for m in by.values():
        assert 0 <= m.text_to_media.recall[1] <= 100 and m.text_to_media.n == len(videos)

    # comparing another pooling/temperature re-uses the frames: nothing is encoded again
    enc2 = ColourEncoder()
    again = evaluate_retrieval(
        ds, enc2, cache_dir=tmp_path / "c", poolings=["softmax"], tau=0.01, sampler="uniform:12"
    )
    assert enc2.images_encoded == 0 and again.cache.misses == 0


def test_mean_pooling_scores_are_text_dot_meanp(scene_videos, tmp_path):
    from clipsearch.eval.embed import EmbeddingCache, embed_texts, embed_video_frames
    from clipsearch.eval.video import pooled_similarity, video_vectors

    out, videos = scene_videos
    enc = ColourEncoder()
    cache = EmbeddingCache(tmp_path)
    paths = [str(out / v.file) for v in videos]
    frames = embed_video_frames(enc, paths, sampler="uniform:4", cache=cache)
    assert frames.ok.all() and np.diff(frames.offsets).tolist() == [4] * len(videos)
    assert (np.diff(frames.times.reshape(len(videos), 4), axis=1) > 0).all()
    texts = embed_texts(enc, [v.caption for v in videos], cache=cache)
    S = pooled_similarity(texts, frames, "mean")
    np.testing.assert_allclose(S, texts @ video_vectors(frames).T, atol=1e-6)


def test_report_files(colour_images, tmp_path):
    ds = load_retrieval(colour_images / "images.csv")
    report = evaluate_retrieval(ds, ColourEncoder(), cache_dir=None)
    paths = write_report(report, tmp_path / "rep")
    names = sorted(p.name for p in paths)
    assert names == ["rank_histogram.png", "recall_at_k.png", "report.json", "report.md"]
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["runs"][0]["text_to_media"]["R@1"] == 100.0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| rerank | text→image R@1 |" in md and "| none | 100.0 |" in md
    for p in paths:
        assert p.stat().st_size > 0
    assert (tmp_path / "rep" / "recall_at_k.png").read_bytes()[:4] == b"\x89PNG"


def test_zero_shot_classification_with_fake_encoder(tmp_path):
    for colour in ("red", "green", "blue"):
        for i in range(3):
            make_image(tmp_path / "data" / colour / f"{i}.png", colour, seed=i)
    ds = load_class_folders(tmp_path / "data")
    report = evaluate_classification(
        ds, ColourEncoder(), templates=["a photo of a {c} thing."], cache_dir=tmp_path / "c"
    )
    assert report.metrics.top_k == {1: 100.0, 5: None}
    assert report.metrics.mean_per_class_recall == 100.0
    paths = write_report(report, tmp_path / "rep")
    assert {p.name for p in paths} == {"report.json", "report.md", "per_class_recall.png"}
    enc = ColourEncoder()
    evaluate_classification(
        ds, enc, templates=["a photo of a {c} thing."], cache_dir=tmp_path / "c"
    )
    assert enc.images_encoded == 0 and enc.texts_encoded == 0  # images and classifier cached


def test_tiny_open_clip_model_runs_in_range_and_reuses_cache(tiny_encoder, colour_images, tmp_path):
    ds = load_retrieval(colour_images / "images.csv")
    first = evaluate_retrieval(ds, tiny_encoder, cache_dir=tmp_path / "c", batch_size=4)
    m = first.runs[0].metrics
    for d in (m.text_to_media, m.media_to_text):
        assert all(0.0 <= v <= 100.0 for v in d.recall.values())
        assert 1 <= d.median_rank <= len(COLOURS) and 1 <= d.mean_rank <= len(COLOURS)
        assert d.recall[10] == 100.0  # 9 candidates: everything is within the top 10
    assert first.cache.misses == 2

    calls = []
    real_pixels, real_texts = tiny_encoder.encode_pixels, tiny_encoder.encode_texts
    try:
        tiny_encoder.encode_pixels = lambda *a, **k: calls.append("pixels") or real_pixels(*a, **k)
        tiny_encoder.encode_texts = lambda *a, **k: calls.append("texts") or real_texts(*a, **k)
        second = evaluate_retrieval(ds, tiny_encoder, cache_dir=tmp_path / "c", batch_size=4)
    finally:
        del tiny_encoder.encode_pixels, tiny_encoder.encode_texts
    assert calls == [] and second.cache.hits == 2
    assert second.to_dict()["runs"] == first.to_dict()["runs"]


# --- CLI -----------------------------------------------------------------------------------
@pytest.fixture
def cli(monkeypatch, run_cli):
    """``clipsearch eval ...`` with the colour encoder as the model."""
    from clipsearch.cli import options

    monkeypatch.setattr(options, "load_encoder", lambda *a, **k: ColourEncoder())
    return lambda *args: run_cli("eval", *args)


def test_cli_retrieval_report_and_cache(cli, colour_images, tmp_path):
    args = [
        "retrieval",
        "--captions",
        str(colour_images / "images.csv"),
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    r = cli(*args, "--report", str(tmp_path / "rep"), "--quiet")
    assert r.exit_code == 0, r.output
    assert "100.0" in r.output
    assert (tmp_path / "rep" / "report.md").is_file()
    r = cli(*args, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["runs"][0]["text_to_media"]["R@1"] == 100.0
    assert data["cache"] == {"hits": 2, "misses": 0}


@pytest.mark.parametrize(
    "pooling", [["mean,softmax,max"], ["mean", "softmax", "max"], ["mean,softmax", "max,mean"]]
)
def test_cli_video_poolings(cli, scene_videos, tmp_path, pooling):
    """Poolings to compare: comma-separated, repeated, or both (repeats dropped)."""
    out, _ = scene_videos
    r = cli(
        "retrieval",
        "--videos", str(out / "videos"),
        "--captions", str(out / "videos.csv"),
        *(a for p in pooling for a in ("--pooling", p)),
        "--no-cache",
        "--json",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert [run["pooling"] for run in json.loads(r.stdout)["runs"]] == ["mean", "softmax", "max"]


@pytest.mark.parametrize(
    "extra, code, message",
    [
        (
            ["--pooling", "mean,median"],
            2,
            "Invalid value for '--pooling': 'median' is not one of 'peak', 'mean', 'max', 'softmax'",
        ),
        (["--rerank", "none,bogus"], 2, "Invalid value for '--rerank': 'bogus' is not one of"),
        (["--format", "coco"], 2, "Invalid value for '--format'"),
        (["--batch-size", "0"], 2, "Invalid value for '--batch-size'"),
        (["--format", "karpathy"], 1, "videos.csv: not valid JSON"),
    ],
)
def test_cli_errors_are_one_red_line_with_the_error_exit_code(
    cli, scene_videos, extra, code, message
):
    out, _ = scene_videos
    r = cli(
        "retrieval",
        "--videos",
        str(out / "videos"),
        "--captions",
        str(out / "videos.csv"),
        "--no-cache",
        *extra,
    )
    assert r.exit_code == code
    assert r.stdout == ""
    assert r.stderr.startswith("error:") and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_cli_classify_and_synth(cli, tmp_path):
    r = cli("synth", "--out", str(tmp_path / "s"), "--images", "5", "--videos", "2")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s" / "images.csv").is_file() and (tmp_path / "s" / "videos.csv").is_file()
    assert len(list((tmp_path / "s" / "videos").glob("*.mp4"))) == 2
    r = cli("synth", "--out", str(tmp_path / "t"), "--image-captions", "shapes")
    assert r.exit_code == 2 and "Invalid value for '--image-captions'" in r.stderr
    assert not (tmp_path / "t").exists()
    for colour in ("red", "blue"):
        make_image(tmp_path / "cls" / colour / "a.png", colour)
    r = cli("classify", "--folder", str(tmp_path / "cls"), "--templates", "default", "--no-cache")
    assert r.exit_code == 0, r.output
    assert "100.0" in r.output
    r = cli("classify", "--folder", str(tmp_path / "cls"), "--templates", "nope", "--no-cache")
    assert r.exit_code == 2 and "unknown template set" in r.output


def test_report_without_matplotlib_still_writes_json_and_markdown(
    colour_images, tmp_path, monkeypatch
):
    import sys

    from clipsearch.errors import MissingDependencyError

    report = evaluate_retrieval(
        load_retrieval(colour_images / "images.csv"), ColourEncoder(), cache_dir=None
    )
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(MissingDependencyError, match=r"clipsearch\[eval\]"):
        write_report(report, tmp_path / "rep")
    assert (tmp_path / "rep" / "report.json").is_file() and (
        tmp_path / "rep" / "report.md"
    ).is_file()
    assert write_report(report, tmp_path / "rep2", plots=False) == [
        tmp_path / "rep2" / "report.json",
        tmp_path / "rep2" / "report.md",
    ]


# --- precision and runtime ---------------------------------------------------------------------
def test_eval_loads_the_model_in_fp32_unless_told_otherwise(monkeypatch, colour_images):
    """Reference numbers come from fp32: bf16 moved image->text R@1 from 0.0 to 1.7 on a
    random-weight model. --precision trades it for speed."""
    import clipsearch.models as models
    from clipsearch.cli import eval_cmd

    asked: list[str] = []

    def load(spec, *, precision="auto", **kw):
        asked.append(precision)
        return ColourEncoder()

    monkeypatch.setattr(models, "load_encoder", load)
    args = ["retrieval", "--captions", str(colour_images / "images.csv"), "--no-cache", "--json"]
    for extra, want in (
        ([], "fp32"),
        (["--precision", "bf16"], "bf16"),
        (["--precision", "auto"], "auto"),
    ):
        r = CliRunner().invoke(eval_cmd.eval_app, [*args, *extra])
        assert r.exit_code == 0, r.output
        assert asked[-1] == want


def test_every_report_records_precision_and_runtime(tiny_encoder, colour_images, tmp_path):
    ds = load_retrieval(colour_images / "images.csv")
    report = evaluate_retrieval(ds, tiny_encoder, cache_dir=None, batch_size=4)
    data = report.to_dict()
    assert data["precision"] == tiny_encoder.precision
    assert data["runtime"].startswith("torch ") and str(tiny_encoder.device) in data["runtime"]
    write_report(report, tmp_path / "rep", plots=False)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert f"precision {tiny_encoder.precision}" in md and "runtime torch " in md
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert saved["precision"] == tiny_encoder.precision and saved["runtime"] == data["runtime"]

    for colour in ("red", "blue"):
        make_image(tmp_path / "cls" / colour / "0.png", colour)
    cls = evaluate_classification(
        load_class_folders(tmp_path / "cls"), tiny_encoder, templates=["{c}"], cache_dir=None
    )
    assert cls.to_dict()["precision"] == tiny_encoder.precision
    assert cls.to_dict()["runtime"] == data["runtime"]
    write_report(cls, tmp_path / "rep-cls", plots=False)
    assert "runtime torch " in (tmp_path / "rep-cls" / "report.md").read_text()
