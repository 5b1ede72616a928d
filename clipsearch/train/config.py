"""``TrainConfig``: every knob of a training run, and its command-line spelling.

``parse_args(argv)`` is the one parser (used by ``python -m clipsearch.train``); the
``clipsearch train`` command builds the same dataclass from its Typer options.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from clipsearch.errors import UsageError
from clipsearch.train.loss import LOSSES
from clipsearch.train.modes import MODES

PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """A training run. Exactly one data source (pairs / images / shards / videos) is set."""

    # --- output
    out: Path  # run folder: checkpoint.safetensors, train_state.pt, report.{json,md}
    resume: bool = False  # continue the run in `out` from its last completed epoch
    overwrite: bool = False  # replace a run already in `out`
    # --- data
    pairs: Path | None = None  # CSV/TSV/JSONL (image, caption), Karpathy JSON or MSR-VTT csv
    images: Path | None = None  # folder of images with .txt sidecar captions
    shards: list[Path] = field(default_factory=list)  # webdataset .tar shards
    videos: Path | None = None  # folder of videos; captions come from `captions`
    captions: Path | None = None  # captions file for `videos` (CSV/JSONL pairs or MSR-VTT JSON)
    media_root: Path | None = None  # folder the pairs file's paths are relative to
    image_column: str | None = None  # media column of the pairs file (guessed if None)
    caption_column: str | None = None  # caption column of the pairs file (guessed if None)
    split: str = "train"  # split to read from Karpathy / MSR-VTT JSON annotations
    val_fraction: float = 0.1  # share of media held out for validation (0: none)
    max_val: int | None = 1000  # cap on validation media (evaluation is O(n²))
    augment: bool = False  # random resized crops (80–100 % area) on training images
    frames: str = "uniform:12"  # frame sampler for videos (a fixed count: uniform:N)
    pooling: str = "mean"  # video pooling of frame embeddings: CLIP4Clip meanP
    # --- model
    base: str | None = "ViT-B-32:laion2b_s34b_b79k"  # model spec to fine-tune
    from_scratch: str | None = None  # open_clip architecture to train from random weights
    mode: str = "full"  # full | lit | proj | lora (see clipsearch.train.modes)
    lora_rank: int = 8  # LoRA rank r
    lora_alpha: float = 16.0  # LoRA scale α (ΔW = α/r · B·A)
    loss: str = "clip"  # clip (InfoNCE) | siglip (sigmoid)
    # --- optimisation
    epochs: int = 5  # passes over the training media
    batch_size: int = 64  # logical contrastive batch (pairs per step)
    micro_batch: int | None = None  # gradient caching: pairs per re-forward (None: off)
    lr: float = 1e-5  # peak learning rate (AdamW)
    weight_decay: float = 0.2  # AdamW decay on matrices (not on gains, biases, temperature)
    beta1: float = 0.9  # AdamW β1
    beta2: float = 0.98  # AdamW β2 (CLIP's value for ViTs)
    eps: float = 1e-6  # AdamW ε
    warmup_steps: int = 0  # linear warm-up steps before the cosine decay
    grad_clip: float | None = 1.0  # max global gradient norm (None: no clipping)
    precision: str = "fp32"  # fp32 | bf16 (autocast around the encoders; weights stay fp32)
    grad_checkpointing: bool = False  # recompute activations in backward (open_clip support)
    seed: int = 0  # seeds the split, data order, augmentation and initialisation
    workers: int = 2  # image/video decoding threads
    eval_batch_size: int = 64  # batch size when embedding the validation split

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        sources = [
            self.pairs is not None,
            self.images is not None,
            bool(self.shards),
            self.videos is not None,
        ]
        if sum(sources) != 1:
            raise UsageError(
                "give exactly one data source: --pairs FILE, --images FOLDER, "
                "--shards A.tar [B.tar ...] or --videos FOLDER --captions FILE"
            )
        if self.videos is not None and self.captions is None:
            raise UsageError("--videos needs --captions FILE (CSV/JSONL pairs or MSR-VTT JSON)")
        if self.from_scratch is None and not self.base:
            raise UsageError("give --base MODEL to fine-tune, or --from-scratch ARCH")
        if self.mode not in MODES:
            raise UsageError(f"unknown --mode {self.mode!r}; choose one of: {', '.join(MODES)}")
        if self.loss not in LOSSES:
            raise UsageError(f"unknown --loss {self.loss!r}; choose one of: {', '.join(LOSSES)}")
        if self.precision not in PRECISIONS:
            raise UsageError(
                f"unknown --precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}"
            )
        if self.pooling != "mean":
            raise UsageError(
                f"unknown --pooling {self.pooling!r}; only 'mean' (meanP) is supported"
            )
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite exclude each other")
        for name in ("epochs", "batch_size", "workers", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1")
        if self.batch_size < 2:
            raise UsageError("--batch-size must be >= 2: a contrastive batch needs negatives")
        if self.micro_batch is not None and self.micro_batch < 1:
            raise UsageError("--micro-batch must be >= 1")
        if self.lr <= 0 or self.warmup_steps < 0:
            raise UsageError("--lr must be > 0 and --warmup-steps >= 0")
        if not 0 <= self.val_fraction < 1:
            raise UsageError("--val-fraction must be in [0, 1)")

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly copy (paths as strings)."""
        out: dict[str, object] = {}
        for k, v in asdict(self).items():
            if isinstance(v, Path):
                v = str(v)
            elif isinstance(v, list):
                v = [str(x) for x in v]
            out[k] = v
        return out


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing and exiting on bad arguments."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``python -m clipsearch.train`` (one flag per config field)."""
    p = _Parser(
        prog="python -m clipsearch.train",
        description="Contrastive training / fine-tuning of a CLIP model on (media, caption) pairs.",
    )
    d = TrainConfig.__dataclass_fields__
    p.add_argument("--out", type=Path, required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--pairs", type=Path, help="CSV/TSV/JSONL pairs, Karpathy JSON or MSR-VTT csv")
    p.add_argument("--images", type=Path, help="folder of images with .txt sidecar captions")
    p.add_argument("--shards", type=Path, nargs="+", default=[], help="webdataset .tar shards")
    p.add_argument("--videos", type=Path, help="folder of videos (with --captions)")
    p.add_argument("--captions", type=Path, help="captions for --videos")
    p.add_argument("--media-root", type=Path, help="folder the pairs file's paths are relative to")
    p.add_argument("--image-column", help="media column of the pairs file")
    p.add_argument("--caption-column", help="caption column of the pairs file")
    p.add_argument("--split", default=d["split"].default)
    p.add_argument("--val-fraction", type=float, default=d["val_fraction"].default)
    p.add_argument("--max-val", type=int, default=d["max_val"].default)
    p.add_argument("--augment", action="store_true", help="random resized crops")
    p.add_argument("--frames", default=d["frames"].default, help="video frame sampler (uniform:N)")
    p.add_argument("--pooling", default=d["pooling"].default, help="video pooling (mean)")
    p.add_argument("--base", default=d["base"].default, help="model spec to fine-tune")
    p.add_argument("--from-scratch", help="open_clip architecture to train from random weights")
    p.add_argument("--mode", default=d["mode"].default, choices=MODES)
    p.add_argument("--lora-rank", type=int, default=d["lora_rank"].default)
    p.add_argument("--lora-alpha", type=float, default=d["lora_alpha"].default)
    p.add_argument("--loss", default=d["loss"].default, choices=tuple(LOSSES))
    p.add_argument("--epochs", type=int, default=d["epochs"].default)
    p.add_argument("--batch-size", type=int, default=d["batch_size"].default)
    p.add_argument("--micro-batch", type=int, help="gradient caching micro-batch")
    p.add_argument("--lr", type=float, default=d["lr"].default)
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"].default)
    p.add_argument("--beta1", type=float, default=d["beta1"].default)
    p.add_argument("--beta2", type=float, default=d["beta2"].default)
    p.add_argument("--eps", type=float, default=d["eps"].default)
    p.add_argument("--warmup-steps", type=int, default=d["warmup_steps"].default)
    p.add_argument("--grad-clip", type=float, default=d["grad_clip"].default)
    p.add_argument("--precision", default=d["precision"].default, choices=PRECISIONS)
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--seed", type=int, default=d["seed"].default)
    p.add_argument("--workers", type=int, default=d["workers"].default)
    p.add_argument("--eval-batch-size", type=int, default=d["eval_batch_size"].default)
    return p


def parse_args(argv: list[str] | None) -> TrainConfig:
    """Command-line arguments -> :class:`TrainConfig` (UsageError on a bad combination)."""
    ns = build_parser().parse_args(argv)
    values = vars(ns)
    if values.get("from_scratch"):
        values["base"] = None
    names = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k.replace("-", "_"): v for k, v in values.items() if k in names})
