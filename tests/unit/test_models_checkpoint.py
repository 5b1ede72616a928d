"""The clipsearch checkpoint file: what its header records, and that writing it is safe."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from clipsearch.errors import ModelError
from clipsearch.models import read_checkpoint_info, save_checkpoint
from clipsearch.models.checkpoint import read_state_dict
from tests.fakes import make_tiny_model, tiny_model_config


@pytest.fixture(scope="module")
def model():
    return make_tiny_model("tiny-vit", seed=0)


def test_header_records_architecture_config_and_provenance(tmp_path, model):
    path = save_checkpoint(
        model,
        tmp_path / "sub" / "ft.safetensors",
        arch="tiny-vit",
        base_spec="tiny-vit@/w.safetensors",
        extra={"dataset": "pets", "epochs": "3"},
    )
    assert path.is_absolute() and path.exists()
    info = read_checkpoint_info(path)
    assert info.arch == "tiny-vit"
    assert info.model_cfg == tiny_model_config("tiny-vit")  # from open_clip's registry
    assert info.preprocess_cfg["size"] in (32, [32, 32]) and len(info.preprocess_cfg["mean"]) == 3
    assert info.base_spec == "tiny-vit@/w.safetensors"
    assert info.extra == {"dataset": "pets", "epochs": "3"}
    # the tensors are the model's, unchanged
    state = load_file(str(path))
    assert state.keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v), k


def test_no_base_spec_reads_back_as_none(tmp_path, model):
    info = read_checkpoint_info(save_checkpoint(model, tmp_path / "c.safetensors", arch="tiny-vit"))
    assert info.base_spec is None and info.extra == {}


def test_unregistered_architecture_needs_a_config(tmp_path, model):
    with pytest.raises(ModelError, match="model_cfg"):
        save_checkpoint(model, tmp_path / "x.safetensors", arch="not-registered-anywhere")
    cfg = tiny_model_config("tiny-vit")
    path = save_checkpoint(model, tmp_path / "x.safetensors", arch="my-arch", model_cfg=cfg)
    assert read_checkpoint_info(path).model_cfg == cfg


def test_extra_metadata_must_be_strings(tmp_path, model):
    with pytest.raises(TypeError, match="str -> str"):
        save_checkpoint(model, tmp_path / "x.safetensors", arch="tiny-vit", extra={"epochs": 3})
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_overwrite_is_atomic_and_leaves_no_temp_files(tmp_path, model):
    target = tmp_path / "ck.safetensors"
    save_checkpoint(model, target, arch="tiny-vit", extra={"v": "1"})
    save_checkpoint(model, target, arch="tiny-vit", extra={"v": "2"})
    assert read_checkpoint_info(target).extra == {"v": "2"}
    assert [p.name for p in tmp_path.iterdir()] == ["ck.safetensors"]


def test_ddp_prefix_is_stripped(tmp_path, model):
    wrapped = torch.nn.Module()
    wrapped.module = model
    path = save_checkpoint(wrapped, tmp_path / "ddp.safetensors", arch="tiny-vit")
    assert set(load_file(str(path))) == set(model.state_dict())


def test_shared_tensors_are_written(tmp_path, model):
    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(2, 2)
            self.b = torch.nn.Linear(2, 2)
            self.b.weight = self.a.weight

    tied = Tied()
    tied.visual = model.visual  # preprocess cfg lives on .visual
    path = save_checkpoint(tied, tmp_path / "tied.safetensors", arch="tiny-vit")
    state = load_file(str(path))
    assert torch.equal(state["a.weight"], state["b.weight"])


def test_foreign_and_damaged_headers(tmp_path, model):
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain), metadata={"format": "pt"})
    with pytest.raises(ModelError, match="not a clipsearch checkpoint"):
        read_checkpoint_info(plain)
    future = tmp_path / "future.safetensors"
    save_file(
        {"x": torch.zeros(2)},
        str(future),
        metadata={"clipsearch.format": "checkpoint", "clipsearch.version": "9"},
    )
    with pytest.raises(ModelError, match="version '9'"):
        read_checkpoint_info(future)
    damaged = tmp_path / "damaged.safetensors"
    meta = {
        "clipsearch.format": "checkpoint",
        "clipsearch.version": "1",
        "arch": "tiny-vit",
        "model_cfg": "{oops",
    }
    save_file({"x": torch.zeros(2)}, str(damaged), metadata=meta)
    with pytest.raises(ModelError, match="damaged header"):
        read_checkpoint_info(damaged)
    torch_file = tmp_path / "w.pt"
    torch.save({"x": torch.zeros(2)}, torch_file)
    with pytest.raises(ModelError, match="not a clipsearch checkpoint"):
        read_checkpoint_info(torch_file)


def test_format_is_sniffed_from_bytes_not_the_name(tmp_path):
    st_named_pt = tmp_path / "weights.pt"
    save_file({"x": torch.arange(3.0)}, str(st_named_pt))
    assert torch.equal(read_state_dict(st_named_pt)["x"], torch.arange(3.0))
    pt_named_st = tmp_path / "weights.safetensors"
    torch.save({"y": torch.ones(2)}, pt_named_st)
    assert torch.equal(read_state_dict(pt_named_st)["y"], torch.ones(2))


def test_empty_state_dict_is_refused(tmp_path):
    empty = tmp_path / "empty.pt"
    torch.save({}, empty)
    with pytest.raises(ModelError, match="does not hold a state dict"):
        read_state_dict(empty)


def test_metadata_is_plain_json(tmp_path, model):
    from safetensors import safe_open

    path = save_checkpoint(model, tmp_path / "c.safetensors", arch="tiny-vit")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["clipsearch.format"] == "checkpoint" and meta["clipsearch.version"] == "1"
    assert json.loads(meta["model_cfg"])["embed_dim"] == 32
