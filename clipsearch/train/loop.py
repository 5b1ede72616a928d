"""The training loop: ``run(config)`` for the library, ``main(argv)`` for the program.

One epoch = every training media once (see :mod:`clipsearch.train.batches`). Each step:
cosine learning rate with linear warm-up (open_clip's ``cosine_lr``), the contrastive
step (plain, or gradient-cached when ``micro_batch < batch_size``), a finite-loss check,
global-norm gradient clipping, AdamW, and the CLIP temperature clamp (scale <= 100).
After each epoch: validation recall, then the checkpoint and the resume state.

Resume reproduces the straight run: data order and augmentation are functions of
(seed, epoch); the optimiser moments, step counter and torch RNG state are restored;
the learning rate is a function of the global step.

A non-finite loss or gradient norm stops the run with a ``TrainingError`` before the
optimiser step, so the checkpoint on disk (the last completed epoch) stays good.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from clipsearch.errors import ClipsearchError, TrainingError, UsageError
from clipsearch.train import state as run_state
from clipsearch.train.batches import PairLoader, count_truncated
from clipsearch.train.config import TrainConfig, parse_args
from clipsearch.train.data import (
    PairData,
    read_pairs_file,
    read_shards,
    read_sidecar_folder,
    read_video_pairs,
    split_pairs,
)
from clipsearch.train.evaluate import validation_recall
from clipsearch.train.events import (
    CheckpointSaved,
    DataReady,
    EvalDone,
    MediaSkipped,
    OnEvent,
    StepDone,
    TrainDone,
)
from clipsearch.train.gradcache import cached_step, full_batch_step
from clipsearch.train.loss import clamp_logit_scale_, get_loss
from clipsearch.train.modes import ModeSetup, apply_mode, merged_model, trainable_state_dict
from clipsearch.train.report import TrainReport
from clipsearch.train.trainable import TrainableModel, batch_model, create_from_scratch, load_base

log = logging.getLogger("clipsearch.train")


def cosine_lr(step: int, *, base_lr: float, warmup: int, total: int) -> float:
    """open_clip's schedule: linear warm-up to ``base_lr``, then half a cosine to 0.

    lr(s) = base·(s+1)/warmup for s < warmup, else base·½·(1 + cos(π·(s−warmup)/(total−warmup))).
    """
    if step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / span)) * base_lr


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


def _autocast(precision: str) -> Callable[[], contextlib.AbstractContextManager]:
    if precision == "bf16":
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext


def _set_train_mode(tm: TrainableModel, setup: ModeSetup) -> None:
    tm.model.train()
    for module in setup.eval_modules:
        module.eval()


def _save_checkpoint(tm: TrainableModel, setup: ModeSetup, out: Path, *, epoch: int) -> Path:
    from clipsearch.models.checkpoint import save_checkpoint

    weights = merged_model(tm.model, setup)
    return save_checkpoint(
        weights,
        out / run_state.CHECKPOINT_FILE,
        arch=tm.arch,
        model_cfg=tm.model_cfg,
        base_spec=tm.base_spec,
        extra={"epoch": str(epoch), "mode": setup.mode},
    )


def _load_trainable(config: TrainConfig) -> TrainableModel:
    if config.from_scratch:
        return create_from_scratch(config.from_scratch, seed=config.seed)
    return load_base(config.base)


def run(config: TrainConfig, *, on_event: OnEvent | None = None) -> TrainReport:
    """Train as ``config`` says; emit progress events; return the final report.

    Writes into ``config.out`` (see :mod:`clipsearch.train.state` for the layout).
    Raises TrainingError (folder holds a run, nothing to resume, non-finite loss),
    DatasetError (bad or empty data), UsageError (bad options), ModelError (model).
    """
    emit = on_event or (lambda event: None)
    out = config.out.expanduser().absolute()
    run_state.prepare_out_dir(
        out, resume=config.resume, overwrite=config.overwrite, config=config.to_dict()
    )
    torch.manual_seed(config.seed)
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
    total_steps = config.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(
        param_groups(tm.model, config.weight_decay),
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        eps=config.eps,
    )
    autocast = _autocast(config.precision)
    step_model = batch_model(
        tm.model,
        video=train_data.kind == "video",
        image_trainable=setup.image_tower_trainable,
        text_trainable=setup.text_tower_trainable,
    )
    loss_name = config.loss
    use_cache = config.micro_batch is not None and config.micro_batch < config.batch_size

    history: list[dict] = []
    before: dict = {}
    start_epoch = 0
    if config.resume:
        saved = run_state.load_state(out)
        _restore(tm, setup, out, saved, optimizer, loader)
        start_epoch = int(saved["epoch"])
        history = list(saved["history"])
        before = dict(saved["before"])
    emit(
        DataReady(
            train_media=train_data.n_media,
            train_captions=len(train_data.captions),
            val_media=val_data.n_media if val_data else 0,
            val_captions=len(val_data.captions) if val_data else 0,
            skipped=data.skipped.to_dict(),
            truncated_captions=truncated,
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            start_epoch=start_epoch,
            trainable_params=setup.trainable_count,
            frozen_params=setup.frozen_count,
        )
    )

    if not config.resume and val_loader is not None:
        t0 = time.perf_counter()
        before = validation_recall(
            tm, val_loader, batch_size=config.eval_batch_size, autocast=autocast
        )
        emit(EvalDone(epoch=0, metrics=before, seconds=time.perf_counter() - t0))

    reported_failures = len(loader.failed)
    for epoch in range(start_epoch, config.epochs):
        _set_train_mode(tm, setup)
        t_epoch = time.perf_counter()
        losses: list[float] = []
        t_last = time.perf_counter()
        for batch in loader.epoch_batches(epoch):
            global_step = epoch * steps_per_epoch + batch.index
            lr = cosine_lr(
                global_step, base_lr=config.lr, warmup=config.warmup_steps, total=total_steps
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss_fn = get_loss(loss_name)
            if use_cache:
                loss = cached_step(
                    step_model,
                    batch.pixels,
                    batch.tokens,
                    loss_fn=loss_fn,
                    micro_batch=config.micro_batch,
                    autocast=autocast,
                )
            else:
                loss = full_batch_step(
                    step_model, batch.pixels, batch.tokens, loss_fn=loss_fn, autocast=autocast
                )
            params = [p for g in optimizer.param_groups for p in g["params"]]
            grad_norm = torch.nn.utils.clip_grad_norm_(
                params, config.grad_clip if config.grad_clip else float("inf")
            )
            if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
                raise _diverged(
                    loss, grad_norm, epoch=epoch, step=batch.index, out=out, lr=config.lr
                )
            optimizer.step()
            clamp_logit_scale_(tm.model.logit_scale)
            losses.append(float(loss))
            now = time.perf_counter()
            emit(
                StepDone(
                    epoch=epoch + 1,
                    step=batch.index + 1,
                    steps_per_epoch=steps_per_epoch,
                    global_step=global_step + 1,
                    total_steps=total_steps,
                    loss=float(loss),
                    pairs=len(batch),
                    pairs_per_s=len(batch) / max(now - t_last, 1e-9),
                    lr=lr,
                    logit_scale=float(tm.model.logit_scale.detach().exp()),
                )
            )
            t_last = now
        if len(loader.failed) > reported_failures:
            new = list(loader.failed.values())[reported_failures:]
            emit(MediaSkipped(epoch=epoch + 1, count=len(new), examples=new[:5]))
            reported_failures = len(loader.failed)
        entry: dict = {
            "epoch": epoch + 1,
            "loss": sum(losses) / max(1, len(losses)),
            "steps": len(losses),
            "seconds": time.perf_counter() - t_epoch,
        }
        if val_loader is not None:
            t0 = time.perf_counter()
            entry["metrics"] = validation_recall(
                tm, val_loader, batch_size=config.eval_batch_size, autocast=autocast
            )
            emit(
                EvalDone(
                    epoch=epoch + 1, metrics=entry["metrics"], seconds=time.perf_counter() - t0
                )
            )
        history.append(entry)
        t0 = time.perf_counter()
        path = _save_checkpoint(tm, setup, out, epoch=epoch + 1)
        run_state.save_state(
            out,
            {
                "epoch": epoch + 1,
                "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "history": history,
                "before": before,
                "adapters": trainable_state_dict(tm.model) if setup.lora is not None else {},
                "failed": dict(loader.failed),
            },
        )
        emit(CheckpointSaved(epoch=epoch + 1, path=path, seconds=time.perf_counter() - t0))

    checkpoint = out / run_state.CHECKPOINT_FILE
    report = TrainReport(
        status="completed",
        out=str(out),
        checkpoint=str(checkpoint),
        config=config.to_dict(),
        data={
            "train_media": train_data.n_media,
            "train_captions": len(train_data.captions),
            "val_media": val_data.n_media if val_data else 0,
            "val_captions": len(val_data.captions) if val_data else 0,
            **data.skipped.to_dict(),
            "truncated_captions": truncated,
            "undecodable_media": len(loader.failed) + (len(val_loader.failed) if val_loader else 0),
        },
        base_spec=tm.base_spec,
        base_fingerprint=tm.base_fingerprint,
        fingerprint=_fingerprint_of(checkpoint),
        trainable_params=setup.trainable_count,
        frozen_params=setup.frozen_count,
        before=before,
        after=history[-1].get("metrics", {}) if history else {},
        history=history,
        train_seconds=sum(h["seconds"] for h in history),
    )
    js, md = report.write(out, json_name=run_state.REPORT_JSON, md_name=run_state.REPORT_MD)
    emit(TrainDone(report_json=js, report_markdown=md, checkpoint=checkpoint))
    return report


def _diverged(
    loss: torch.Tensor, grad_norm: torch.Tensor, *, epoch: int, step: int, out: Path, lr: float
) -> TrainingError:
    """The error for a non-finite loss or gradient (raised before the optimiser step)."""
    what = (
        f"loss {loss.item()}" if not torch.isfinite(loss) else f"gradient norm {grad_norm.item()}"
    )
    if epoch > 0:
        kept = (
            f"the last good checkpoint (epoch {epoch}) is kept at {out / run_state.CHECKPOINT_FILE}"
        )
        then = f", then continue with `--resume --out {out} --lr ...`"
    else:
        kept, then = "no epoch had completed, so there is no checkpoint yet", ""
    return TrainingError(
        f"training diverged: {what} at epoch {epoch + 1}, step {step + 1}; stopped before "
        f"updating the weights, and {kept}. Lower --lr (now {lr:g}), add --warmup-steps, or "
        f"use --precision fp32{then}"
    )


def _restore(
    tm: TrainableModel,
    setup: ModeSetup,
    out: Path,
    saved: dict,
    optimizer: torch.optim.Optimizer,
    loader: PairLoader,
) -> None:
    """Load weights, optimiser and RNG state of the last completed epoch."""
    from clipsearch.models.checkpoint import load_state_dict_into, read_state_dict

    ckpt = out / run_state.CHECKPOINT_FILE
    if setup.lora is None:
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
    optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["torch_rng"])
    loader.failed.update({int(k): v for k, v in saved.get("failed", {}).items()})


def _fingerprint_of(checkpoint: Path) -> str | None:
    """The models layer's fingerprint of the saved checkpoint (what a library binds to)."""
    from clipsearch.models import load_encoder

    return load_encoder(str(checkpoint), precision="fp32").fingerprint


def resume_config(out: Path, **overrides: object) -> TrainConfig:
    """The config a run in ``out`` started with, marked ``resume=True`` (plus ``overrides``)."""
    saved = run_state.read_run_config(Path(out))
    saved.update(resume=True, overwrite=False, out=Path(out), **overrides)
    for key in ("pairs", "images", "videos", "captions", "media_root"):
        if saved.get(key) is not None:
            saved[key] = Path(saved[key])
    saved["shards"] = [Path(s) for s in saved.get("shards") or []]
    return TrainConfig(**saved)


def main(argv: list[str] | None = None) -> int:
    """``python -m clipsearch.train``: parse ``argv``, train, log progress; return an exit code.

    ``--resume --out DIR`` with no data option reuses the run's own settings (optimiser
    options such as ``--lr`` and ``--epochs`` may be given to change them). Progress
    and errors go to the ``clipsearch.train`` logger (the program configures logging);
    a ClipsearchError becomes one error line and its ``exit_code``.
    """
    try:
        args = list(argv) if argv is not None else None
        config = _config_from_argv(args)
        run(config, on_event=_log_event)
    except ClipsearchError as e:
        log.error("error: %s", e)
        return e.exit_code
    return 0


def _config_from_argv(argv: list[str] | None) -> TrainConfig:
    import sys

    args = sys.argv[1:] if argv is None else argv
    sources = ("--pairs", "--images", "--shards", "--videos")
    if "--resume" in args and not any(a.split("=")[0] in sources for a in args):
        out, overrides = _resume_args(args)
        return resume_config(out, **overrides)
    return parse_args(args)


def _resume_args(args: list[str]) -> tuple[Path, dict[str, object]]:
    """``--resume --out DIR`` plus optional optimiser overrides (``--lr``, ``--epochs``...)."""
    from clipsearch.train.config import build_parser

    full = build_parser()
    p = type(full)(add_help=False)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--resume", action="store_true")
    for action in full._actions:
        if action.dest in run_state.RESUME_OVERRIDES:
            kwargs: dict = {"dest": action.dest, "default": None}
            if action.nargs == 0:  # store_true flags
                kwargs["action"] = "store_const"
                kwargs["const"] = True
            else:
                kwargs["type"] = action.type
            p.add_argument(*action.option_strings, **kwargs)
    ns, rest = p.parse_known_args(args)
    if rest:
        raise UsageError(
            f"with --resume and no data option, only --out and optimiser options "
            f"({', '.join(sorted(run_state.RESUME_OVERRIDES))}) may be given (got {rest})"
        )
    overrides = {
        k: v for k, v in vars(ns).items() if k in run_state.RESUME_OVERRIDES and v is not None
    }
    return ns.out, overrides


def _log_event(event: object) -> None:
    if isinstance(event, StepDone):
        log.info(
            "epoch %d step %d/%d  loss %.4f  %.1f pairs/s  lr %.2e",
            event.epoch,
            event.step,
            event.steps_per_epoch,
            event.loss,
            event.pairs_per_s,
            event.lr,
        )
    elif isinstance(event, EvalDone):
        t2m = event.metrics.get("text_to_media", {})
        m2t = event.metrics.get("media_to_text", {})
        log.info(
            "epoch %d validation: text→media R@1 %.1f R@5 %.1f R@10 %.1f | media→text R@1 %.1f",
            event.epoch,
            t2m.get("R@1", float("nan")),
            t2m.get("R@5", float("nan")),
            t2m.get("R@10", float("nan")),
            m2t.get("R@1", float("nan")),
        )
    else:
        log.info("%s", event)
