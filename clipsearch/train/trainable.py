"""The model being trained: an open_clip module plus what feeding it needs.

Two ways in: fine-tune a base model named by any model spec (loaded with
``clipsearch.models.load_encoder`` in fp32, so a fine-tuned checkpoint can itself be a
base), or build an open_clip architecture with random weights (``--from-scratch``),
seeded so the initialisation is reproducible.

:func:`batch_model` adapts the module to :class:`~clipsearch.train.gradcache.ContrastiveBatchModel`:
embeddings are L2-normalised; a video's embedding is CLIP4Clip's meanP
(Luo et al. 2021, "CLIP4Clip"), v = normalise( Σᵢ normalise(fᵢ) / F ) over its F frames.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from clipsearch.errors import ModelError, UnknownModelError
from clipsearch.train.gradcache import ContrastiveBatchModel


@dataclass
class TrainableModel:
    """An open_clip model with its tokenizer and preprocessing.

    model: open_clip ``CLIP`` / ``CustomTextCLIP`` module (fp32).
    tokenizer: list of str -> (B, L) int64 tensor.
    preprocess: RGB PIL image -> (3, H, W) float32 array.
    arch / model_cfg: what a checkpoint records so it reloads without any registry.
    image_size / context_length: input sizes.
    base_spec / base_fingerprint: what was fine-tuned (None when trained from scratch).
    """

    model: nn.Module
    tokenizer: Callable[..., Tensor]
    preprocess: Callable[[Image.Image], np.ndarray]
    arch: str
    model_cfg: dict[str, Any]
    image_size: int
    context_length: int
    base_spec: str | None = None
    base_fingerprint: str | None = None


def _image_size(model: nn.Module) -> int:
    size = getattr(model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, tuple | list) else size)


def load_base(spec: str) -> TrainableModel:
    """Load the model named by ``spec`` for fine-tuning (fp32 weights).

    Raises the models layer's errors (UnknownModelError, WeightsUnavailableError, ...).
    """
    from clipsearch.models import load_encoder

    encoder = load_encoder(spec, precision="fp32")
    model = encoder.model.float()
    return TrainableModel(
        model=model,
        tokenizer=encoder.tokenizer,
        preprocess=encoder.preprocess,
        arch=encoder.arch,
        model_cfg=dict(encoder.model_cfg),
        image_size=_image_size(model),
        context_length=int(encoder.context_length),
        base_spec=str(encoder.spec),
        base_fingerprint=encoder.fingerprint,
    )


def create_from_scratch(arch: str, *, seed: int) -> TrainableModel:
    """An open_clip architecture with random weights, initialised under ``seed``.

    Raises UnknownModelError if open_clip has no config of that name (register test
    configs with ``open_clip.add_model_config`` first).
    """
    import open_clip

    model_cfg = open_clip.get_model_config(arch)
    if model_cfg is None:
        raise UnknownModelError(
            f"open_clip has no architecture {arch!r}; see open_clip.list_models() "
            "for the names it knows"
        )
    with torch.random.fork_rng(devices=[]), _quiet_root_logging():
        torch.manual_seed(seed)
        model, _, transform = open_clip.create_model_and_transforms(arch, pretrained=None)
    model = model.float()
    tokenizer = open_clip.get_tokenizer(arch)

    def preprocess(image: Image.Image) -> np.ndarray:
        return transform(image).numpy().astype(np.float32, copy=False)

    return TrainableModel(
        model=model,
        tokenizer=tokenizer,
        preprocess=preprocess,
        arch=arch,
        model_cfg=model_cfg,
        image_size=_image_size(model),
        context_length=int(getattr(model, "context_length", 77)),
    )


@contextlib.contextmanager
def _quiet_root_logging() -> Iterator[None]:
    """open_clip warns through the root logger, which would install a stderr handler on an
    unconfigured root; park a NullHandler there meanwhile so the library prints nothing."""
    root = logging.getLogger()
    parked = logging.NullHandler() if not root.handlers else None
    if parked is not None:
        root.addHandler(parked)
    try:
        yield
    finally:
        if parked is not None:
            root.removeHandler(parked)


def encode_video(model: nn.Module, frames: Tensor) -> Tensor:
    """(m, F, 3, H, W) frames -> (m, D) meanP video embeddings, L2-normalised."""
    m, n_frames = frames.shape[:2]
    f = F.normalize(model.encode_image(frames.flatten(0, 1)), dim=-1)  # (m·F, D)
    return F.normalize(f.view(m, n_frames, -1).mean(dim=1), dim=-1)  # (m, D)


def batch_model(
    model: nn.Module, *, video: bool, image_trainable: bool, text_trainable: bool
) -> ContrastiveBatchModel:
    """Wrap an open_clip module for :mod:`clipsearch.train.gradcache` steps."""

    def encode_image(x: Tensor) -> Tensor:
        if video:
            return encode_video(model, x)
        return F.normalize(model.encode_image(x), dim=-1)  # (m, D)

    def encode_text(tokens: Tensor) -> Tensor:
        return F.normalize(model.encode_text(tokens), dim=-1)  # (m, D)

    def temperature() -> tuple[Tensor, Tensor | None]:
        return model.logit_scale.exp(), getattr(model, "logit_bias", None)

    if not hasattr(model, "logit_scale"):
        raise ModelError("this model has no logit_scale parameter; it cannot be trained here")
    return ContrastiveBatchModel(
        encode_image=encode_image,
        encode_text=encode_text,
        temperature=temperature,
        image_trainable=image_trainable,
        text_trainable=text_trainable,
    )
