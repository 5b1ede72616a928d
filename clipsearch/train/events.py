"""Progress events of a training run. The library emits them; the CLI renders them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class DataReady:
    """Data read and split; model loaded. Sent once before the first step."""

    train_media: int
    train_captions: int
    val_media: int
    val_captions: int
    skipped: dict[str, object]  # SkipCounts.to_dict(): missing media, empty captions...
    truncated_captions: int  # captions longer than the text context (truncated)
    steps_per_epoch: int
    total_steps: int
    start_epoch: int  # 0 for a new run, the completed epochs when resuming
    trainable_params: int
    frozen_params: int


@dataclass(frozen=True)
class StepDone:
    """One optimiser step finished."""

    epoch: int  # 1-based epoch being trained
    step: int  # 1-based step within the epoch
    steps_per_epoch: int
    global_step: int  # 1-based over the run
    total_steps: int
    loss: float
    pairs: int  # pairs in this step's batch
    pairs_per_s: float  # this step's throughput (data wait included)
    lr: float
    logit_scale: float  # exp(log-temperature) after the step


@dataclass(frozen=True)
class EvalDone:
    """Validation recall after ``epoch`` completed epochs (0: the base model)."""

    epoch: int
    metrics: dict[str, dict[str, float]]  # {"text_to_media": {"R@1": ..}, "media_to_text": ..}
    seconds: float


@dataclass(frozen=True)
class CheckpointSaved:
    epoch: int
    path: Path
    seconds: float


@dataclass(frozen=True)
class MediaSkipped:
    """Media that could not be decoded during an epoch (each reported once)."""

    epoch: int
    count: int
    examples: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TrainDone:
    report_json: Path
    report_markdown: Path
    checkpoint: Path


TrainEvent = DataReady | StepDone | EvalDone | CheckpointSaved | MediaSkipped | TrainDone
OnEvent = Callable[[TrainEvent], None]
