"""What a user gets when a model cannot be loaded: one clear, typed error, never traceback soup,
never the network for a local file, never an unpickled object. Also the pretrained-tag path,
exercised offline with a fake tag whose "download" is a local file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clipsearch.errors import ModelError, UnknownModelError, WeightsUnavailableError
from clipsearch.models import load_encoder
from tests.fakes import make_tiny_checkpoint, register_tiny_models, write_tiny_weights


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return write_tiny_weights(tmp_path_factory.mktemp("w") / "tiny.safetensors", seed=5)


def one_paragraph(message: str) -> bool:
    return "\n" not in message and "Traceback" not in message


# --- offline ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raised",
    [
        RuntimeError("Failed to download weights for tag 'laion2b_s34b_b79k'"),
        FileNotFoundError("Failed to download file (open_clip_pytorch_model.bin)"),
        OSError("[Errno -3] Temporary failure in name resolution"),
    ],
)
def test_pretrained_tag_offline_says_how_to_supply_weights(monkeypatch, raised):
    import open_clip.pretrained

    def offline(*a, **k):
        raise raised

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        load_encoder("ViT-B-32:laion2b_s34b_b79k")
    message = str(info.value)
    assert one_paragraph(message)
    assert "ViT-B-32@/path/to/" in message  # a local weights file
    assert "HF_HOME" in message and "HF_HUB_OFFLINE=1" in message  # or a pre-filled cache
    assert "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in message  # where the weights live
    assert info.value.exit_code == 3


def test_real_offline_download_is_caught(monkeypatch, tmp_path):
    """The real open_clip + huggingface_hub code path, offline, with an empty cache."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(WeightsUnavailableError) as info:
        load_encoder("ViT-B-32:laion2b_s34b_b79k")
    assert one_paragraph(str(info.value)) and "ViT-B-32@" in str(info.value)


def test_hf_hub_offline_is_caught(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(WeightsUnavailableError) as info:
        load_encoder("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    message = str(info.value)
    assert one_paragraph(message) and "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K" in message
    assert "HF_HOME" in message


# --- the pretrained-tag path, offline ------------------------------------------------------------
@pytest.fixture
def fake_tag(monkeypatch, weights):
    """Give tiny-vit a pretrained tag whose download returns our local weights file."""
    import open_clip.pretrained

    register_tiny_models()
    cfg = {
        "hf_hub": "nobody/tiny-vit/",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "quick_gelu": True,
    }
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "tiny-vit", {"fake_tag": cfg})
    calls = []

    def download(pcfg, *a, **k):
        calls.append(pcfg)
        return str(weights)

    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", download)
    return calls


def test_pretrained_tag_loads_with_the_tags_preprocessing_and_activation(fake_tag, weights):
    import open_clip

    enc = load_encoder("tiny-vit:fake-tag", precision="fp32")
    assert enc.spec == "tiny-vit:fake_tag" and len(fake_tag) == 1
    assert enc.preprocess_cfg["mean"] == (0.5, 0.5, 0.5)
    assert enc.model_cfg.get("quick_gelu") is True  # trained with QuickGELU -> built with it

    # equal to open_clip built the way these weights were trained
    ref = open_clip.create_model("tiny-vit", pretrained=str(weights), force_quick_gelu=True).eval()
    pre = open_clip.transform.image_transform_v2(
        open_clip.transform.PreprocessCfg(**{**enc.preprocess_cfg}), is_train=False
    )
    from tests.fakes import colour_image

    img = colour_image("blue", (50, 40), seed=2)
    with torch.no_grad():
        expected = ref.encode_image(pre(img)[None], normalize=True).numpy()
    np.testing.assert_allclose(enc.encode_images([img]), expected, atol=1e-6)
    # the same weights with another activation and normalisation are another vector space
    assert enc.fingerprint != load_encoder(f"tiny-vit@{weights}", precision="fp32").fingerprint


def test_weights_spec_uses_preprocessing_all_tags_agree_on(fake_tag, weights):
    enc = load_encoder(f"tiny-vit@{weights}", precision="fp32")
    assert enc.preprocess_cfg["mean"] == (0.5, 0.5, 0.5)
    assert not enc.model_cfg.get("quick_gelu")  # the registered architecture, as named


# --- local files -------------------------------------------------------------------------------
def test_missing_files(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="not found"):
        load_encoder(str(tmp_path / "nope.safetensors"))
    register_tiny_models()
    with pytest.raises(WeightsUnavailableError, match="not found"):
        load_encoder(f"tiny-vit@{tmp_path / 'nope.safetensors'}")


def test_unknown_architecture_with_local_weights(weights):
    register_tiny_models()
    with pytest.raises(UnknownModelError, match=r"Did you mean: .*tiny-vit"):
        load_encoder(f"tiny-vti@{weights}")


def test_directory_is_not_a_weights_file(tmp_path):
    with pytest.raises(ModelError, match="not a file"):
        load_encoder(str(tmp_path))


def test_plain_weights_as_bare_path_say_to_name_the_architecture(weights):
    with pytest.raises(ModelError, match=r"not a clipsearch checkpoint.*ARCH@"):
        load_encoder(str(weights))


@pytest.mark.parametrize("content", [b"", b"\x00" * 10, b"not a model at all" * 50])
def test_garbage_files_are_clear_errors(tmp_path, content):
    register_tiny_models()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(content)
    with pytest.raises(ModelError) as info:
        load_encoder(f"tiny-vit@{bad}")
    assert one_paragraph(str(info.value)) and str(bad) in str(info.value)
    with pytest.raises(ModelError):
        load_encoder(str(bad))


def test_truncated_checkpoint(tmp_path):
    ck = make_tiny_checkpoint(tmp_path / "ck.safetensors")
    data = ck.read_bytes()
    ck.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError) as info:
        load_encoder(str(ck))
    assert one_paragraph(str(info.value))


def test_tensors_that_do_not_fit_the_architecture(weights, tmp_path):
    register_tiny_models()
    with pytest.raises(ModelError, match="do not fit") as info:
        load_encoder(f"tiny-vit-wide@{weights}")
    assert one_paragraph(str(info.value))
    partial = tmp_path / "partial.safetensors"
    from safetensors.torch import load_file, save_file

    state = load_file(str(weights))
    state.pop("text_projection")
    save_file(state, str(partial))
    with pytest.raises(ModelError, match="missing: text_projection"):
        load_encoder(f"tiny-vit@{partial}")


class _Exploit:
    """Unpickling this would create a file: proof that arbitrary objects are never loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_objects_are_refused_not_executed(tmp_path):
    register_tiny_models()
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"visual.proj": _Exploit(marker)}, evil)
    with pytest.raises(ModelError, match="never unpickles"):
        load_encoder(f"tiny-vit@{evil}")
    assert not marker.exists()


def test_non_tensor_state_dict_is_refused(tmp_path):
    register_tiny_models()
    odd = tmp_path / "odd.pt"
    torch.save({"visual.proj": 3}, odd)
    with pytest.raises(ModelError, match="not tensors"):
        load_encoder(f"tiny-vit@{odd}")


def test_unknown_precision_and_device(tmp_path):
    from clipsearch.errors import UsageError

    ck = make_tiny_checkpoint(tmp_path / "ck.safetensors")
    with pytest.raises(UsageError, match="precision"):
        load_encoder(str(ck), precision="int3")
    with pytest.raises(UsageError, match="device"):
        load_encoder(str(ck), device="toaster")
