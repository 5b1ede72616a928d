"""clipsearch.train.loss equals open_clip's reference losses, values and gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss, SigLipLoss

from clipsearch.errors import UsageError
from clipsearch.train.config import LOSS_NAMES
from clipsearch.train.loss import (
    LOSSES,
    MAX_LOGIT_SCALE,
    clamp_logit_scale_,
    clip_loss,
    get_loss,
    siglip_loss,
)


def _features(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(img + 0.7 * torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    return img.requires_grad_(), txt.requires_grad_()


def _value_and_grads(fn, img, txt, scale, bias):
    img = img.detach().clone().requires_grad_()
    txt = txt.detach().clone().requires_grad_()
    scale = scale.detach().clone().requires_grad_()
    bias = None if bias is None else bias.detach().clone().requires_grad_()
    loss = fn(img, txt, scale, bias)
    loss.backward()
    grads = [img.grad, txt.grad, scale.grad] + ([] if bias is None else [bias.grad])
    return loss.detach(), grads


@pytest.mark.parametrize("n,d,seed", [(2, 4, 0), (8, 16, 1), (33, 32, 2)])
@pytest.mark.parametrize("bias", [None, -2.5])
@pytest.mark.parametrize("scale", [1.0, 14.3, 100.0])
def test_clip_loss_equals_open_clip(n, d, seed, bias, scale):
    img, txt = _features(n, d, seed)
    s = torch.tensor(scale, dtype=torch.float64)
    b = None if bias is None else torch.tensor(bias, dtype=torch.float64)
    ref = ClipLoss()
    ours_v, ours_g = _value_and_grads(clip_loss, img, txt, s, b)
    ref_v, ref_g = _value_and_grads(lambda *a: ref(*a), img, txt, s, b)
    torch.testing.assert_close(ours_v, ref_v, rtol=1e-12, atol=1e-12)
    for a, r in zip(ours_g, ref_g, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("n,d,seed", [(2, 4, 0), (8, 16, 1), (33, 32, 2)])
@pytest.mark.parametrize("bias", [None, -10.0, 0.5])
@pytest.mark.parametrize("scale", [10.0, 1.0])
def test_siglip_loss_equals_open_clip(n, d, seed, bias, scale):
    img, txt = _features(n, d, seed)
    s = torch.tensor(scale, dtype=torch.float64)
    b = None if bias is None else torch.tensor(bias, dtype=torch.float64)
    ref = SigLipLoss()
    ours_v, ours_g = _value_and_grads(siglip_loss, img, txt, s, b)
    ref_v, ref_g = _value_and_grads(lambda *a: ref(*a), img, txt, s, b)
    torch.testing.assert_close(ours_v, ref_v, rtol=1e-12, atol=1e-12)
    for a, r in zip(ours_g, ref_g, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


def test_clip_loss_float32_matches_open_clip_and_rewards_matching_pairs():
    img, txt = _features(64, 512, 7)
    img, txt = img.float().detach(), txt.float().detach()
    s = torch.tensor(math.exp(math.log(1 / 0.07)))
    assert torch.allclose(clip_loss(img, txt, s), ClipLoss()(img, txt, s), rtol=1e-6, atol=1e-6)
    # Matching pairs beat shuffled ones: the loss is a contrastive objective, not a constant.
    shuffled = txt[torch.randperm(64, generator=torch.Generator().manual_seed(0))]
    assert clip_loss(img, txt, s) < clip_loss(img, shuffled, s) - 0.5


def test_temperature_clamp_keeps_scale_at_most_100():
    log_scale = torch.nn.Parameter(torch.tensor(7.0))
    clamp_logit_scale_(log_scale)
    assert log_scale.exp().item() == pytest.approx(MAX_LOGIT_SCALE)
    log_scale.data.fill_(-1.0)
    clamp_logit_scale_(log_scale)
    assert log_scale.item() == 0.0  # scale >= 1
    log_scale.data.fill_(math.log(1 / 0.07))
    clamp_logit_scale_(log_scale)
    assert log_scale.item() == pytest.approx(math.log(1 / 0.07))  # inside the range: untouched


def test_get_loss_by_name():
    assert get_loss("clip") is clip_loss
    assert get_loss("siglip") is siglip_loss
    # Every name `clipsearch train --loss` offers has a loss, and every loss is offered.
    assert set(LOSSES) == set(LOSS_NAMES)
    with pytest.raises(UsageError, match="unknown loss 'infonce'"):
        get_loss("infonce")
