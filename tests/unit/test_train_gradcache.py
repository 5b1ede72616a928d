"""Gradient caching gives the gradients of the full-batch step (Gao et al. 2021)."""

from __future__ import annotations

import open_clip
import pytest
import torch

from clipsearch.train.gradcache import cached_step, full_batch_step
from clipsearch.train.loss import clip_loss, siglip_loss
from clipsearch.train.modes import apply_mode
from clipsearch.train.trainable import batch_model
from tests.fakes import make_tiny_model, register_tiny_models


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models run fastest single-threaded, and the CI machine is shared.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _batch(n: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(n, 3, 32, 32, generator=g)
    tokens = torch.randint(1, 5000, (n, 32), generator=g)
    tokens[:, 12:] = 0
    tokens[:, 11] = 49407  # end-of-text: open_clip pools the argmax token
    return pixels, tokens


def _grads(model, step, *, seed: int = 123, **kw) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    setup_image = any(p.requires_grad for p in model.visual.parameters())
    bm = batch_model(model, video=False, image_trainable=setup_image, text_trainable=True)
    pixels, tokens = _batch()
    torch.manual_seed(seed)
    loss = step(bm, pixels, tokens, **kw)
    return float(loss), {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }


def _assert_same_grads(a: dict, b: dict) -> None:
    """Equal up to float32 summation order: max error <= 1e-5 of the tensor's largest entry.

    (Element-wise relative tolerances fail on entries that are sums cancelling to ~0.)
    """
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        scale = b[name].abs().max().item()
        err = (a[name] - b[name]).abs().max().item()
        assert err <= 1e-5 * scale + 1e-9, f"{name}: max error {err:.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("loss_fn", [clip_loss, siglip_loss])
@pytest.mark.parametrize("micro_batch", [1, 3, 10])
def test_cached_step_equals_full_batch_gradients(loss_fn, micro_batch):
    model = make_tiny_model("tiny-vit", seed=0).train()
    full_loss, full = _grads(model, full_batch_step, loss_fn=loss_fn)
    cached_loss, cached = _grads(model, cached_step, loss_fn=loss_fn, micro_batch=micro_batch)
    assert cached_loss == pytest.approx(full_loss, rel=1e-5)
    _assert_same_grads(cached, full)
    # Every trainable tensor got a gradient, including the temperature.
    assert set(full) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert full["logit_scale"].abs() > 0


def test_cached_step_with_locked_image_tower_skips_it_and_matches():
    model = make_tiny_model("tiny-vit", seed=1).train()
    apply_mode(model, "lit")
    full_loss, full = _grads(model, full_batch_step, loss_fn=clip_loss)
    cached_loss, cached = _grads(model, cached_step, loss_fn=clip_loss, micro_batch=4)
    assert not any(n.startswith("visual.") for n in cached)
    assert cached_loss == pytest.approx(full_loss, rel=1e-5)
    _assert_same_grads(cached, full)


def test_cached_step_replays_the_rng_for_stochastic_layers():
    """With patch dropout, the re-forward must draw the masks of the cached forward.

    Reference: the same micro-batches forwarded *with* autograd, in the same order, from
    the same RNG state, the loss on their concatenation and one backward — what gradient
    caching computes without keeping all activations.
    """
    register_tiny_models()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.create_model("tiny-vit", force_patch_dropout=0.5).train()
    bm = batch_model(model, video=False, image_trainable=True, text_trainable=True)
    pixels, tokens = _batch()

    def reference(seed: int) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        torch.manual_seed(seed)
        u = torch.cat([bm.encode_image(p) for p in pixels.split(4)])
        v = torch.cat([bm.encode_text(t) for t in tokens.split(4)])
        scale, bias = bm.temperature()
        clip_loss(u, v, scale, bias).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    _, cached = _grads(model, cached_step, seed=7, loss_fn=clip_loss, micro_batch=4)
    _assert_same_grads(cached, reference(7))
    # Patch dropout really is random here: another seed gives other gradients, so the
    # equality above depends on the RNG replay.
    other = reference(8)
    assert not torch.allclose(other["visual.conv1.weight"], cached["visual.conv1.weight"])


def test_cached_step_leaves_the_global_rng_as_the_cached_forward_left_it():
    register_tiny_models()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.create_model("tiny-vit", force_patch_dropout=0.5).train()
    bm = batch_model(model, video=False, image_trainable=True, text_trainable=True)
    pixels, tokens = _batch()
    torch.manual_seed(5)
    cached_step(bm, pixels, tokens, loss_fn=clip_loss, micro_batch=4)
    after_cached = torch.rand(3)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in pixels.split(4):
            bm.encode_image(p)
        for t in tokens.split(4):
            bm.encode_text(t)
    torch.testing.assert_close(after_cached, torch.rand(3))


def test_micro_batch_must_be_positive():
    model = make_tiny_model("tiny-vit", seed=0)
    bm = batch_model(model, video=False, image_trainable=True, text_trainable=True)
    pixels, tokens = _batch(4)
    with pytest.raises(ValueError, match="micro_batch"):
        cached_step(bm, pixels, tokens, loss_fn=clip_loss, micro_batch=0)
