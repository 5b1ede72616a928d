"""``TrainConfig``: every knob of a training run, and the values its fixed-choice fields take.

The ``clipsearch train`` command (``clipsearch.cli.train_cmd``) has one option per field
and builds this dataclass from them; Python callers build it directly. This module imports
no torch, so the command line can offer the choices without loading it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

from clipsearch.errors import UsageError

# What ``apply_mode`` trains (clipsearch.train.modes): all weights, the text tower with the
# image tower locked (LiT), the projection heads only, or LoRA adapters.
TrainMode = Literal["full", "lit", "proj", "lora"]
# The contrastive loss (clipsearch.train.loss.LOSSES): CLIP's InfoNCE or SigLIP's sigmoid.
LossName = Literal["clip", "siglip"]
# Autocast precision around the encoders (the weights stay fp32).
TrainPrecision = Literal["fp32", "bf16"]
# How frame embeddings make a video embedding (CLIP4Clip's meanP, the one supported).
VideoPooling = Literal["mean"]

MODES: tuple[TrainMode, ...] = get_args(TrainMode)
LOSS_NAMES: tuple[LossName, ...] = get_args(LossName)
PRECISIONS: tuple[TrainPrecision, ...] = get_args(TrainPrecision)
VIDEO_POOLINGS: tuple[VideoPooling, ...] = get_args(VideoPooling)


@dataclass
class TrainConfig:
    """A training run. Exactly one data source (pairs / images / shards / videos) is set."""

    # --- output
    out: Path  # run folder: checkpoint.safetensors, train_state.pt, report.{json,md}
    resume: bool = False  # continue the run in `out` from its last completed epoch
    overwrite: bool = False  # replace a run already in `out`
    # --- data
    pairs: Path | None = None  # CSV/TSV/JSONL (image, caption), Karpathy JSON or MSR-VTT csv;
    # or "auto:DIR": pairs made from the unlabelled images in DIR by BLIP CapFilt
    threshold: float = 0.5  # auto: pairs: keep a BLIP caption when ITM P(match) >= this
    caption_model: str | None = None  # auto: pairs: BLIP captioner (default: BLIP base)
    itm_model: str | None = None  # auto: pairs: BLIP ITM filter (default: BLIP base COCO)
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
    pooling: VideoPooling = "mean"  # video pooling of frame embeddings: CLIP4Clip meanP
    # --- model
    base: str | None = "ViT-B-32:laion2b_s34b_b79k"  # model spec to fine-tune
    from_scratch: str | None = None  # open_clip architecture to train from random weights
    mode: TrainMode = "full"  # full | lit | proj | lora (see clipsearch.train.modes)
    lora_rank: int = 8  # LoRA rank r
    lora_alpha: float = 16.0  # LoRA scale α (ΔW = α/r · B·A)
    loss: LossName = "clip"  # clip (InfoNCE) | siglip (sigmoid)
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
    precision: TrainPrecision = (
        "fp32"  # fp32 | bf16 (autocast around the encoders; weights stay fp32)
    )
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
        if self.loss not in LOSS_NAMES:
            raise UsageError(
                f"unknown --loss {self.loss!r}; choose one of: {', '.join(LOSS_NAMES)}"
            )
        if self.precision not in PRECISIONS:
            raise UsageError(
                f"unknown --precision {self.precision!r}; choose one of: {', '.join(PRECISIONS)}"
            )
        if self.pooling not in VIDEO_POOLINGS:
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
