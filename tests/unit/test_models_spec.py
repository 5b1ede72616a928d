"""Model spec strings: every form parses, prints back canonically, and bad ones fail clearly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clipsearch.errors import ModelError, UnknownModelError
from clipsearch.models import DEFAULT_MODEL, ModelSpec, load_encoder, parse_spec
from tests.fakes import register_tiny_models


@pytest.mark.parametrize(
    ("text", "kind", "canonical"),
    [
        ("ViT-B-32:laion2b_s34b_b79k", "pretrained", "ViT-B-32:laion2b_s34b_b79k"),
        ("  ViT-B-32:laion2b_s34b_b79k  ", "pretrained", "ViT-B-32:laion2b_s34b_b79k"),
        ("ViT-B/32:OpenAI", "pretrained", "ViT-B-32:openai"),  # open_clip's name/tag cleaning
        ("ViT-L-14:datacomp-xl-s13b-b90k", "pretrained", "ViT-L-14:datacomp_xl_s13b_b90k"),
        (
            "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
            "hf-hub",
            "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
        ),
        ("ViT-B-32@/models/w.safetensors", "weights", "ViT-B-32@/models/w.safetensors"),
        ("/models/ft.safetensors", "checkpoint", "/models/ft.safetensors"),
    ],
)
def test_forms_parse_and_round_trip(text, kind, canonical):
    spec = parse_spec(text)
    assert spec.kind == kind
    assert str(spec) == canonical
    assert parse_spec(str(spec)) == spec  # canonical form is a fixed point
    assert parse_spec(spec) is spec


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(parse_spec("ft.safetensors")) == str(tmp_path / "ft.safetensors")
    assert str(parse_spec("./runs/ft.safetensors")) == str(tmp_path / "runs" / "ft.safetensors")
    assert str(parse_spec("runs/ft.pt")) == str(tmp_path / "runs" / "ft.pt")
    weights = parse_spec("ViT-B-32@w.bin")
    assert (weights.kind, weights.arch, weights.path) == (
        "weights",
        "ViT-B-32",
        str(tmp_path / "w.bin"),
    )
    # the canonical form no longer depends on the working directory
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    assert parse_spec(str(weights)) == weights


def test_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert str(parse_spec("~/m/ck.safetensors")) == str(tmp_path / "m" / "ck.safetensors")


def test_at_sign_inside_a_path(tmp_path):
    spec = parse_spec(f"{tmp_path}/odd@name.safetensors")
    assert spec.kind == "checkpoint" and spec.path.endswith("odd@name.safetensors")


def test_bare_architecture_means_its_default_tag():
    assert str(parse_spec("ViT-B-32")) == DEFAULT_MODEL
    rn50 = parse_spec("RN50")
    assert rn50.kind == "pretrained" and rn50.arch == "RN50" and rn50.tag  # open_clip's first tag


def test_is_local():
    assert parse_spec("ViT-B-32@/w.safetensors").is_local
    assert parse_spec("/ck.safetensors").is_local
    assert not parse_spec(DEFAULT_MODEL).is_local
    assert not parse_spec("hf-hub:org/repo").is_local


@pytest.mark.parametrize(
    "bad",
    ["", "   ", "hf-hub:", "hf-hub:no-slash", "ViT-B-32@", "ViT-B-32:", ":openai", "two words"],
)
def test_malformed_specs_are_clear_errors(bad):
    with pytest.raises(UnknownModelError) as info:
        parse_spec(bad)
    assert isinstance(info.value, ModelError) and info.value.exit_code == 3
    assert (
        "spec" in str(info.value)
        or "hf-hub:org/repo" in str(info.value)
        or "'@'" in str(info.value)
    )


def test_bare_architecture_without_tags_says_how_to_give_weights():
    register_tiny_models()
    with pytest.raises(UnknownModelError, match=r"no pretrained weights.*tiny-vit@"):
        parse_spec("tiny-vit")


def test_unknown_bare_architecture_suggests_near_matches():
    with pytest.raises(UnknownModelError, match=r"Did you mean: .*ViT-B-32"):
        parse_spec("ViT-B-23")


@pytest.mark.parametrize(
    ("spec", "suggestion"),
    [
        ("ViT-B-23:laion2b_s34b_b79k", "ViT-B-32"),
        ("vit-b-32:laion2b_s34b_b79k", "ViT-B-32"),  # case slip
        ("ViT-B-32:laion2b_s34b_b97k", "laion2b_s34b_b79k"),  # tag typo
    ],
)
def test_unknown_names_suggest_near_matches_before_any_download(spec, suggestion, monkeypatch):
    import open_clip.pretrained

    def no_download(*a, **k):
        raise AssertionError("an unknown name must be rejected before downloading")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", no_download)
    with pytest.raises(UnknownModelError) as info:
        load_encoder(spec)
    message = str(info.value)
    assert "Did you mean" in message and suggestion in message
    assert "\n" not in message


def test_spec_is_frozen_and_hashable():
    spec = parse_spec(DEFAULT_MODEL)
    with pytest.raises(AttributeError):
        spec.tag = "openai"  # type: ignore[misc]
    assert {spec: 1}[ModelSpec(kind="pretrained", arch="ViT-B-32", tag="laion2b_s34b_b79k")] == 1


def test_parsing_a_local_spec_does_not_touch_the_file_system(tmp_path):
    missing = tmp_path / "nope" / "ck.safetensors"
    assert str(parse_spec(str(missing))) == str(missing)
    assert not missing.parent.exists()
    assert os.path.isabs(parse_spec("x.safetensors").path)
    assert Path(parse_spec("ViT-B-32@x.pt").path).name == "x.pt"
