"""Contrastive losses: CLIP's symmetric InfoNCE and SigLIP's pairwise sigmoid loss.

Both take L2-normalised features, the *exponentiated* logit scale and an optional
logit bias, exactly like open_clip's ``ClipLoss`` / ``SigLipLoss``, and return the
same numbers (tested against them on random features).

CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision"), for a batch of N pairs with logits ``L = s · I Tᵀ (+ b)``:

    loss = ½ · ( CE(L, diag) + CE(Lᵀ, diag) )

SigLIP (Zhai et al. 2023, "Sigmoid Loss for Language Image Pre-Training"), with
``z_ij = +1`` on the diagonal and ``-1`` elsewhere:

    loss = −(1/N) · Σ_ij log σ(z_ij · (s · I_i·T_j + b))

The temperature is learnable and stored as a log on the model (``model.logit_scale``);
:func:`clamp_logit_scale_` keeps it at most ln(100), i.e. a scale of at most 100, as
the CLIP paper does after every optimiser step.

Distributed training: rank and world size are arguments (never read from global
state). With ``world_size == 1`` nothing is communicated. With ``world_size > 1`` the
CLIP loss all-gathers features *with* gradients (``torch.distributed.nn.all_gather``)
and computes the "local loss" of open_clip (``local_loss=True, gather_with_grad=True``):
each rank scores its own rows against the whole global batch, so the mean of the
per-rank losses is the global loss and DDP's gradient averaging gives the global
gradient. SigLIP uses open_clip's ``gather`` variant (own block plus negative-only
blocks against every other rank's texts). The multi-process path needs an
initialised ``torch.distributed`` process group; it is exercised by a two-process
gloo test, but the training loop itself (``clipsearch.train.loop``) is single-process.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clipsearch.train.config import LossName

MAX_LOGIT_SCALE = 100.0
"""Upper bound of the exponentiated logit scale (CLIP paper: clipped to prevent scaling above 100)."""

ContrastiveLoss = Callable[..., Tensor]
"""``loss(image_features, text_features, logit_scale, logit_bias=None, *, rank, world_size)``."""


def _gather_with_grad(features: Tensor, world_size: int) -> Tensor:
    """All-gather ``features`` (n, D) from every rank -> (world_size·n, D), keeping gradients."""
    if world_size == 1:
        return features
    import torch.distributed.nn as dist_nn

    return torch.cat(dist_nn.all_gather(features), dim=0)


def clip_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    logit_bias: Tensor | float | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> Tensor:
    """Symmetric InfoNCE of CLIP; equal to ``open_clip.loss.ClipLoss()`` in one process.

    Args:
        image_features: (n, D) L2-normalised image (or video) embeddings of this rank.
        text_features: (n, D) L2-normalised caption embeddings; row i pairs with image i.
        logit_scale: the exponentiated temperature ``exp(model.logit_scale)``.
        logit_bias: optional additive bias (SigLIP-style models carry one).
        rank, world_size: this process's place in the distributed group.

    Returns:
        A scalar tensor: the mean of the image→text and text→image cross-entropies.
    """
    n = image_features.shape[0]
    all_text = _gather_with_grad(text_features, world_size)  # (W·n, D)
    all_image = _gather_with_grad(image_features, world_size)  # (W·n, D)
    logits_per_image = logit_scale * image_features @ all_text.T  # (n, W·n)
    logits_per_text = logit_scale * text_features @ all_image.T  # (n, W·n)
    if logit_bias is not None:
        logits_per_image = logits_per_image + logit_bias
        logits_per_text = logits_per_text + logit_bias
    labels = torch.arange(n, device=image_features.device) + n * rank
    return (
        F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)
    ) / 2


def _siglip_block(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    logit_bias: Tensor | float | None,
    *,
    negative_only: bool,
) -> Tensor:
    logits = logit_scale * image_features @ text_features.T  # (n, m)
    if logit_bias is not None:
        logits = logits + logit_bias
    signs = -torch.ones_like(logits)
    if not negative_only:
        signs = signs + 2 * torch.eye(*logits.shape, device=logits.device, dtype=logits.dtype)
    return -F.logsigmoid(signs * logits).sum() / image_features.shape[0]


def siglip_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    logit_bias: Tensor | float | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> Tensor:
    """Pairwise sigmoid loss of SigLIP; equal to ``open_clip.loss.SigLipLoss()`` in one process.

    Args and return as :func:`clip_loss`. With ``world_size > 1`` every rank adds the
    negative-only terms against the other ranks' texts (open_clip's ``gather`` variant).
    """
    loss = _siglip_block(
        image_features, text_features, logit_scale, logit_bias, negative_only=False
    )
    if world_size > 1:
        import torch.distributed.nn as dist_nn

        for other, texts in enumerate(dist_nn.all_gather(text_features)):
            if other != rank:
                loss = loss + _siglip_block(
                    image_features, texts, logit_scale, logit_bias, negative_only=True
                )
    return loss


LOSSES: dict[LossName, ContrastiveLoss] = {"clip": clip_loss, "siglip": siglip_loss}


def get_loss(name: str) -> ContrastiveLoss:
    """Loss function by name (``clip`` or ``siglip``); unknown names raise ``UsageError``."""
    from clipsearch.errors import UsageError

    try:
        return LOSSES[name]
    except KeyError:
        raise UsageError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}") from None


@torch.no_grad()
def clamp_logit_scale_(log_scale: nn.Parameter, max_scale: float = MAX_LOGIT_SCALE) -> None:
    """Clamp a log-temperature parameter in place to [0, ln(max_scale)] (CLIP's rule)."""
    log_scale.clamp_(0, math.log(max_scale))
