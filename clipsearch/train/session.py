"""Everything a training run needs before its first step: `prepare(config)`.

`prepare` readies the output folder, seeds torch, loads the model, reads and splits the
pairs, applies the training mode (full / LiT / proj / LoRA), builds the loaders and the
AdamW optimiser (open_clip's parameter groups), and on ``--resume`` restores the weights,
optimiser, RNG state and history of the last completed epoch. The order is fixed: the
seed is set before anything draws random numbers, so a run is reproducible.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clipsearch.errors import TrainingError, UsageError
from clipsearch.train import state as run_state
from clipsearch.train.batches import PairLoader, count_truncated
from clipsearch.train.capfilt import CapFiltOptions, auto_pairs_folder, pairs_for_training
from clipsearch.train.config import TrainConfig
from clipsearch.train.data import (
    PairData,
    read_pairs_file,
    read_shards,
    read_sidecar_folder,
    read_video_pairs,
    split_pairs,
)
from clipsearch.train.modes import ModeSetup, apply_mode
from clipsearch.train.trainable import TrainableModel, batch_model, create_from_scratch, load_base

Autocast = Callable[[], contextlib.AbstractContextManager]


@dataclass
class TrainingSession:
    """A prepared run: model, data, loaders, optimiser, and the progress so far."""

    config: TrainConfig
    out: Path  # absolute output folder
    tm: TrainableModel
    setup: ModeSetup  # what the training mode froze, wrapped or left trainable
    data: PairData  # every pair read (train + validation), for counts in the report
    train_data: PairData
    val_data: PairData | None
    loader: PairLoader
    val_loader: PairLoader | None
    optimizer: torch.optim.Optimizer
    step_model: torch.nn.Module  # (pixels, tokens) -> features, for one contrastive step
    autocast: Autocast
    truncated: int  # captions longer than the model's context
    steps_per_epoch: int
    total_steps: int
    start_epoch: int = 0  # epochs already completed (resume)
    history: list[dict] = field(default_factory=list)  # one entry per completed epoch
    before: dict = field(default_factory=dict)  # validation metrics before training

    @property
    def use_grad_cache(self) -> bool:
        """True when a batch is split into micro-batches (gradient caching)."""
        micro = self.config.micro_batch
        return micro is not None and micro < self.config.batch_size


def prepare(config: TrainConfig, *, emit: Callable[[Any], None] | None = None) -> TrainingSession:
    """Ready a run as ``config`` says (see the module docstring). ``--pairs auto:DIR``
    first builds its pairs with BLIP CapFilt (`clipsearch.train.capfilt`), emitting
    `CapFiltDone`.

    Raises TrainingError (folder holds a run, nothing to resume), DatasetError (bad or
    empty data), UsageError (bad options, no full batch), ModelError (model).
    """
    out = config.out.expanduser().absolute()
    run_state.prepare_out_dir(
        out, resume=config.resume, overwrite=config.overwrite, config=config.to_dict()
    )
    torch.manual_seed(config.seed)
    auto = auto_pairs_folder(config.pairs)
    if auto is not None:
        csv_path = pairs_for_training(
            auto,
            out,
            options=CapFiltOptions(threshold=config.threshold, seed=config.seed),
            caption_model=config.caption_model,
            itm_model=config.itm_model,
            reuse=config.resume,
            on_event=emit,
        )
        config = dataclasses.replace(config, pairs=csv_path, media_root=None)
    tm = _load_trainable(config)
    data = read_data(config)
    train_data, val_data = split_pairs(
        data, val_fraction=config.val_fraction, seed=config.seed, max_val=config.max_val
    )
    setup = apply_mode(
        tm.model, config.mode, lora_rank=config.lora_rank, lora_alpha=config.lora_alpha
    )
    if config.grad_checkpointing:
        tm.model.set_grad_checkpointing(True)
    loader_args = dict(
        preprocess=tm.preprocess,
        tokenizer=tm.tokenizer,
        image_size=tm.image_size,
        seed=config.seed,
        workers=config.workers,
        frames=config.frames,
    )
    loader = PairLoader(
        train_data, batch_size=config.batch_size, augment=config.augment, **loader_args
    )
    val_loader = (
        PairLoader(val_data, batch_size=config.eval_batch_size, **loader_args) if val_data else None
    )
    truncated = count_truncated(tm.tokenizer, data.captions, tm.context_length)
    steps_per_epoch = loader.num_batches()
    if steps_per_epoch == 0:
        raise UsageError("no training batch: fewer than 2 training media per batch")
    optimizer = torch.optim.AdamW(
        param_groups(tm.model, config.weight_decay),
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        eps=config.eps,
    )
    step_model = batch_model(
        tm.model,
        video=train_data.kind == "video",
        image_trainable=setup.image_tower_trainable,
        text_trainable=setup.text_tower_trainable,
    )
    session = TrainingSession(
        config=config,
        out=out,
        tm=tm,
        setup=setup,
        data=data,
        train_data=train_data,
        val_data=val_data,
        loader=loader,
        val_loader=val_loader,
        optimizer=optimizer,
        step_model=step_model,
        autocast=autocast_for(config.precision),
        truncated=truncated,
        steps_per_epoch=steps_per_epoch,
        total_steps=config.epochs * steps_per_epoch,
    )
    if config.resume:
        _restore(session, run_state.load_state(out))
    return session


def read_data(config: TrainConfig) -> PairData:
    """The pairs named by the config's data source (see :mod:`clipsearch.train.data`)."""
    if config.pairs is not None:
        return read_pairs_file(
            config.pairs,
            media_root=config.media_root,
            split=config.split,
            media_column=config.image_column,
            caption_column=config.caption_column,
        )
    if config.images is not None:
        return read_sidecar_folder(config.images)
    if config.shards:
        return read_shards(config.shards)
    if config.frames.partition(":")[0] != "uniform":
        raise UsageError(f"--frames must be uniform:N for training (got {config.frames!r})")
    return read_video_pairs(
        config.videos,
        config.captions,
        split=config.split,
        media_column=config.image_column,
        caption_column=config.caption_column,
    )


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups as open_clip builds them: no decay on gains, biases and the temperature."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = (
            p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        )
        (no_decay if exempt else decay).append(p)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


def autocast_for(precision: str) -> Autocast:
    """A context-manager factory: bf16 autocast on the CPU for ``bf16``, else a no-op."""
    if precision == "bf16":
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext


def _load_trainable(config: TrainConfig) -> TrainableModel:
    if config.from_scratch:
        return create_from_scratch(config.from_scratch, seed=config.seed)
    return load_base(config.base)


def _restore(session: TrainingSession, saved: dict) -> None:
    """Load weights, optimiser, RNG state and history of the last completed epoch."""
    from clipsearch.models.checkpoint import load_state_dict_into, read_state_dict

    tm, out = session.tm, session.out
    ckpt = out / run_state.CHECKPOINT_FILE
    if session.setup.lora is None:
        load_state_dict_into(tm.model, read_state_dict(ckpt), source=str(ckpt))
    else:
        # The checkpoint holds merged weights; the live model is base + adapters, so the
        # trainable tensors (adapters, temperature) come from the state instead.
        wanted = {n for n, p in tm.model.named_parameters() if p.requires_grad}
        if set(saved["adapters"]) != wanted:
            raise TrainingError(
                f"{out}: the saved LoRA adapters do not fit this model; use --overwrite"
            )
        tm.model.load_state_dict(saved["adapters"], strict=False)
    session.optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["torch_rng"])
    session.loader.failed.update({int(k): v for k, v in saved.get("failed", {}).items()})
    session.start_epoch = int(saved["epoch"])
    session.history = list(saved["history"])
    session.before = dict(saved["before"])
