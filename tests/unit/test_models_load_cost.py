"""What makes loading cheaper must not change what is loaded: no random initialisation
before a strict load, and weight digests remembered across processes."""

from __future__ import annotations

import json
import os

import pytest
import torch

from clipsearch.models import checkpoint, load_encoder
from clipsearch.models.skip_init import skip_weight_init


def test_skip_weight_init_draws_no_random_numbers_and_restores_torch():
    original = torch.nn.init.kaiming_uniform_
    torch.manual_seed(0)
    with skip_weight_init():
        torch.nn.Linear(64, 64)
        torch.nn.MultiheadAttention(16, 2)
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))  # construction consumed no randomness
    assert torch.nn.init.kaiming_uniform_ is original
    with pytest.raises(RuntimeError), skip_weight_init():
        raise RuntimeError("boom")
    assert torch.nn.init.kaiming_uniform_ is original


def test_loaded_weights_are_the_files_not_leftovers(tiny_checkpoint):
    from safetensors.torch import load_file

    enc = load_encoder(str(tiny_checkpoint), precision="fp32")
    saved = load_file(str(tiny_checkpoint))
    state = enc.model.state_dict()
    for name in ("visual.conv1.weight", "token_embedding.weight", "text_projection"):
        assert torch.equal(state[name], saved[name])
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_weight_digest_is_remembered_across_processes(tiny_checkpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPSEARCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(checkpoint, "_DIGEST_CACHE", {})
    first = load_encoder(str(tiny_checkpoint), precision="fp32")
    assert checkpoint.digest_cache_path().is_file()

    # A new process: empty in-memory cache; hashing must not be needed.
    monkeypatch.setattr(checkpoint, "_DIGEST_CACHE", {})

    def no_hashing(model):
        raise AssertionError("the weights were hashed again")

    monkeypatch.setattr(checkpoint, "state_dict_digest", no_hashing)
    again = load_encoder(str(tiny_checkpoint), precision="fp32")
    assert again.fingerprint == first.fingerprint


def test_a_changed_file_or_damaged_cache_is_hashed_again(tiny_checkpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPSEARCH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(checkpoint, "_DIGEST_CACHE", {})
    calls = []
    real = checkpoint.state_dict_digest
    monkeypatch.setattr(checkpoint, "state_dict_digest", lambda m: calls.append(1) or real(m))
    fp = load_encoder(str(tiny_checkpoint), precision="fp32").fingerprint
    assert len(calls) == 1

    checkpoint.digest_cache_path().write_text("{damaged")
    monkeypatch.setattr(checkpoint, "_DIGEST_CACHE", {})
    assert load_encoder(str(tiny_checkpoint), precision="fp32").fingerprint == fp
    assert len(calls) == 2
    assert json.loads(checkpoint.digest_cache_path().read_text())["digests"]  # rewritten

    st = os.stat(tiny_checkpoint)
    os.utime(tiny_checkpoint, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    monkeypatch.setattr(checkpoint, "_DIGEST_CACHE", {})
    assert load_encoder(str(tiny_checkpoint), precision="fp32").fingerprint == fp
    assert len(calls) == 3  # same bytes, new mtime: hashed again, same fingerprint


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_loaded_weights_take_the_models_dtype_not_the_files(tmp_path, precision):
    """Weights are assigned, not copied, but converted first: an fp16 file loaded in fp32
    gives fp32 parameters (bf16: open_clip's mix, LayerNorm in fp32), equal to the file."""
    import open_clip

    from clipsearch.models import save_checkpoint
    from tests.fakes import register_tiny_models

    register_tiny_models()
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-vit").half()
    path = save_checkpoint(model, tmp_path / "fp16.safetensors", arch="tiny-vit")
    enc = load_encoder(str(path), precision=precision)
    dtypes = {p.dtype for p in enc.model.parameters()}
    if precision == "fp32":
        assert dtypes == {torch.float32}
    else:
        assert torch.bfloat16 in dtypes and torch.float16 not in dtypes
    ref = model.state_dict()["text_projection"].float()
    got = enc.model.state_dict()["text_projection"].float()
    torch.testing.assert_close(got, ref, rtol=1e-2 if precision == "bf16" else 0, atol=0)
    assert enc.encode_texts(["a dog"]).dtype.name == "float32"
