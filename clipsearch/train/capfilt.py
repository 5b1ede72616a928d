"""CapFilt: training pairs from a folder of unlabelled images (BLIP's caption-and-filter).

BLIP (Li et al., ICML 2022, §3.3) bootstraps its training data with two modules built from
the pre-trained model: a **captioner** writes synthetic captions for web images, and a
**filter** — the image-text matching (ITM) head — removes captions it predicts do not
match their image. Here the images have no text at all, so every pair is synthetic:

    for each image x:   c₁..cₙ = Captioner(x)                 (beam search, or n sampled)
                         keep (x, cᵢ)  iff  P_ITM(match | x, cᵢ) ≥ threshold

The threshold defaults to 0.5, BLIP's rule ("noisy if the ITM head predicts unmatched").
Kept pairs are written as the CSV ``clipsearch train --pairs`` reads (columns ``image``,
``caption``, plus ``itm_score``), image paths relative to the CSV's folder when they lie
under it. The report gives the kept / dropped counts and the failures.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipsearch.errors import DatasetError, MediaError, UsageError

if TYPE_CHECKING:
    from PIL import Image

    from clipsearch.models.blip import Captioner, ImageTextMatcher

AUTO_PREFIX = "auto:"  # ``--pairs auto:DIR``: build the pairs from DIR first
_DECODE_THREADS = 2


@dataclass(frozen=True)
class CapFiltOptions:
    """How to caption and filter."""

    threshold: float = 0.5  # keep a caption when the ITM P(match) is at least this
    captions_per_image: int = 1  # 1: beam search; more: nucleus sampling (BLIP's CapFilt)
    max_new_tokens: int = 30  # caption length cap, in tokens
    num_beams: int = 3  # beam width when captions_per_image == 1
    prompt: str | None = None  # e.g. "a picture of" (BLIP's captioner prompt)
    batch_size: int = 8  # images per captioning/ITM batch
    seed: int = 0  # sampling seed (captions_per_image > 1)

    def validate(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise UsageError(f"--threshold must be between 0 and 1, got {self.threshold}")
        for name in ("captions_per_image", "max_new_tokens", "num_beams", "batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1")


@dataclass(frozen=True)
class CapFiltProgress:
    """``done`` of ``total`` images processed; pairs kept and dropped so far."""

    done: int
    total: int
    kept: int
    dropped: int


@dataclass
class CapFiltReport:
    """What a CapFilt run did."""

    out: str
    threshold: float
    images: int = 0  # images found
    captioned: int = 0  # captions written by the captioner
    kept: int = 0  # pairs that passed the filter (rows in the CSV)
    dropped: int = 0  # captions the filter removed
    images_kept: int = 0  # images with at least one kept caption
    failed: int = 0  # images that could not be decoded
    seconds: float = 0.0
    interrupted: bool = False
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": self.out,
            "threshold": self.threshold,
            "images": self.images,
            "captioned": self.captioned,
            "kept": self.kept,
            "dropped": self.dropped,
            "images_kept": self.images_kept,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
            "errors": self.errors[:20],
        }


def find_images(folder: str | Path) -> list[Path]:
    """Every image under ``folder`` (recursive, hidden files skipped), sorted.
    Raises DatasetError when the folder is missing or holds no image."""
    from clipsearch.media.scan import scan

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder of images")
    images = sorted(f.path for f in scan([root]) if f.kind == "image")
    if not images:
        raise DatasetError(f"{root}: no images found (looked for .jpg, .png, .webp, ...)")
    return images


def make_pairs(
    folder: str | Path,
    out: str | Path,
    captioner: Captioner,
    matcher: ImageTextMatcher,
    options: CapFiltOptions = CapFiltOptions(),
    *,
    on_event: Callable[[CapFiltProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> CapFiltReport:
    """Caption every image under ``folder``, keep the captions the ITM filter accepts, and
    write them to the CSV ``out`` (replaced atomically when the run completes; an
    interrupted run writes the pairs made so far). Raises DatasetError, UsageError."""
    options.validate()
    out = Path(out).expanduser().absolute()
    images = find_images(folder)
    report = CapFiltReport(out=str(out), threshold=options.threshold, images=len(images))
    start = time.monotonic()
    emit = on_event or (lambda e: None)
    stop = should_stop or (lambda: False)
    rows: list[tuple[str, str, float]] = []
    for lo in range(0, len(images), options.batch_size):
        if stop():
            report.interrupted = True
            break
        paths = images[lo : lo + options.batch_size]
        decoded = _decode(paths, max(captioner.image_size, matcher.image_size), report)
        ok = [(p, im) for p, im in zip(paths, decoded, strict=True) if im is not None]
        if ok:
            rows.extend(_caption_and_filter(ok, captioner, matcher, options, report))
        emit(CapFiltProgress(lo + len(paths), len(images), report.kept, report.dropped))
    _write_csv(out, rows)
    report.seconds = time.monotonic() - start
    return report


def _caption_and_filter(
    batch: list[tuple[Path, Image.Image]],
    captioner: Captioner,
    matcher: ImageTextMatcher,
    options: CapFiltOptions,
    report: CapFiltReport,
) -> list[tuple[str, str, float]]:
    ims = [im for _, im in batch]
    if options.captions_per_image == 1:
        texts = captioner.caption(
            ims,
            max_new_tokens=options.max_new_tokens,
            num_beams=options.num_beams,
            prompt=options.prompt,
        )
        captions = [[t] if t else [] for t in texts]
    else:
        captions = captioner.sample(
            ims,
            options.captions_per_image,
            max_new_tokens=options.max_new_tokens,
            seed=options.seed,
            prompt=options.prompt,
        )
    pair_images = [im for im, caps in zip(ims, captions, strict=True) for _ in caps]
    pair_texts = [c for caps in captions for c in caps]
    report.captioned += len(pair_texts)
    if not pair_texts:
        return []
    p = matcher.score_pairs(pair_texts, pair_images).probability  # (P,)
    rows: list[tuple[str, str, float]] = []
    j = 0
    for (path, _), caps in zip(batch, captions, strict=True):
        kept_any = False
        for caption in caps:
            if p[j] >= options.threshold:
                rows.append((str(path), caption, float(p[j])))
                kept_any = True
            j += 1
        report.images_kept += kept_any
    report.kept += len(rows)
    report.dropped += len(pair_texts) - len(rows)
    return rows


def _decode(paths: list[Path], side: int, report: CapFiltReport) -> list[Image.Image | None]:
    from clipsearch.media import load_image

    def one(path: Path) -> Image.Image | None:
        try:
            return load_image(path, min_side=side).image
        except (MediaError, OSError) as e:
            report.failed += 1
            report.errors.append({"path": str(path), "error": str(e)})
            return None

    with ThreadPoolExecutor(_DECODE_THREADS) as pool:
        return list(pool.map(one, paths))


def _write_csv(out: Path, rows: list[tuple[str, str, float]]) -> None:
    """The pairs CSV (image, caption, itm_score), replaced atomically."""
    from clipsearch.atomic import atomic_write

    def write(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "caption", "itm_score"])
            for path, caption, score in rows:
                writer.writerow([_relative(path, out.parent), caption, f"{score:.6f}"])

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, write)
    except OSError as e:
        raise DatasetError(f"cannot write {out}: {e.strerror or e}") from e


def _relative(path: str, base: Path) -> str:
    rel = os.path.relpath(path, base)
    return path if rel.startswith("..") else rel


# --- ``clipsearch train --pairs auto:DIR`` ---------------------------------------------------
AUTO_PAIRS_FILE = "capfilt_pairs.csv"  # written into the training run's folder
AUTO_REPORT_FILE = "capfilt_report.json"


def auto_pairs_folder(pairs: str | Path | None) -> Path | None:
    """The folder of a ``auto:DIR`` pairs source, or None for a pairs file."""
    if pairs is None or not str(pairs).startswith(AUTO_PREFIX):
        return None
    folder = str(pairs)[len(AUTO_PREFIX) :].strip()
    if not folder:
        raise UsageError("--pairs auto:DIR needs a folder of images after 'auto:'")
    return Path(folder).expanduser().absolute()


@dataclass(frozen=True)
class CapFiltDone:
    """Training event: the pairs for ``--pairs auto:DIR`` are ready (``reused``: from an
    earlier run of the same training folder)."""

    report: dict[str, Any]
    pairs: str
    reused: bool = False


def pairs_for_training(
    folder: Path,
    run_dir: Path,
    *,
    options: CapFiltOptions,
    caption_model: str | None,
    itm_model: str | None,
    reuse: bool,
    on_event: Callable[[Any], None] | None = None,
) -> Path:
    """Build (or, resuming, reuse) ``run_dir/capfilt_pairs.csv`` from the images under
    ``folder``; the report is kept beside it and emitted as `CapFiltDone`. Returns the CSV."""
    import json

    from clipsearch.atomic import atomic_write_text
    from clipsearch.models.blip import load_captioner, load_matcher

    emit = on_event or (lambda e: None)
    out = run_dir / AUTO_PAIRS_FILE
    report_file = run_dir / AUTO_REPORT_FILE
    if reuse and out.is_file() and report_file.is_file():
        emit(CapFiltDone(json.loads(report_file.read_text()), str(out), reused=True))
        return out
    options.validate()
    find_images(folder)  # a bad folder fails before the models load
    captioner = load_captioner(caption_model)
    matcher = load_matcher(itm_model)
    report = make_pairs(folder, out, captioner, matcher, options)
    if report.kept == 0:
        raise DatasetError(
            f"CapFilt kept no pair from {report.images} images under {folder} (threshold "
            f"{options.threshold}, {report.dropped} captions dropped, {report.failed} images "
            "unreadable). Lower --threshold, or check the captioning and ITM models."
        )
    atomic_write_text(report_file, json.dumps(report.to_dict(), indent=2))
    emit(CapFiltDone(report.to_dict(), str(out)))
    return out
