"""Training modes freeze exactly the parameters they promise to."""

from __future__ import annotations

import pytest
import torch

from clipsearch.errors import UsageError
from clipsearch.train.modes import apply_mode, merged_model, trainable_state_dict
from tests.fakes import make_tiny_model

TEMPERATURE = {"logit_scale"}


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_full_trains_everything():
    model = make_tiny_model(seed=0)
    setup = apply_mode(model, "full")
    assert _trainable(model) == {n for n, _ in model.named_parameters()}
    assert setup.frozen_count == 0
    assert setup.image_tower_trainable and setup.text_tower_trainable


def test_lit_locks_the_whole_image_tower_and_trains_text_and_temperature():
    model = make_tiny_model(seed=0)
    setup = apply_mode(model, "lit")
    names = {n for n, _ in model.named_parameters()}
    visual = {n for n in names if n.startswith("visual.")}
    assert visual and not (_trainable(model) & visual)
    assert _trainable(model) == names - visual
    assert {"text_projection", "token_embedding.weight"} | TEMPERATURE <= _trainable(model)
    assert setup.eval_modules == [model.visual]  # kept in eval mode while training
    assert not setup.image_tower_trainable and setup.text_tower_trainable
    assert setup.frozen_count == sum(p.numel() for p in model.visual.parameters())


def test_proj_trains_only_the_projection_heads_and_temperature():
    model = make_tiny_model(seed=0)
    setup = apply_mode(model, "proj")
    assert _trainable(model) == {"visual.proj", "text_projection"} | TEMPERATURE
    assert setup.trainable_count == 64 * 32 + 32 * 32 + 1  # (width, embed) x2 + scale
    assert setup.image_tower_trainable and setup.text_tower_trainable


def test_modes_can_be_switched_on_the_same_model():
    model = make_tiny_model(seed=0)
    apply_mode(model, "proj")
    apply_mode(model, "full")
    assert _trainable(model) == {n for n, _ in model.named_parameters()}


def test_unknown_mode_is_a_usage_error():
    with pytest.raises(UsageError, match=r"unknown training mode 'adapter'.*full, lit, proj, lora"):
        apply_mode(make_tiny_model(seed=0), "adapter")


def test_lora_trains_adapters_only_and_merges_back_to_plain_weights():
    pytest.importorskip("peft", reason="LoRA mode needs the optional peft package")
    model = make_tiny_model(seed=0)
    base_keys = set(model.state_dict())
    setup = apply_mode(model, "lora", lora_rank=2, lora_alpha=4.0)
    trainable = _trainable(model)
    assert "logit_scale" in trainable
    adapters = trainable - TEMPERATURE
    assert adapters and all("lora_" in n for n in adapters)
    # Adapters sit on the MLPs and the attention of both towers.
    for part in ("visual.transformer", "mlp.c_fc", "mlp.c_proj", "attn", "transformer.resblocks"):
        assert any(part in n for n in adapters), part
    assert setup.trainable_count < 0.2 * setup.frozen_count

    # Make the adapters non-trivial (B starts at zero), then merge.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    model.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.randint(1, 1000, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        adapted = model.encode_image(x), model.encode_text(t)
        merged = merged_model(model, setup)
        plain = merged.encode_image(x), merged.encode_text(t)
    assert set(merged.state_dict()) == base_keys  # loads into the base architecture
    for a, b in zip(adapted, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        base = make_tiny_model(seed=0)
        original = base.encode_image(x), base.encode_text(t)
    for a, o in zip(adapted, original, strict=True):
        assert (a - o).abs().max() > 1e-3  # the adapters do change both towers
    # The live model keeps its adapters (training continues after a checkpoint).
    assert any("lora_" in n for n, _ in model.named_parameters())
    saved = trainable_state_dict(model)
    assert set(saved) == trainable  # adapters + temperature, for --resume
