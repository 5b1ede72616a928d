"""The OpenVINO image encoder: export equals torch, int8 runs quietly, streams agree."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino")

from clipsearch.models import openvino_encoder as ovx


@pytest.fixture(scope="module")
def exported(tiny_encoder):
    return ovx.export_image_tower(tiny_encoder)


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((40, 3, 32, 32)).astype(np.float32)


def test_openvino_fp32_equals_torch_fp32(tiny_encoder, exported, pixels):
    enc = ovx.OpenVinoImageEncoder(tiny_encoder, exported, precision="fp32")
    got = enc.encode_pixels(pixels)
    want = tiny_encoder.encode_pixels(pixels)
    assert got.shape == want.shape == (40, tiny_encoder.dim)
    assert np.sum(got * want, axis=1).min() > 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # Same space, same identity: text and preprocessing are the torch encoder's.
    assert enc.fingerprint == tiny_encoder.fingerprint and enc.spec == tiny_encoder.spec
    assert np.array_equal(enc.encode_texts(["a cat"]), tiny_encoder.encode_texts(["a cat"]))
    assert enc.label == "openvino fp32"


def test_requests_in_flight_give_the_same_vectors(tiny_encoder, exported, pixels):
    one = ovx.OpenVinoImageEncoder(tiny_encoder, exported, precision="fp32")
    two = ovx.OpenVinoImageEncoder(tiny_encoder, exported, precision="fp32", streams=2)
    assert np.allclose(one.encode_pixels(pixels), two.encode_pixels(pixels), atol=1e-6)
    # a batch too small to give each request MIN_SLICE images goes as one request
    few = pixels[: 2 * ovx.MIN_SLICE - 1]
    assert np.allclose(one.encode_pixels(few), two.encode_pixels(few), atol=1e-6)


def test_wrong_pixel_shape_is_an_error(tiny_encoder, exported):
    enc = ovx.OpenVinoImageEncoder(tiny_encoder, exported, precision="fp32")
    with pytest.raises(ValueError, match="expected pixels"):
        enc.encode_pixels(np.zeros((2, 3, 16, 16), np.float32))
    assert enc.encode_pixels(np.zeros((0, 3, 32, 32), np.float32)).shape == (0, enc.dim)


def test_saved_model_reads_back_identically(tiny_encoder, exported, pixels, tmp_path):
    ovx.save_model(exported, tmp_path / "m.xml")
    model = ovx.read_model(tmp_path / "m.xml", tmp_path / "m.bin")
    a = ovx.OpenVinoImageEncoder(tiny_encoder, exported, precision="fp32").encode_pixels(pixels)
    b = ovx.OpenVinoImageEncoder(tiny_encoder, model, precision="fp32").encode_pixels(pixels)
    assert np.allclose(a, b, atol=1e-6)


def test_only_fp32_open_clip_models_are_exported(fake_encoder):
    from clipsearch.errors import ModelError

    with pytest.raises(ModelError, match="no open_clip model"):
        ovx.export_image_tower(fake_encoder)


@pytest.mark.slow
def test_int8_quantization_reports_progress_and_prints_nothing(
    tiny_encoder, exported, pixels, capfd
):
    seen: list[float] = []
    model = ovx.quantize_int8(exported, pixels[:16], progress=seen.append)
    enc = ovx.OpenVinoImageEncoder(tiny_encoder, model, precision="int8")
    out = enc.encode_pixels(pixels[16:])
    ref = tiny_encoder.encode_pixels(pixels[16:])
    assert out.shape == ref.shape
    assert np.sum(out * ref, axis=1).mean() > 0.9  # a working int8 model, not garbage
    assert seen and seen[-1] == pytest.approx(1.0) and seen == sorted(seen)
    captured = capfd.readouterr()
    assert captured.out == "" and captured.err == ""  # the library never prints
