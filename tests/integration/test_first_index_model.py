"""A library's model is chosen before the first index loads it: a first index interrupted
while the model loads (a long download, Ctrl-C) resumes with the same model."""

from __future__ import annotations

import pytest

import clipsearch.models as models
from clipsearch.library import Library
from clipsearch.models import DEFAULT_MODEL
from tests.fakes import ColourEncoder, make_image


def test_resuming_an_interrupted_first_index_uses_the_model_it_was_started_with(
    tmp_path, monkeypatch
):
    """`index FOLDER --model X` interrupted while X loads (a long download, Ctrl-C): the
    documented resume, `index FOLDER` without --model, must go on with X, not fall back
    to the default model (and try to download that)."""
    folder = tmp_path / "photos"
    make_image(folder / "red.jpg", "red")
    requested: list[str] = []

    def interrupted_load(spec, **kw):
        requested.append(spec)
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "load_encoder", interrupted_load)
    with Library(tmp_path / "lib", model="fake:colour") as lib, pytest.raises(KeyboardInterrupt):
        lib.index([folder])

    def load(spec, **kw):
        requested.append(spec)
        return ColourEncoder()

    monkeypatch.setattr(models, "load_encoder", load)
    with Library(tmp_path / "lib") as lib:  # the resume: no --model
        assert lib.model_spec == "fake:colour" != DEFAULT_MODEL
        assert lib.index([folder]).encoded == 1
    assert requested == ["fake:colour", "fake:colour"]


def test_an_explicit_model_replaces_an_unused_choice(tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    make_image(folder / "red.jpg", "red")

    def interrupted_load(spec, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "load_encoder", interrupted_load)
    with (
        Library(tmp_path / "lib", model="ViT-B-32:openai") as lib,
        pytest.raises(KeyboardInterrupt),
    ):
        lib.index([folder])
    monkeypatch.setattr(models, "load_encoder", lambda spec, **kw: ColourEncoder())
    with Library(tmp_path / "lib", model="fake:colour") as lib:
        assert lib.index([folder]).encoded == 1  # nothing was encoded: a new choice is fine
    with Library(tmp_path / "lib") as lib:
        assert lib.model_spec == "fake:colour"
