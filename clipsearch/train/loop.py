"""The training loop: ``run(config)`` (the `clipsearch train` command calls it).

One epoch = every training media once (see :mod:`clipsearch.train.batches`). Each step:
cosine learning rate with linear warm-up (open_clip's ``cosine_lr``), the contrastive
step (plain, or gradient-cached when ``micro_batch < batch_size``), a finite-loss check,
global-norm gradient clipping, AdamW, and the CLIP temperature clamp (scale <= 100).
After each epoch: validation recall, then the checkpoint and the resume state.

``run`` reads as open_clip's ``main``: `prepare` (:mod:`clipsearch.train.session`), then
per epoch `train_one_epoch`, `evaluate` and `save_epoch`, then the report.

Resume reproduces the straight run: data order and augmentation are functions of
(seed, epoch); the optimiser moments, step counter and torch RNG state are restored;
the learning rate is a function of the global step.

A non-finite loss or gradient norm stops the run with a ``TrainingError`` before the
optimiser step, so the checkpoint on disk (the last completed epoch) stays good.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from clipsearch.errors import TrainingError
from clipsearch.train import state as run_state
from clipsearch.train.batches import Batch
from clipsearch.train.config import TrainConfig
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
from clipsearch.train.modes import ModeSetup, merged_model, trainable_state_dict
from clipsearch.train.report import TrainReport
from clipsearch.train.session import TrainingSession, prepare
from clipsearch.train.trainable import TrainableModel


def cosine_lr(step: int, *, base_lr: float, warmup: int, total: int) -> float:
    """open_clip's schedule: linear warm-up to ``base_lr``, then half a cosine to 0.

    lr(s) = base·(s+1)/warmup for s < warmup, else base·½·(1 + cos(π·(s−warmup)/(total−warmup))).
    """
    if step < warmup:
        return base_lr * (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / span)) * base_lr


def run(config: TrainConfig, *, on_event: OnEvent | None = None) -> TrainReport:
    """Train as ``config`` says; emit progress events; return the final report.

    Writes into ``config.out`` (see :mod:`clipsearch.train.state` for the layout).
    Raises TrainingError (folder holds a run, nothing to resume, non-finite loss),
    DatasetError (bad or empty data), UsageError (bad options), ModelError (model).
    """
    emit = on_event or (lambda event: None)
    session = prepare(config, emit=emit)
    emit(_data_ready(session))
    if not config.resume and (before := evaluate(session, epoch=0, emit=emit)) is not None:
        session.before = before
    for epoch in range(session.start_epoch, config.epochs):
        entry = train_one_epoch(session, epoch, emit=emit)
        if (metrics := evaluate(session, epoch=epoch + 1, emit=emit)) is not None:
            entry["metrics"] = metrics
        session.history.append(entry)
        save_epoch(session, epoch + 1, emit=emit)
    report = _final_report(session)
    out = session.out
    js, md = report.write(out, json_name=run_state.REPORT_JSON, md_name=run_state.REPORT_MD)
    emit(TrainDone(report_json=js, report_markdown=md, checkpoint=out / run_state.CHECKPOINT_FILE))
    return report


def train_one_epoch(session: TrainingSession, epoch: int, *, emit: OnEvent) -> dict:
    """One pass over the training media (0-based ``epoch``): a `StepDone` per step, then a
    `MediaSkipped` if media failed to decode. Returns the epoch's history entry (1-based
    epoch, mean loss, steps, seconds)."""
    _set_train_mode(session.tm, session.setup)
    t_epoch = time.perf_counter()
    failed_before = len(session.loader.failed)
    losses: list[float] = []
    t_last = time.perf_counter()
    for batch in session.loader.epoch_batches(epoch):
        global_step = epoch * session.steps_per_epoch + batch.index
        loss, lr = _train_step(session, batch, epoch=epoch, global_step=global_step)
        losses.append(loss)
        now = time.perf_counter()
        emit(
            StepDone(
                epoch=epoch + 1,
                step=batch.index + 1,
                steps_per_epoch=session.steps_per_epoch,
                global_step=global_step + 1,
                total_steps=session.total_steps,
                loss=loss,
                pairs=len(batch),
                pairs_per_s=len(batch) / max(now - t_last, 1e-9),
                lr=lr,
                logit_scale=float(session.tm.model.logit_scale.detach().exp()),
            )
        )
        t_last = now
    if len(session.loader.failed) > failed_before:
        new = list(session.loader.failed.values())[failed_before:]
        emit(MediaSkipped(epoch=epoch + 1, count=len(new), examples=new[:5]))
    return {
        "epoch": epoch + 1,
        "loss": sum(losses) / max(1, len(losses)),
        "steps": len(losses),
        "seconds": time.perf_counter() - t_epoch,
    }


def _train_step(
    session: TrainingSession, batch: Batch, *, epoch: int, global_step: int
) -> tuple[float, float]:
    """One optimiser step on ``batch``: (loss, learning rate).

    Raises TrainingError before the update when the loss or the gradient norm is not
    finite, so the weights (and the last checkpoint) stay good.
    """
    config, optimizer = session.config, session.optimizer
    lr = cosine_lr(
        global_step, base_lr=config.lr, warmup=config.warmup_steps, total=session.total_steps
    )
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss_fn = get_loss(config.loss)
    if session.use_grad_cache:
        loss = cached_step(
            session.step_model,
            batch.pixels,
            batch.tokens,
            loss_fn=loss_fn,
            micro_batch=config.micro_batch,
            autocast=session.autocast,
        )
    else:
        loss = full_batch_step(
            session.step_model,
            batch.pixels,
            batch.tokens,
            loss_fn=loss_fn,
            autocast=session.autocast,
        )
    params = [p for g in optimizer.param_groups for p in g["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(
        params, config.grad_clip if config.grad_clip else float("inf")
    )
    if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
        raise _diverged(
            loss, grad_norm, epoch=epoch, step=batch.index, out=session.out, lr=config.lr
        )
    optimizer.step()
    clamp_logit_scale_(session.tm.model.logit_scale)
    return float(loss), lr


def evaluate(session: TrainingSession, *, epoch: int, emit: OnEvent) -> dict | None:
    """Validation recall after ``epoch`` completed epochs (0: before training), with an
    `EvalDone`; None when the run has no validation split."""
    if session.val_loader is None:
        return None
    t0 = time.perf_counter()
    metrics = validation_recall(
        session.tm,
        session.val_loader,
        batch_size=session.config.eval_batch_size,
        autocast=session.autocast,
    )
    emit(EvalDone(epoch=epoch, metrics=metrics, seconds=time.perf_counter() - t0))
    return metrics


def save_epoch(session: TrainingSession, epoch: int, *, emit: OnEvent) -> None:
    """Write the checkpoint, then the resume state, of ``epoch`` (1-based) completed epochs."""
    from clipsearch.models.checkpoint import save_checkpoint

    tm, setup, out = session.tm, session.setup, session.out
    t0 = time.perf_counter()
    path = save_checkpoint(
        merged_model(tm.model, setup),
        out / run_state.CHECKPOINT_FILE,
        arch=tm.arch,
        model_cfg=tm.model_cfg,
        base_spec=tm.base_spec,
        extra={"epoch": str(epoch), "mode": setup.mode},
    )
    run_state.save_state(
        out,
        {
            "epoch": epoch,
            "optimizer": session.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "history": session.history,
            "before": session.before,
            "adapters": trainable_state_dict(tm.model) if setup.lora is not None else {},
            "failed": dict(session.loader.failed),
        },
    )
    emit(CheckpointSaved(epoch=epoch, path=path, seconds=time.perf_counter() - t0))


def _set_train_mode(tm: TrainableModel, setup: ModeSetup) -> None:
    tm.model.train()
    for module in setup.eval_modules:
        module.eval()


def _data_ready(session: TrainingSession) -> DataReady:
    val = session.val_data
    return DataReady(
        train_media=session.train_data.n_media,
        train_captions=len(session.train_data.captions),
        val_media=val.n_media if val else 0,
        val_captions=len(val.captions) if val else 0,
        skipped=session.data.skipped.to_dict(),
        truncated_captions=session.truncated,
        steps_per_epoch=session.steps_per_epoch,
        total_steps=session.total_steps,
        start_epoch=session.start_epoch,
        trainable_params=session.setup.trainable_count,
        frozen_params=session.setup.frozen_count,
    )


def _final_report(session: TrainingSession) -> TrainReport:
    val, val_loader, history = session.val_data, session.val_loader, session.history
    checkpoint = session.out / run_state.CHECKPOINT_FILE
    return TrainReport(
        status="completed",
        out=str(session.out),
        checkpoint=str(checkpoint),
        config=session.config.to_dict(),
        data={
            "train_media": session.train_data.n_media,
            "train_captions": len(session.train_data.captions),
            "val_media": val.n_media if val else 0,
            "val_captions": len(val.captions) if val else 0,
            **session.data.skipped.to_dict(),
            "truncated_captions": session.truncated,
            "undecodable_media": len(session.loader.failed)
            + (len(val_loader.failed) if val_loader else 0),
        },
        base_spec=session.tm.base_spec,
        base_fingerprint=session.tm.base_fingerprint,
        fingerprint=_fingerprint_of(checkpoint),
        trainable_params=session.setup.trainable_count,
        frozen_params=session.setup.frozen_count,
        before=session.before,
        after=history[-1].get("metrics", {}) if history else {},
        history=history,
        train_seconds=sum(h["seconds"] for h in history),
    )


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
