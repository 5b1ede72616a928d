"""``clipsearch train``: contrastive fine-tuning / training from the command line.

Thin: options -> ``TrainConfig``, ``clipsearch.train.run``, Rich rendering of its events.
Every option mirrors a ``TrainConfig`` field (a test keeps the two in step).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from clipsearch.cli import options
from clipsearch.errors import UsageError
from clipsearch.train.config import LossName, TrainMode, TrainPrecision, VideoPooling

if TYPE_CHECKING:
    from rich.table import Table

    from clipsearch.train.report import TrainReport

_DATA = "Data"
_MODEL = "Model"
_OPT = "Optimisation"
_OUT = "Output"


def train(
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Run folder (checkpoint, state, report).", rich_help_panel=_OUT
        ),
    ],
    pairs: Annotated[
        Path | None,
        typer.Option(
            "--pairs",
            help="CSV/TSV/JSONL of (image, caption), Karpathy JSON (--split) or MSR-VTT csv; "
            "or auto:DIR: BLIP captions of the unlabelled images in DIR, ITM-filtered (CapFilt).",
            rich_help_panel=_DATA,
        ),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option(
            "--threshold",
            help="auto:DIR pairs: keep a caption when BLIP ITM P(match) >= this.",
            rich_help_panel=_DATA,
        ),
    ] = 0.5,
    caption_model: Annotated[
        str | None,
        typer.Option(
            "--caption-model",
            help="auto:DIR pairs: BLIP captioner, Hub id or folder "
            "(default Salesforce/blip-image-captioning-base).",
            show_default=False,
            rich_help_panel=_DATA,
        ),
    ] = None,
    itm_model: Annotated[
        str | None,
        typer.Option(
            "--itm-model",
            help="auto:DIR pairs: BLIP ITM filter, Hub id or folder "
            "(default Salesforce/blip-itm-base-coco).",
            show_default=False,
            rich_help_panel=_DATA,
        ),
    ] = None,
    images: Annotated[
        Path | None,
        typer.Option(
            "--images", help="Folder of images with .txt sidecar captions.", rich_help_panel=_DATA
        ),
    ] = None,
    shards: Annotated[
        list[Path],
        typer.Option("--shards", help="Webdataset .tar shard (repeatable).", rich_help_panel=_DATA),
    ] = [],  # noqa: B006
    videos: Annotated[
        Path | None,
        typer.Option("--videos", help="Folder of videos (with --captions).", rich_help_panel=_DATA),
    ] = None,
    captions: Annotated[
        Path | None,
        typer.Option(
            "--captions",
            help="Captions for --videos: CSV/JSONL pairs or MSR-VTT JSON.",
            rich_help_panel=_DATA,
        ),
    ] = None,
    media_root: Annotated[
        Path | None,
        typer.Option(
            "--media-root",
            help="Folder the pairs file's paths are relative to.",
            rich_help_panel=_DATA,
        ),
    ] = None,
    image_column: Annotated[
        str | None,
        typer.Option(
            "--image-column", help="Media column of the pairs file.", rich_help_panel=_DATA
        ),
    ] = None,
    caption_column: Annotated[
        str | None,
        typer.Option(
            "--caption-column", help="Caption column of the pairs file.", rich_help_panel=_DATA
        ),
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            "--split", help="Split of Karpathy / MSR-VTT JSON annotations.", rich_help_panel=_DATA
        ),
    ] = "train",
    val_fraction: Annotated[
        float,
        typer.Option(
            "--val-fraction",
            help="Share of media held out for validation (0: none).",
            rich_help_panel=_DATA,
        ),
    ] = 0.1,
    max_val: Annotated[
        int | None,
        typer.Option("--max-val", help="Cap on validation media.", rich_help_panel=_DATA),
    ] = 1000,
    augment: Annotated[
        bool,
        typer.Option(
            "--augment", help="Random resized crops on training images.", rich_help_panel=_DATA
        ),
    ] = False,
    frames: Annotated[
        str,
        typer.Option("--frames", help="Video frame sampler (uniform:N).", rich_help_panel=_DATA),
    ] = "uniform:12",
    pooling: Annotated[
        VideoPooling,
        typer.Option(
            "--pooling",
            help="Video pooling of frame embeddings (mean = CLIP4Clip meanP).",
            rich_help_panel=_DATA,
        ),
    ] = "mean",
    base: Annotated[
        str | None, typer.Option("--base", help="Model spec to fine-tune.", rich_help_panel=_MODEL)
    ] = "ViT-B-32:laion2b_s34b_b79k",
    from_scratch: Annotated[
        str | None,
        typer.Option(
            "--from-scratch",
            help="open_clip architecture to train from random weights.",
            rich_help_panel=_MODEL,
        ),
    ] = None,
    mode: Annotated[
        TrainMode,
        typer.Option(
            "--mode",
            help="What to train: all weights, the text tower with the image tower locked "
            "(LiT), the projection heads, or LoRA adapters.",
            rich_help_panel=_MODEL,
        ),
    ] = "full",
    lora_rank: Annotated[
        int, typer.Option("--lora-rank", help="LoRA rank r.", rich_help_panel=_MODEL)
    ] = 8,
    lora_alpha: Annotated[
        float, typer.Option("--lora-alpha", help="LoRA scale α.", rich_help_panel=_MODEL)
    ] = 16.0,
    loss: Annotated[
        LossName,
        typer.Option(
            "--loss", help="CLIP's InfoNCE or SigLIP's sigmoid loss.", rich_help_panel=_MODEL
        ),
    ] = "clip",
    epochs: Annotated[
        int, typer.Option("--epochs", help="Passes over the training media.", rich_help_panel=_OPT)
    ] = 5,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size", help="Logical contrastive batch (pairs per step).", rich_help_panel=_OPT
        ),
    ] = 64,
    micro_batch: Annotated[
        int | None,
        typer.Option(
            "--micro-batch", help="Gradient caching: pairs per re-forward.", rich_help_panel=_OPT
        ),
    ] = None,
    lr: Annotated[
        float,
        typer.Option(
            "--lr", help="Peak learning rate (AdamW, cosine schedule).", rich_help_panel=_OPT
        ),
    ] = 1e-5,
    weight_decay: Annotated[
        float, typer.Option("--weight-decay", help="AdamW weight decay.", rich_help_panel=_OPT)
    ] = 0.2,
    beta1: Annotated[float, typer.Option("--beta1", rich_help_panel=_OPT)] = 0.9,
    beta2: Annotated[float, typer.Option("--beta2", rich_help_panel=_OPT)] = 0.98,
    eps: Annotated[float, typer.Option("--eps", rich_help_panel=_OPT)] = 1e-6,
    warmup_steps: Annotated[
        int, typer.Option("--warmup-steps", help="Linear warm-up steps.", rich_help_panel=_OPT)
    ] = 0,
    grad_clip: Annotated[
        float | None, typer.Option("--grad-clip", help="Max gradient norm.", rich_help_panel=_OPT)
    ] = 1.0,
    precision: Annotated[
        TrainPrecision,
        typer.Option(
            "--precision", help="Autocast precision (weights stay fp32).", rich_help_panel=_OPT
        ),
    ] = "fp32",
    grad_checkpointing: Annotated[
        bool,
        typer.Option(
            "--grad-checkpointing", help="Recompute activations in backward.", rich_help_panel=_OPT
        ),
    ] = False,
    seed: Annotated[int, typer.Option("--seed", rich_help_panel=_OPT)] = 0,
    workers: Annotated[int, options.workers_option(rich_help_panel=_OPT)] = 2,
    eval_batch_size: Annotated[int, typer.Option("--eval-batch-size", rich_help_panel=_OPT)] = 64,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in --out (with no data option: its own settings, optimiser options may change).",
            rich_help_panel=_OUT,
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace a run already in --out.", rich_help_panel=_OUT),
    ] = False,
    json_out: Annotated[
        bool, options.json_option(help="Print the final report as JSON.", rich_help_panel=_OUT)
    ] = False,
    quiet: Annotated[bool, options.quiet_option(rich_help_panel=_OUT)] = False,
) -> None:
    """Fine-tune (or train from scratch) a CLIP model contrastively on your (media, caption) pairs."""
    values = {k: v for k, v in locals().items() if k not in ("json_out", "quiet")}
    from clipsearch.cli import render
    from clipsearch.train import TrainConfig, resume_config, run

    no_source = pairs is None and images is None and not shards and videos is None
    if resume and no_source:
        config = resume_config(out, **_resume_overrides(values))
    else:
        if from_scratch:
            values["base"] = None
        config = TrainConfig(**values)
    with TrainProgress(quiet=quiet or json_out) as progress:
        report = run(config, on_event=progress)
    if json_out:
        render.print_json(report.to_dict())
    else:
        render.out.print(report_table(report))


def _resume_overrides(values: dict[str, object]) -> dict[str, object]:
    """``--resume`` with no data option reuses the run's own settings: the optimiser
    options the user changed from their defaults override them; changing any other option
    is a usage error (the data and the model of a run cannot change half-way)."""
    from clipsearch.train.state import RESUME_OVERRIDES

    defaults = {name: p.default for name, p in inspect.signature(train).parameters.items()}
    changed = {k for k, v in values.items() if k in defaults and v != defaults[k]}
    fixed = sorted(changed - RESUME_OVERRIDES - {"out", "resume", "overwrite"})
    if fixed:
        raise UsageError(
            f"with --resume and no data option, only --out and the optimiser options "
            f"({', '.join('--' + k.replace('_', '-') for k in sorted(RESUME_OVERRIDES))}) "
            f"may be given; got --{fixed[0].replace('_', '-')}"
        )
    return {k: values[k] for k in RESUME_OVERRIDES if k in changed}


class TrainProgress:
    """Renders training events: a bar per epoch with loss and pairs/s; recall lines."""

    def __init__(self, *, quiet: bool = False) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from clipsearch.cli import render

        self.quiet = quiet
        self.console = render.err
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  {task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=quiet,
            transient=False,
        )
        self.task = None
        self.epoch = 0

    def __enter__(self) -> TrainProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: object) -> None:
        from clipsearch.train.events import (
            CheckpointSaved,
            DataReady,
            EvalDone,
            MediaSkipped,
            StepDone,
        )

        if self.quiet:
            return
        p = self.progress
        from clipsearch.train.capfilt import CapFiltDone

        if isinstance(event, CapFiltDone):
            r = event.report
            p.console.print(
                f"CapFilt pairs {'reused from' if event.reused else 'written to'} {event.pairs}: "
                f"{r['images']} images, {r['captioned']} captions, kept {r['kept']}, "
                f"dropped {r['dropped']} (ITM threshold {r['threshold']}), "
                f"{r['failed']} unreadable"
            )
        elif isinstance(event, DataReady):
            s = event.skipped
            p.console.print(
                f"train {event.train_media} media / {event.train_captions} captions, "
                f"validation {event.val_media} / {event.val_captions}; "
                f"skipped: {s.get('missing_media', 0)} missing media, "
                f"{s.get('empty_captions', 0)} empty captions, "
                f"{s.get('duplicate_pairs', 0)} duplicate pairs; "
                f"{event.truncated_captions} captions truncated to the text context; "
                f"{event.trainable_params:,} trainable parameters"
                + (f"; resuming after epoch {event.start_epoch}" if event.start_epoch else "")
            )
        elif isinstance(event, StepDone):
            if event.epoch != self.epoch or self.task is None:
                self.epoch = event.epoch
                self.task = p.add_task(
                    f"epoch {event.epoch}", total=event.steps_per_epoch, loss="", rate=""
                )
            p.update(
                self.task,
                completed=event.step,
                loss=f"{event.loss:.4f}",
                rate=f"{event.pairs_per_s:.1f} pairs/s",
            )
        elif isinstance(event, EvalDone):
            t, m = event.metrics.get("text_to_media", {}), event.metrics.get("media_to_text", {})
            label = "base model" if event.epoch == 0 else f"epoch {event.epoch}"
            p.console.print(
                f"{label}: text→media R@1 {t.get('R@1', 0):.1f} R@5 {t.get('R@5', 0):.1f} "
                f"R@10 {t.get('R@10', 0):.1f} | media→text R@1 {m.get('R@1', 0):.1f} "
                f"R@5 {m.get('R@5', 0):.1f} R@10 {m.get('R@10', 0):.1f}"
            )
        elif isinstance(event, MediaSkipped):
            p.console.print(
                f"[yellow]{event.count} media could not be decoded and were skipped[/] "
                f"(e.g. {', '.join(event.examples[:2])})"
            )
        elif isinstance(event, CheckpointSaved):
            p.console.print(f"saved {event.path} ({event.seconds:.1f} s)")


def report_table(report: TrainReport) -> Table:
    """Before/after validation recall as a Rich table (plus where things were written)."""
    from rich.table import Table

    table = Table(title=f"Validation recall — {report.checkpoint}")
    table.add_column("direction")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for key, label in (("text_to_media", "text→media"), ("media_to_text", "media→text")):
        for k in ("R@1", "R@5", "R@10"):
            b = report.before.get(key, {}).get(k)
            a = report.after.get(key, {}).get(k)
            table.add_row(
                label, k, "" if b is None else f"{b:.1f}", "" if a is None else f"{a:.1f}"
            )
    table.caption = f"fingerprint {report.fingerprint}; report {report.out}/report.md"
    return table
