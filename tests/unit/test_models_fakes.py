"""The shared test doubles keep the promises other tests rely on (tests/fakes.py docstring)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clipsearch.models.base import Encoder
from tests.fakes import (
    COLOURS,
    PALETTE,
    ColourEncoder,
    TextTableEncoder,
    colour_image,
    make_image,
    register_tiny_models,
)

REPO = Path(__file__).resolve().parents[2]


def reencode(image: Image.Image, quality: int = 95) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


@pytest.fixture(scope="module")
def gallery() -> tuple[list[Image.Image], list[str]]:
    images, labels = [], []
    for colour in COLOURS:
        for seed in range(4):
            images.append(
                reencode(colour_image(colour, (60 + seed, 45), seed=100 * seed + len(colour)))
            )
            labels.append(colour)
    return images, labels


def test_is_an_encoder_with_fixed_identity(fake_encoder):
    assert isinstance(fake_encoder, Encoder)
    assert (fake_encoder.spec, fake_encoder.fingerprint, fake_encoder.dim) == (
        "fake:colour",
        "fake-colour-32d-v1",
        32,
    )
    assert len(PALETTE) >= 11 and {"red", "gray", "orange", "purple", "white", "black"} <= set(
        PALETTE
    )


@pytest.mark.parametrize("template", ["{}", "a photo of something {}", "{} car", "A {} THING."])
def test_text_naming_a_colour_ranks_that_colour_first(fake_encoder, gallery, template):
    images, labels = gallery
    image_vecs = fake_encoder.encode_images(images)
    text_vecs = fake_encoder.encode_texts([template.format(c) for c in COLOURS])
    predicted = np.array(COLOURS)[(image_vecs @ text_vecs.T).argmax(1)]
    assert list(predicted) == labels  # image -> its colour's text
    best_image = np.array(labels)[(text_vecs @ image_vecs.T).argmax(1)]
    assert list(best_image) == list(COLOURS)  # text -> an image of that colour


def test_mostly_not_all_one_colour(fake_encoder):
    canvas = np.zeros((40, 40, 3), np.uint8)
    canvas[:] = PALETTE["blue"]
    canvas[:, :16] = PALETTE["yellow"]  # 40% yellow, 60% blue
    vec = fake_encoder.encode_images([Image.fromarray(canvas)])
    texts = fake_encoder.encode_texts(["blue", "yellow", "red"])
    scores = (vec @ texts.T)[0]
    assert scores[0] > scores[1] > scores[2]


def test_image_query_finds_itself_first(fake_encoder, gallery):
    images, _ = gallery
    vecs = fake_encoder.encode_images(images)
    sims = vecs @ vecs.T
    np.testing.assert_allclose(np.diag(sims), 1.0, atol=1e-5)
    off = sims - 2 * np.eye(len(images))
    assert off.max() < 0.98  # clear of fp16 storage error (~1e-3)
    # the same file decoded again after a lossy re-encode still finds itself
    requery = fake_encoder.encode_images([reencode(im, quality=75) for im in images])
    assert ((requery @ vecs.T).argmax(1) == np.arange(len(images))).all()


def test_texts_with_the_same_colour_differ_but_score_images_alike(fake_encoder, gallery):
    images, _ = gallery
    a, b = fake_encoder.encode_texts(["red car", "a photo of something red"])
    assert np.abs(a - b).max() > 1e-3
    vecs = fake_encoder.encode_images(images)
    np.testing.assert_allclose(vecs @ a, vecs @ b, atol=1e-6)


def test_grey_alias_and_word_boundaries(fake_encoder):
    grey, gray, reddit = fake_encoder.encode_texts(["grey", "gray", "reddit post"])
    np.testing.assert_allclose(grey[:13], gray[:13])
    assert reddit[:13].argmax() != 0 or abs(reddit[0]) < 0.9  # "reddit" is not "red"


def test_texts_without_colour_are_deterministic_directions(fake_encoder):
    a1, b = fake_encoder.encode_texts(["a dog on a beach", "a cat"])
    (a2,) = ColourEncoder().encode_texts(["  A dog  on a BEACH "])
    np.testing.assert_allclose(a1, a2)
    assert abs(float(a1 @ b)) < 0.9


def test_outputs_are_unit_float32_and_empty_batches(fake_encoder, gallery):
    images, _ = gallery
    for vecs in (fake_encoder.encode_images(images[:3]), fake_encoder.encode_texts(["x", "red"])):
        assert vecs.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert fake_encoder.encode_images([]).shape == (0, 32)
    assert fake_encoder.encode_texts([]).shape == (0, 32)
    assert fake_encoder.encode_pixels(np.zeros((0, 3, 32, 32), np.float32)).shape == (0, 32)
    with pytest.raises(ValueError):
        fake_encoder.encode_pixels(np.zeros((1, 3, 224, 224), np.float32))


def test_counters(fake_encoder, gallery):
    images, _ = gallery
    fake_encoder.encode_images(images[:3])
    fake_encoder.encode_texts(["a", "b"])
    assert (fake_encoder.images_encoded, fake_encoder.texts_encoded) == (3, 2)


def test_identical_across_processes(fake_encoder):
    code = (
        "from tests.fakes import ColourEncoder, colour_image\n"
        "e = ColourEncoder()\n"
        "print(repr(e.encode_images([colour_image('orange', seed=3)]).tobytes()))\n"
        "print(repr(e.encode_texts(['a dog']).tobytes()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    img, txt = out.stdout.splitlines()
    assert img == repr(fake_encoder.encode_images([colour_image("orange", seed=3)]).tobytes())
    assert txt == repr(fake_encoder.encode_texts(["a dog"]).tobytes())


def test_subclass_identity_overrides_work():
    class Other(ColourEncoder):
        spec = "fake:other"
        fingerprint = "other"

    enc = Other()
    assert (enc.spec, enc.fingerprint) == ("fake:other", "other")


# --- images ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_make_image_writes_the_format_and_size(tmp_path, fmt):
    path = make_image(tmp_path / "deep" / f"x.{fmt.lower()}", "green", size=(70, 30), fmt=fmt)
    with Image.open(path) as im:
        assert im.format == fmt and im.size == (70, 30)


def test_make_image_format_from_suffix_and_distinct_content(tmp_path, make_image):
    a = make_image(tmp_path / "a.png", "red")
    b = make_image(tmp_path / "b.png", "red")
    with Image.open(a) as ia, Image.open(b) as ib:
        assert ia.format == "PNG"
        pa, pb = np.asarray(ia, np.int16), np.asarray(ib, np.int16)
    assert not np.array_equal(pa, pb)  # names differ -> patterns differ
    assert np.abs(pa - np.array(PALETTE["red"])).max() <= 22  # still plainly red
    again = make_image(tmp_path / "a2.png", "red", seed=None)
    assert again.exists()


def test_make_image_is_deterministic_and_accepts_rgb(tmp_path):
    p1 = make_image(tmp_path / "1.png", (10, 20, 30), seed=4)
    p2 = make_image(tmp_path / "2.png", (10, 20, 30), seed=4)
    assert p1.read_bytes() == p2.read_bytes()


def test_every_palette_colour_stays_its_own_nearest(fake_encoder):
    for colour in COLOURS:
        for seed in range(3):
            vec = fake_encoder.encode_images([colour_image(colour, seed=seed)])[0]
            assert vec[: len(COLOURS)].argmax() == COLOURS.index(colour)


def test_register_tiny_models_is_idempotent():
    import open_clip

    register_tiny_models()
    n = len(open_clip.list_models())
    assert {"tiny-vit", "tiny-vit-wide"} <= set(register_tiny_models())
    assert len(open_clip.list_models()) == n


def test_text_table_encoder_returns_the_table_as_written():
    enc = TextTableEncoder({"a cat": [2, 0, 0], "a dog": [0, 0, 5]}, logit_scale=10)
    assert isinstance(enc, Encoder) and enc.dim == 3 and enc.logit_scale == 10.0
    out = enc.encode_texts(["a dog", "a cat", "a dog"])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0, 0, 5], [2, 0, 0], [0, 0, 5]])  # not normalised
    assert enc.encode_texts([]).shape == (0, 3)
    assert enc.calls == [3, 0]
    with pytest.raises(KeyError, match="a bird"):
        enc.encode_texts(["a cat", "a bird"])
    with pytest.raises(NotImplementedError):
        enc.encode_images([colour_image("red")])


def test_text_table_encoder_fingerprint_names_the_table():
    a = TextTableEncoder({"x": [1, 0]})
    assert a.fingerprint == TextTableEncoder({"x": [1.0, 0.0]}).fingerprint
    assert a.fingerprint != TextTableEncoder({"x": [0, 1]}).fingerprint
    assert TextTableEncoder({}, dim=4).dim == 4
    with pytest.raises(ValueError, match="one length"):
        TextTableEncoder({"x": [1, 0], "y": [1, 0, 0]})
