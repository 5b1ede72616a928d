"""CapFilt: captions of unlabelled images, filtered by ITM, written as the pairs CSV that
training reads; kept/dropped counts; `train --pairs auto:DIR` end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from clipsearch.errors import DatasetError, UsageError
from clipsearch.models.blip import load_captioner, load_matcher
from clipsearch.train.capfilt import (
    CapFiltOptions,
    auto_pairs_folder,
    find_images,
    make_pairs,
)
from clipsearch.train.data import read_pairs_file
from tests.blipgen import ColourCaptioner, ColourMatcher
from tests.fakes import make_image, register_tiny_models

COLOURS = ["red", "green", "blue", "yellow", "magenta", "cyan"]


class NoisyCaptioner(ColourCaptioner):
    """Names the right colour for images whose file name starts with "good", a wrong one
    otherwise (the captioner's mistakes the filter must catch)."""

    def caption(self, images, **kwargs):
        out = super().caption(images)
        return [
            c if getattr(im, "good", True) else c.rsplit(" ", 1)[0] + " purple"
            for c, im in zip(out, images, strict=True)
        ]


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "unlabelled"
    for i, c in enumerate(COLOURS):
        make_image(root / ("good" if i % 2 == 0 else "bad") / f"{c}.png", c)
    (root / "notes.txt").write_text("not an image")
    return root


def _mark_bad(monkeypatch):
    """Tag decoded images with whether their file is a "good" one (for NoisyCaptioner)."""
    import clipsearch.media as media

    real = media.load_image

    def load(path, **kw):
        decoded = real(path, **kw)
        decoded.image.good = "/good/" in str(path)
        return decoded

    monkeypatch.setattr(media, "load_image", load)


def test_the_filter_keeps_matching_captions_and_drops_the_rest(tmp_path, folder, monkeypatch):
    _mark_bad(monkeypatch)
    out = tmp_path / "pairs.csv"
    report = make_pairs(folder, out, NoisyCaptioner(), ColourMatcher(), CapFiltOptions())
    assert (report.images, report.captioned, report.kept, report.dropped) == (6, 6, 3, 3)
    assert report.images_kept == 3 and report.failed == 0
    with out.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r["image"] for r in rows} == {f"unlabelled/good/{c}.png" for c in COLOURS[::2]}
    assert all(float(r["itm_score"]) >= 0.5 for r in rows)
    data = read_pairs_file(out)  # the format `clipsearch train --pairs` reads
    assert len(data.media) == 3 and sorted(data.captions) == sorted(r["caption"] for r in rows)
    assert all(Path(p).is_file() for p in data.media)


def test_threshold_decides(tmp_path, folder, monkeypatch):
    _mark_bad(monkeypatch)
    everything = make_pairs(
        folder,
        tmp_path / "a.csv",
        NoisyCaptioner(),
        ColourMatcher(),
        CapFiltOptions(threshold=0.05),
    )
    nothing = make_pairs(
        folder,
        tmp_path / "b.csv",
        NoisyCaptioner(),
        ColourMatcher(),
        CapFiltOptions(threshold=0.95),
    )
    assert (everything.kept, everything.dropped) == (6, 0)
    assert (nothing.kept, nothing.dropped) == (0, 6)
    with pytest.raises(UsageError):
        CapFiltOptions(threshold=1.5).validate()


def test_real_tiny_models_captions_scored_against_their_own_images(tmp_path, folder,
                                                                   tiny_blip_itm, tiny_blip_caption):  # fmt: skip
    captioner = load_captioner(str(tiny_blip_caption), precision="fp32")
    matcher = load_matcher(str(tiny_blip_itm), precision="fp32")
    opts = CapFiltOptions(threshold=0.0, max_new_tokens=5, num_beams=1)
    probe = make_pairs(folder, tmp_path / "probe.csv", captioner, matcher, opts)
    with (tmp_path / "probe.csv").open(encoding="utf-8") as f:
        scores = sorted(float(r["itm_score"]) for r in csv.DictReader(f))
    assert probe.kept == len(scores) == 6 and len(set(scores)) == 6
    # a threshold between the scores splits them, and each kept score is the ITM score of
    # that very (image, caption) pair
    cut = (scores[2] + scores[3]) / 2
    report = make_pairs(folder, tmp_path / "pairs.csv", captioner, matcher,
                        CapFiltOptions(threshold=cut, max_new_tokens=5, num_beams=1))  # fmt: skip
    assert (report.kept, report.dropped) == (3, 3)
    with (tmp_path / "pairs.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    from clipsearch.media import load_image

    ims = [load_image(tmp_path / r["image"], min_side=32).image for r in rows]
    p = matcher.score_pairs([r["caption"] for r in rows], ims).probability
    np.testing.assert_allclose(p, [float(r["itm_score"]) for r in rows], atol=1e-5)


def test_sampled_captions_give_several_pairs_per_image(tmp_path, folder, tiny_blip_caption,
                                                       tiny_blip_itm):  # fmt: skip
    captioner = load_captioner(str(tiny_blip_caption), precision="fp32")
    matcher = load_matcher(str(tiny_blip_itm), precision="fp32")
    opts = CapFiltOptions(captions_per_image=3, threshold=0.0, max_new_tokens=5)
    report = make_pairs(folder, tmp_path / "s.csv", captioner, matcher, opts)
    assert report.captioned > 6 and report.kept == report.captioned
    again = make_pairs(folder, tmp_path / "t.csv", captioner, matcher, opts)
    assert (tmp_path / "s.csv").read_text() == (tmp_path / "t.csv").read_text()  # seeded
    assert again.kept == report.kept


def test_unreadable_images_are_counted_not_fatal(tmp_path, folder):
    (folder / "good" / "red.png").write_bytes(b"\x89PNG broken")
    report = make_pairs(folder, tmp_path / "p.csv", ColourCaptioner(), ColourMatcher())
    assert report.failed == 1 and report.kept == 5
    assert "red.png" in report.errors[0]["path"]


def test_bad_sources_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        find_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        find_images(tmp_path / "empty")
    assert auto_pairs_folder("auto:~/x").name == "x"
    assert auto_pairs_folder(tmp_path / "pairs.csv") is None
    with pytest.raises(UsageError):
        auto_pairs_folder("auto:")


def test_train_pairs_auto_builds_filters_and_trains(tmp_path, folder, monkeypatch, capsys):
    from clipsearch.cli.app import main

    register_tiny_models()
    import clipsearch.models.blip as blip

    monkeypatch.setattr(blip, "load_captioner", lambda name=None, **kw: NoisyCaptioner())
    monkeypatch.setattr(blip, "load_matcher", lambda name=None, **kw: ColourMatcher())
    _mark_bad(monkeypatch)
    for c in COLOURS:  # more good images so the split has a validation side
        make_image(folder / "good" / f"more-{c}.jpg", c)
    out = tmp_path / "run"
    argv = [
        "train", "--pairs", f"auto:{folder}", "--from-scratch", "tiny-vit", "--out", str(out),
        "--epochs", "1", "--batch-size", "4", "--workers", "1", "--val-fraction", "0.25",
    ]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr()
    assert "kept 9, dropped 3" in err.out + err.err
    saved = json.loads((out / "capfilt_report.json").read_text())
    assert (saved["kept"], saved["dropped"], saved["images"]) == (9, 3, 12)
    with (out / "capfilt_pairs.csv").open(encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 9
    assert (out / "checkpoint.safetensors").is_file()
