"""OpenClipEncoder on tiny open_clip models: same embeddings as open_clip itself, unit norms,
precisions, fingerprints, and the checkpoint round trip (also across processes)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clipsearch.models import (
    Encoder,
    OpenClipEncoder,
    load_encoder,
    read_checkpoint_info,
    save_checkpoint,
)
from tests.fakes import (
    COLOURS,
    colour_image,
    make_tiny_checkpoint,
    register_tiny_models,
    write_tiny_weights,
)

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["a red car", "a photo of a dog on the beach", "", "word " * 200]  # empty and over-long too


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    noise = [
        Image.fromarray(rng.integers(0, 256, (37 + i, 53, 3), dtype=np.uint8)) for i in range(3)
    ]
    return [colour_image(c, (64, 48), seed=i) for i, c in enumerate(COLOURS[:5])] + noise


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return write_tiny_weights(tmp_path_factory.mktemp("w") / "tiny.safetensors", seed=7)


def open_clip_reference(arch: str, weights: Path, images, texts):
    """open_clip's own path: create_model_and_transforms + get_tokenizer, normalised."""
    import open_clip

    register_tiny_models()
    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=str(weights))
    tokenizer = open_clip.get_tokenizer(arch)
    model.eval()
    with torch.no_grad():
        pixels = torch.stack([preprocess(im) for im in images])
        img = model.encode_image(pixels, normalize=True).numpy()
        txt = model.encode_text(tokenizer(texts), normalize=True).numpy()
    return pixels.numpy(), img, txt


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("arch", ["tiny-vit", "tiny-vit-wide"])
def test_embeddings_equal_open_clips_own(arch, tmp_path, images):
    weights = write_tiny_weights(tmp_path / f"{arch}.safetensors", arch=arch, seed=3)
    ref_pixels, ref_img, ref_txt = open_clip_reference(arch, weights, images, TEXTS)
    enc = load_encoder(f"{arch}@{weights}", precision="fp32")

    pixels = np.stack([enc.preprocess(im) for im in images])
    np.testing.assert_array_equal(pixels, ref_pixels)  # same transform, bit for bit
    assert cosines(enc.encode_pixels(pixels), ref_img).min() >= 0.9999
    assert cosines(enc.encode_images(images), ref_img).min() >= 0.9999
    assert cosines(enc.encode_texts(TEXTS), ref_txt).min() >= 0.9999


def test_preprocess_accepts_other_modes_like_open_clip(tiny_encoder):
    import open_clip

    transform = open_clip.transform.image_transform_v2(
        open_clip.transform.PreprocessCfg(**tiny_encoder.preprocess_cfg), is_train=False
    )
    rgba = Image.new("RGBA", (40, 30), (10, 200, 30, 128))
    grey = Image.new("L", (30, 40), 77)
    for im in (rgba, grey):
        np.testing.assert_array_equal(tiny_encoder.preprocess(im), transform(im).numpy())
        assert tiny_encoder.preprocess(im).dtype == np.float32


def test_preprocess_is_thread_safe(tiny_encoder, images):
    expected = [tiny_encoder.preprocess(im) for im in images]
    results: dict[tuple[int, int], np.ndarray] = {}

    def work(t: int) -> None:
        for _ in range(5):
            for i, im in enumerate(images):
                results[(t, i)] = tiny_encoder.preprocess(im)
                assert np.array_equal(results[(t, i)], expected[i])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == 4 * len(images)


def test_outputs_are_unit_float32_and_shapes(tiny_encoder, images):
    assert isinstance(tiny_encoder, Encoder) and isinstance(tiny_encoder, OpenClipEncoder)
    img = tiny_encoder.encode_images(images)
    txt = tiny_encoder.encode_texts(TEXTS)
    for vecs, n in ((img, len(images)), (txt, len(TEXTS))):
        assert vecs.dtype == np.float32 and vecs.shape == (n, tiny_encoder.dim)
        np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # distinct inputs, distinct vectors
    assert np.abs(img[0] - img[1]).max() > 1e-4 and np.abs(txt[0] - txt[1]).max() > 1e-4


def test_empty_batches(tiny_encoder):
    h, w = tiny_encoder.image_size
    assert tiny_encoder.encode_pixels(np.zeros((0, 3, h, w), np.float32)).shape == (0, 32)
    assert tiny_encoder.encode_texts([]).shape == (0, 32)
    assert tiny_encoder.encode_images([]).shape == (0, 32)


def test_wrong_pixel_shape_is_rejected(tiny_encoder):
    with pytest.raises(ValueError, match="expected pixels of shape"):
        tiny_encoder.encode_pixels(np.zeros((2, 3, 64, 64), np.float32))


def test_batches_are_chunked_without_changing_results(tiny_checkpoint, images):
    enc = load_encoder(str(tiny_checkpoint), precision="fp32")
    pixels = np.stack([enc.preprocess(im) for im in images])
    whole = enc.encode_pixels(pixels)
    texts = whole_texts = enc.encode_texts(TEXTS)
    enc.image_batch_size, enc.text_batch_size = 3, 1
    np.testing.assert_allclose(enc.encode_pixels(pixels), whole, atol=1e-6)
    np.testing.assert_allclose(enc.encode_texts(TEXTS), whole_texts, atol=1e-6)
    assert texts.shape == (len(TEXTS), 32)


def test_attributes(tiny_encoder, tiny_checkpoint):
    assert tiny_encoder.spec == str(tiny_checkpoint)
    assert tiny_encoder.dim == 32 and tiny_encoder.context_length == 32
    assert tiny_encoder.image_size == (32, 32) and tiny_encoder.precision == "fp32"
    assert tiny_encoder.arch == "tiny-vit" and tiny_encoder.model_cfg["embed_dim"] == 32
    expected_scale = float(tiny_encoder.model.logit_scale.detach().exp())
    assert (
        tiny_encoder.logit_scale == pytest.approx(expected_scale) and tiny_encoder.logit_scale > 1
    )
    assert tiny_encoder.tokenizer(["hi"]).shape == (1, 32)
    assert not tiny_encoder.model.training


def test_non_square_model_size(tmp_path):
    ck = make_tiny_checkpoint(tmp_path / "wide.safetensors", arch="tiny-vit-wide")
    enc = load_encoder(str(ck), precision="fp32")
    assert enc.image_size == (48, 32) and enc.dim == 48 and enc.context_length == 24
    assert enc.preprocess(Image.new("RGB", (100, 100), "red")).shape == (3, 48, 32)
    assert enc.encode_images([Image.new("RGB", (100, 100), "red")]).shape == (1, 48)


# --- checkpoints -------------------------------------------------------------------------------
def test_arch_at_safetensors_and_weights_only_pt_load_exactly(tmp_path, weights, images):
    pt = write_tiny_weights(tmp_path / "tiny.pt", seed=7)
    a = load_encoder(f"tiny-vit@{weights}", precision="fp32")
    b = load_encoder(f"tiny-vit@{pt}", precision="fp32")
    for name, tensor in a.model.state_dict().items():
        assert torch.equal(tensor, b.model.state_dict()[name]), name
    np.testing.assert_array_equal(a.encode_images(images), b.encode_images(images))
    assert a.fingerprint == b.fingerprint  # same weights, same vector space


def test_open_clip_training_checkpoint_layout_loads(tmp_path, weights, images):
    """{"state_dict": {"module.x": ...}, "epoch": 3} as open_clip's trainer writes it."""
    from safetensors.torch import load_file

    state = {f"module.{k}": v for k, v in load_file(str(weights)).items()}
    path = tmp_path / "epoch_3.pt"
    torch.save({"epoch": 3, "name": "run", "state_dict": state}, path)
    a = load_encoder(f"tiny-vit@{weights}", precision="fp32")
    b = load_encoder(f"tiny-vit@{path}", precision="fp32")
    np.testing.assert_array_equal(a.encode_images(images), b.encode_images(images))


def test_checkpoint_round_trip_rebuilds_exactly(tmp_path, tiny_encoder, images):
    path = save_checkpoint(
        tiny_encoder.model,
        tmp_path / "copy.safetensors",
        arch=tiny_encoder.arch,
        model_cfg=tiny_encoder.model_cfg,
        base_spec=tiny_encoder.spec,
        extra={"run": "r1"},
    )
    info = read_checkpoint_info(path)
    assert (info.arch, info.base_spec, info.extra) == ("tiny-vit", tiny_encoder.spec, {"run": "r1"})
    again = load_encoder(str(path), precision="fp32")
    np.testing.assert_array_equal(again.encode_images(images), tiny_encoder.encode_images(images))
    np.testing.assert_array_equal(again.encode_texts(TEXTS), tiny_encoder.encode_texts(TEXTS))
    assert again.fingerprint == tiny_encoder.fingerprint and again.spec == str(path)


@pytest.mark.slow
def test_checkpoint_loads_in_a_fresh_process_without_registration(tiny_checkpoint, tiny_encoder):
    code = (
        "import json, sys\n"
        "from clipsearch.models import load_encoder\n"
        "e = load_encoder(sys.argv[1], precision='fp32')\n"
        "print(json.dumps({'fp': e.fingerprint, 't': e.encode_texts(['a red car']).tolist()}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tiny_checkpoint)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # the library prints nothing, not even open_clip's log lines
    out = json.loads(proc.stdout)
    assert out["fp"] == tiny_encoder.fingerprint  # stable across processes
    np.testing.assert_allclose(out["t"], tiny_encoder.encode_texts(["a red car"]), atol=1e-6)


# --- precision ---------------------------------------------------------------------------------
def test_bf16_casts_weights_and_agrees_with_fp32(tiny_checkpoint, tiny_encoder, images):
    bf = load_encoder(str(tiny_checkpoint), precision="bf16")
    assert bf.precision == "bf16"
    assert bf.model.visual.conv1.weight.dtype == torch.bfloat16  # weights, not autocast
    img, txt = bf.encode_images(images), bf.encode_texts(TEXTS)
    assert img.dtype == np.float32 and txt.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    assert cosines(img, tiny_encoder.encode_images(images)).min() >= 0.99
    assert cosines(txt, tiny_encoder.encode_texts(TEXTS)).min() >= 0.99
    assert bf.fingerprint == tiny_encoder.fingerprint  # precision does not change the space id


def test_fp16_on_cpu_works_or_fails_clearly(tiny_checkpoint, tiny_encoder, images):
    from clipsearch.errors import ModelError

    half = load_encoder(str(tiny_checkpoint), precision="fp16")
    try:
        vecs = half.encode_images(images)
    except ModelError as e:  # a CPU build without fp16 kernels
        assert "--precision fp32" in str(e)
        return
    assert cosines(vecs, tiny_encoder.encode_images(images)).min() >= 0.99


def test_auto_precision_resolves_to_a_concrete_one(tiny_checkpoint):
    assert load_encoder(str(tiny_checkpoint)).precision in ("fp32", "bf16")


# --- fingerprint -------------------------------------------------------------------------------
def test_fingerprint_tracks_weights_not_precision_or_location(
    tmp_path, tiny_checkpoint, tiny_encoder
):
    fp = tiny_encoder.fingerprint
    assert fp.startswith("tiny-vit-32d-")  # names the architecture and dim
    other_seed = make_tiny_checkpoint(tmp_path / "s1.safetensors", seed=1)
    assert load_encoder(str(other_seed), precision="fp32").fingerprint != fp

    # a "fine-tuned" copy: one weight nudged by 1e-3
    model = load_encoder(str(tiny_checkpoint), precision="fp32").model
    with torch.no_grad():
        model.text_projection[0, 0] += 1e-3
    tuned = save_checkpoint(
        model,
        tmp_path / "ft.safetensors",
        arch="tiny-vit",
        model_cfg=tiny_encoder.model_cfg,
        base_spec=tiny_encoder.spec,
    )
    assert load_encoder(str(tuned), precision="fp32").fingerprint != fp

    moved = tmp_path / "moved" / "same.safetensors"
    moved.parent.mkdir()
    moved.write_bytes(Path(tiny_checkpoint).read_bytes())
    assert load_encoder(str(moved), precision="fp32").fingerprint == fp


def test_local_specs_never_touch_the_network(monkeypatch, tiny_checkpoint, weights):
    import huggingface_hub
    import open_clip.pretrained

    def forbidden(*a, **k):
        raise AssertionError("a local spec must not download anything")

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", forbidden)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained_from_hf", forbidden)
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", forbidden, raising=False)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", forbidden)
    assert load_encoder(str(tiny_checkpoint), precision="fp32").dim == 32
    assert load_encoder(f"tiny-vit@{weights}", precision="fp32").dim == 32


def test_num_threads_is_applied(tiny_checkpoint):
    before = torch.get_num_threads()
    try:
        load_encoder(str(tiny_checkpoint), precision="fp32", num_threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
