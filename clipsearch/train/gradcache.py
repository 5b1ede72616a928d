"""One contrastive optimisation step, plainly or with gradient caching.

Gradient caching (Gao, Zhang, Han & Callan 2021, "Scaling Deep Contrastive Learning
Batch Size under Memory Limited Setup") decouples the contrastive loss, which needs
every embedding of the logical batch, from the encoders, whose activations are what
fills memory:

1. embed the whole logical batch in micro-batches *without* autograd, remembering the
   RNG state before each micro-batch (so dropout / patch dropout draw the same masks
   when replayed);
2. compute the loss on the cached embeddings u, v and its gradient ∂L/∂u, ∂L/∂v (the
   temperature and bias get their gradients here, directly);
3. re-embed each micro-batch *with* autograd under its saved RNG state and call
   ``backward(∂L/∂u_chunk)``: by the chain rule the parameter gradients summed over
   micro-batches equal those of the full-batch step.

Peak activation memory is that of one micro-batch; the cache itself is (B, D) floats.
A tower with no trainable parameter (LiT's locked image tower) is never re-forwarded.
BatchNorm in train mode would update its statistics twice; open_clip's ViTs have none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

EncodeFn = Callable[[Tensor], Tensor]
"""A micro-batch of inputs (m, ...) -> (m, D) L2-normalised embeddings."""


@dataclass
class ContrastiveBatchModel:
    """The pieces of a dual encoder one contrastive step needs.

    Attributes:
        encode_image: (m, 3, H, W) pixels, or (m, F, 3, H, W) video frames -> (m, D).
        encode_text: (m, L) token ids -> (m, D).
        temperature: () -> (exp(log_scale), bias or None), recomputed each call so
            gradients reach the parameters.
        image_trainable / text_trainable: whether a tower has parameters to train
            (a frozen tower is embedded once, without autograd).
    """

    encode_image: EncodeFn
    encode_text: EncodeFn
    temperature: Callable[[], tuple[Tensor, Tensor | None]]
    image_trainable: bool = True
    text_trainable: bool = True


LossFn = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]


def _nullcontext() -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def full_batch_step(
    model: ContrastiveBatchModel,
    images: Tensor,
    texts: Tensor,
    *,
    loss_fn: LossFn,
    autocast: Callable[[], contextlib.AbstractContextManager] = _nullcontext,
) -> Tensor:
    """Forward the whole batch with autograd and backprop the loss into ``.grad``.

    Args:
        images: (B, ...) image or video inputs; texts: (B, L) tokens.
        loss_fn: ``loss(image_features, text_features, scale, bias)`` -> scalar.
        autocast: context factory wrapped around the encoders only (the loss runs fp32).

    Returns:
        The detached loss. Gradients are *accumulated* into the parameters.
    """
    with autocast():
        u = model.encode_image(images)  # (B, D)
        v = model.encode_text(texts)  # (B, D)
    scale, bias = model.temperature()
    loss = loss_fn(u.float(), v.float(), scale, bias)
    loss.backward()
    return loss.detach()


@dataclass
class _Chunk:
    inputs: Tensor
    rng_state: Tensor


def _embed_no_grad(
    encode: EncodeFn,
    inputs: Tensor,
    micro_batch: int,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> tuple[Tensor, list[_Chunk]]:
    chunks: list[_Chunk] = []
    outs: list[Tensor] = []
    with torch.no_grad():
        for part in inputs.split(micro_batch):
            chunks.append(_Chunk(part, torch.get_rng_state()))
            with autocast():
                outs.append(encode(part).float())
    return torch.cat(outs), chunks  # (B, D)


@contextlib.contextmanager
def _replay_rng(state: Tensor) -> Iterator[None]:
    """Run the block with the CPU RNG set to ``state``; the global RNG is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(state)
        yield


def _backward_chunks(
    encode: EncodeFn,
    chunks: list[_Chunk],
    grad: Tensor,
    autocast: Callable[[], contextlib.AbstractContextManager],
) -> None:
    start = 0
    for chunk in chunks:
        m = chunk.inputs.shape[0]
        with _replay_rng(chunk.rng_state):
            with autocast():
                out = encode(chunk.inputs).float()  # (m, D)
            out.backward(grad[start : start + m])
        start += m


def cached_step(
    model: ContrastiveBatchModel,
    images: Tensor,
    texts: Tensor,
    *,
    loss_fn: LossFn,
    micro_batch: int,
    autocast: Callable[[], contextlib.AbstractContextManager] = _nullcontext,
) -> Tensor:
    """One gradient-cached step over a logical batch (Gao et al. 2021, see module doc).

    Same arguments and result as :func:`full_batch_step`, plus ``micro_batch``: the
    number of pairs forwarded with autograd at a time. The gradients accumulated into
    the parameters equal the full-batch ones up to floating-point summation order.
    """
    if micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
    u, image_chunks = _embed_no_grad(model.encode_image, images, micro_batch, autocast)
    v, text_chunks = _embed_no_grad(model.encode_text, texts, micro_batch, autocast)
    u = u.requires_grad_(model.image_trainable)
    v = v.requires_grad_(model.text_trainable)
    scale, bias = model.temperature()
    loss = loss_fn(u, v, scale, bias)
    loss.backward()  # ∂L/∂u, ∂L/∂v into u.grad, v.grad; temperature grads directly
    if model.image_trainable:
        _backward_chunks(model.encode_image, image_chunks, u.grad, autocast)
    if model.text_trainable:
        _backward_chunks(model.encode_text, text_chunks, v.grad, autocast)
    return loss.detach()
