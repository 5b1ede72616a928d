"""`eval retrieval --rerank itm`: BLIP's two-stage protocol on the similarity matrix, and
the change in R@K reported next to the plain run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from clipsearch.eval.datasets import load_retrieval
from clipsearch.eval.itm import itm_rerank_matrix, register_itm_rerankers
from clipsearch.eval.runner import evaluate_retrieval
from clipsearch.eval.synthetic import COLOURS, make_image_set
from clipsearch.media import load_image
from clipsearch.models.blip import load_matcher
from clipsearch.search.itm import fuse
from tests.blipgen import ColourMatcher
from tests.fakes import ColourEncoder


@pytest.fixture(scope="module")
def colour_images(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth-img")
    make_image_set(out, n=len(COLOURS), caption_style="background", seed=3)
    return out


class ConfusedEncoder(ColourEncoder):
    """Text vectors are pseudo-random (seeded by the text): first-stage ranks are noise."""

    def encode_texts(self, texts):
        out = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:4], "little")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)


def test_each_rows_top_k_is_reordered_by_itm_and_lifted_above_the_rest(tmp_path, tiny_blip_itm):
    matcher = load_matcher(str(tiny_blip_itm), precision="fp32")
    ds_dir = tmp_path / "d"
    make_image_set(ds_dir, n=6, caption_style="background", seed=1, size=40)
    ds = load_retrieval(ds_dir / "images.csv")
    rng = np.random.default_rng(0)
    S = rng.uniform(-0.2, 0.4, (len(ds.captions), len(ds.media)))  # (T, M)
    out = itm_rerank_matrix(
        S, texts=ds.captions, media=ds.media, matcher=matcher, text_rows=True, k=3, rule="fusion"
    )
    ims = [load_image(p, min_side=32).image for p in ds.media]
    for t in range(S.shape[0]):
        top = np.argsort(-S[t])[:3]
        p = matcher.score_pairs([ds.captions[t]] * 3, [ims[m] for m in top]).probability
        want = top[np.argsort(-fuse(p, S[t, top], "fusion"), kind="stable")]
        assert list(np.argsort(-out[t])[:3]) == list(want)
        rest = np.argsort(-S[t])[3:]
        assert list(np.argsort(-out[t])[3:]) == list(rest)
        np.testing.assert_array_equal(out[t, rest], S[t, rest])


def test_a_good_cross_encoder_repairs_a_bad_first_stage(colour_images):
    register_itm_rerankers(ColourMatcher(), k=len(COLOURS))
    ds = load_retrieval(colour_images / "images.csv")
    report = evaluate_retrieval(
        ds, ConfusedEncoder(), cache_dir=None, reranks=("none", "itm", "itm-prob")
    )
    by = {r.rerank: r.metrics for r in report.runs}
    assert by["none"].text_to_media.recall[1] < 50
    assert by["itm"].text_to_media.recall[1] == 100.0  # every caption names its image
    assert by["itm-prob"].text_to_media.recall[1] == 100.0
    assert by["itm"].media_to_text.recall[1] == 100.0


def test_itm_reranking_of_videos_reads_the_frame_nearest_the_caption(tmp_path):
    from clipsearch.eval.synthetic import make_video_set

    make_video_set(tmp_path, n=4, seed=1, caption_style="scene")
    ds = load_retrieval(tmp_path / "videos.csv", tmp_path / "videos", kind="video")
    matcher = ColourMatcher()
    register_itm_rerankers(matcher, k=4)
    report = evaluate_retrieval(ds, ColourEncoder(), cache_dir=None, reranks=("none", "itm"))
    assert {r.rerank for r in report.runs} == {"none", "itm"}
    shown = {(text, key[0]): colour for text, key, colour in matcher.seen}
    for caption, m in zip(ds.captions, ds.text_to_media, strict=True):
        # the ITM model saw a frame of the right video showing a colour the caption names
        assert shown[(caption, ds.media[m])] in caption
    assert all(key[1] is not None for _, key, _ in matcher.seen)  # a frame time


def test_cli_reports_the_change_next_to_the_plain_run(colour_images, tiny_blip_itm, monkeypatch):
    from clipsearch.cli import eval_cmd

    monkeypatch.setattr(eval_cmd.options, "load_encoder", lambda *a, **kw: ConfusedEncoder())
    import clipsearch.models.blip as blip

    monkeypatch.setattr(blip, "load_matcher", lambda name=None, **kw: ColourMatcher())
    runner = CliRunner()
    args = ["retrieval", "--captions", str(colour_images / "images.csv"), "--no-cache"]
    r = runner.invoke(eval_cmd.eval_app, [*args, "--rerank", "itm", "--rerank-k", "9", "--json"])
    assert r.exit_code == 0, r.output
    runs = json.loads(r.stdout)["runs"]
    assert [run["rerank"] for run in runs] == ["none", "itm"]
    assert json.loads(r.stdout)["rerankers"] == {"itm": "BLIP ITM fake:colour-itm (fp32), top 9"}
    assert runs[1]["text_to_media"]["R@1"] == 100.0 > runs[0]["text_to_media"]["R@1"]
    r = runner.invoke(eval_cmd.eval_app, [*args, "--rerank", "itm", "--rerank-k", "9", "--quiet"])
    assert r.exit_code == 0, r.output
    gain = 100.0 - runs[0]["text_to_media"]["R@1"]
    assert f"itm vs none: t→i R@1 +{gain:.1f}" in r.output
