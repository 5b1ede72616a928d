"""Prompt templates and the prompt-ensemble classifier (clipsearch.search.templates/zeroshot)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipsearch.errors import UsageError
from clipsearch.search.templates import (
    DEFAULT_TEMPLATES,
    IMAGENET_TEMPLATES,
    SIMPLE_TEMPLATES,
    fill_template,
    resolve_templates,
)
from clipsearch.search.zeroshot import build_classifier, softmax, zero_shot_logits
from tests.fakes import TextTableEncoder


def test_imagenet_templates_equal_open_clip_and_clip_benchmark():
    zsm = pytest.importorskip("open_clip.zero_shot_metadata")
    assert list(IMAGENET_TEMPLATES) == [f("{c}") for f in zsm.OPENAI_IMAGENET_TEMPLATES]
    assert list(SIMPLE_TEMPLATES) == [f("{c}") for f in zsm.SIMPLE_IMAGENET_TEMPLATES]
    assert len(IMAGENET_TEMPLATES) == 80
    cb = pytest.importorskip("clip_benchmark")
    path = Path(cb.__file__).parent / "datasets" / "en_zeroshot_classification_templates.json"
    assert json.loads(path.read_text())["imagenet1k"] == list(IMAGENET_TEMPLATES)


def test_resolve_templates_by_name_and_file(tmp_path):
    assert resolve_templates("imagenet") == list(IMAGENET_TEMPLATES)
    assert resolve_templates(" Default ") == list(DEFAULT_TEMPLATES)
    f = tmp_path / "t.txt"
    f.write_text("a photo of {c}\n\n  {c} again  \n")
    assert resolve_templates(str(f)) == ["a photo of {c}", "{c} again"]
    assert fill_template("a {c} and {other}", "dog") == "a dog and {other}"


def test_resolve_templates_errors(tmp_path):
    with pytest.raises(UsageError, match="unknown template set 'imagenett'"):
        resolve_templates("imagenett")
    f = tmp_path / "t.txt"
    f.write_text("a photo without placeholder\n")
    with pytest.raises(UsageError, match="no \\{c\\} or \\{\\} placeholder"):
        resolve_templates(str(f))
    f.write_text("\n \n")
    with pytest.raises(UsageError, match="no templates"):
        resolve_templates(str(f))


def test_build_classifier_hand_computed_ensemble():
    enc = TextTableEncoder(
        {
            "a cat": [2.0, 0.0, 0.0],  # normalised: (1, 0, 0)
            "the cat": [0.0, 5.0, 0.0],  # normalised: (0, 1, 0)
            "a dog": [0.0, 0.0, 1.0],
            "the dog": [0.0, 0.0, 3.0],
        }
    )
    W = build_classifier(enc, ["cat", "dog"], ["a {c}", "the {c}"], batch_size=3)
    # cat: mean of (1,0,0) and (0,1,0) = (.5,.5,0) -> normalised (1/√2, 1/√2, 0).
    # Averaging unnormalised embeddings would give (1, 2.5, 0) instead.
    np.testing.assert_allclose(W[0], [2**-0.5, 2**-0.5, 0.0], atol=1e-7)
    np.testing.assert_allclose(W[1], [0.0, 0.0, 1.0], atol=1e-7)
    assert enc.calls == [3, 1]  # prompts batched across classes
    logits = zero_shot_logits(np.array([[1.0, 0.0, 0.0]], np.float32), W)
    np.testing.assert_allclose(logits, [[100 * 2**-0.5, 0.0]], atol=1e-4)
    p = softmax(logits)
    assert p.shape == (1, 2) and p[0, 0] > 0.99 and np.isclose(p.sum(), 1.0)


@pytest.mark.parametrize(
    "classnames, templates, match",
    [
        ([], ["{c}"], "no class names"),
        (["cat", " "], ["{c}"], "blank"),
        (["cat", "dog", "cat"], ["{c}"], "duplicate class names: cat"),
        (["cat"], ["a photo"], "placeholder"),
        (["cat"], [], "no templates"),
    ],
)
def test_build_classifier_bad_input(classnames, templates, match):
    with pytest.raises(UsageError, match=match):
        build_classifier(TextTableEncoder({}, dim=3), classnames, templates)


def test_templates_file_may_use_clip_benchmarks_or_openai_clips_placeholder(tmp_path):
    """A templates file written for CLIP_benchmark (``{c}``) or for OpenAI CLIP's notebook
    (``{}``, filled by ``str.format``) gives the same prompts and the same classifier."""
    table = {
        "a cat": [2.0, 0.0, 0.0],
        "the cat": [0.0, 5.0, 0.0],
        "a dog": [0.0, 0.0, 1.0],
        "the dog": [0.0, 0.0, 3.0],
    }
    benchmark_style = tmp_path / "cb.txt"
    benchmark_style.write_text("a {c}\nthe {c}\n")
    notebook_style = tmp_path / "openai.txt"
    notebook_style.write_text("a {}\nthe {}\n")
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("a {}\nthe {c}\n")
    want = build_classifier(
        TextTableEncoder(table), ["cat", "dog"], resolve_templates(str(benchmark_style))
    )
    for path in (notebook_style, mixed):
        templates = resolve_templates(str(path))
        assert [fill_template(t, "cat") for t in templates] == ["a cat", "the cat"]
        got = build_classifier(TextTableEncoder(table), ["cat", "dog"], templates)
        np.testing.assert_array_equal(got, want)
    assert fill_template("{} and {c} and {other}", "dog") == "dog and dog and {other}"
