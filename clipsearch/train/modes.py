"""Which parameters a fine-tuning run trains: ``full``, ``lit``, ``proj`` or ``lora``.

- ``full``: every parameter.
- ``lit``: locked-image tuning (Zhai et al. 2022, "LiT: Zero-Shot Transfer with
  Locked-image text Tuning"): the image tower is frozen *and* kept in eval mode
  (no dropout, frozen norm statistics); the text tower, the text projection and the
  temperature train. Uses open_clip's own ``model.lock_image_tower()``.
- ``proj``: only the two projection heads (the linear maps into the joint space) and
  the temperature / bias: a linear probe of both towers, cheap and hard to overfit.
- ``lora``: low-rank adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large
  Language Models"), ΔW = (α/r)·B·A on the MLP linears (``c_fc``, ``c_proj``) and the
  attention blocks (peft's ``nn.MultiheadAttention`` support) of both towers, plus the
  temperature. Needs the optional ``peft`` package. peft injects its layers into the
  open_clip modules in place, so the training code keeps calling ``model.encode_image``;
  :func:`merged_model` folds the adapters back into plain weights, so the saved
  checkpoint has exactly the base architecture's keys and loads anywhere.

The temperature (``logit_scale``, and ``logit_bias`` if the model has one) trains in
every mode.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from torch import Tensor, nn

from clipsearch.errors import MissingDependencyError, UsageError
from clipsearch.train.config import MODES, TrainMode

# Parameter-name prefixes of the projection heads across open_clip's tower kinds:
# ViT (visual.proj), ModifiedResNet (attnpool.c_proj), timm (visual.head), the built-in
# text transformer (text_projection / text.text_projection) and HF text towers (text.proj).
_PROJECTION_PREFIXES = (
    "visual.proj",
    "visual.attnpool.c_proj.",
    "visual.head.",
    "text_projection",
    "text.text_projection",
    "text.proj.",
)
_TEMPERATURE = ("logit_scale", "logit_bias")
LORA_TARGETS = ("c_fc", "c_proj", "attn")


@dataclass
class ModeSetup:
    """What :func:`apply_mode` did to the model.

    Attributes:
        mode: the mode name.
        trainable: names of parameters left with ``requires_grad=True``.
        frozen_count / trainable_count: number of scalar weights in each group.
        eval_modules: submodules to keep in eval mode while training (LiT's image tower).
        lora: the peft wrapper in ``lora`` mode (None otherwise); keeps the adapters.
    """

    mode: str
    trainable: list[str]
    trainable_count: int
    frozen_count: int
    eval_modules: list[nn.Module] = field(default_factory=list)
    lora: nn.Module | None = None

    @property
    def image_tower_trainable(self) -> bool:
        return any(n.startswith("visual.") or ".visual." in n for n in self.trainable)

    @property
    def text_tower_trainable(self) -> bool:
        return any(
            not (n.startswith("visual.") or ".visual." in n) and n not in _TEMPERATURE
            for n in self.trainable
        )


def _is_temperature(name: str) -> bool:
    return name in _TEMPERATURE


def apply_mode(
    model: nn.Module, mode: TrainMode | str, *, lora_rank: int = 8, lora_alpha: float = 16.0
) -> ModeSetup:
    """Set ``requires_grad`` on an open_clip model's parameters for a fine-tuning mode.

    Args:
        model: an open_clip ``CLIP`` / ``CustomTextCLIP`` module (modified in place).
        mode: one of :data:`MODES`.
        lora_rank, lora_alpha: adapter rank r and scale α (``lora`` mode only).

    Returns:
        A :class:`ModeSetup` naming what trains.

    Raises:
        UsageError: unknown mode, or ``proj`` on an architecture without projection heads.
        MissingDependencyError: ``lora`` without ``peft`` installed.
    """
    if mode not in MODES:
        raise UsageError(f"unknown training mode {mode!r}; choose one of: {', '.join(MODES)}")
    for p in model.parameters():
        p.requires_grad = True
    eval_modules: list[nn.Module] = []
    lora = None
    if mode == "lit":
        model.lock_image_tower(unlocked_groups=0, freeze_bn_stats=True)
        eval_modules.append(model.visual)
    elif mode == "proj":
        for name, p in model.named_parameters():
            p.requires_grad = _is_temperature(name) or name.startswith(_PROJECTION_PREFIXES)
        heads = [
            n for n, p in model.named_parameters() if p.requires_grad and not _is_temperature(n)
        ]
        if not heads:
            raise UsageError(
                "mode 'proj': this architecture has no projection head clipsearch knows; "
                "use --mode lit or --mode full"
            )
    elif mode == "lora":
        lora = _inject_lora(model, rank=lora_rank, alpha=lora_alpha)
        for name, p in model.named_parameters():
            if _is_temperature(name):
                p.requires_grad = True
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    return ModeSetup(
        mode=mode,
        trainable=trainable,
        trainable_count=n_train,
        frozen_count=n_all - n_train,
        eval_modules=eval_modules,
        lora=lora,
    )


def _inject_lora(model: nn.Module, *, rank: int, alpha: float) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters in place; returns the ``PeftModel``."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise MissingDependencyError("peft", "train") from None
    if rank < 1:
        raise UsageError(f"--lora-rank must be >= 1, got {rank}")
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(LORA_TARGETS))
    # get_peft_model freezes every base weight and swaps target modules inside `model`;
    # `model` itself stays the object the loop calls.
    return get_peft_model(model, config)


def merged_model(model: nn.Module, setup: ModeSetup) -> nn.Module:
    """The model with plain open_clip weights, for saving (LoRA adapters folded in).

    For modes other than ``lora`` this is ``model`` itself. For ``lora`` a copy of the
    peft wrapper is merged and unloaded (W ← W + (α/r)·B·A), so the live model keeps its
    adapters and training can continue; the copy has exactly the base model's keys.
    """
    if setup.lora is None:
        return model
    return copy.deepcopy(setup.lora).merge_and_unload()


def trainable_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Copies of the parameters that train (LoRA adapters and the temperature in ``lora``
    mode), saved for resuming a run whose checkpoint holds merged weights."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
