"""Run an evaluation: embed (cached) → similarity → rerank → metrics → a report object.

``evaluate_retrieval`` handles image and video datasets; for videos it evaluates every
requested pooling from the same cached frame vectors, and every reranker for each
pooling. ``evaluate_classification`` runs zero-shot classification with a prompt
ensemble. Both return dataclasses that ``clipsearch.eval.report`` writes as JSON,
Markdown and plots. Nothing here prints; progress goes to ``progress(stage, done, total)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipsearch.errors import DatasetError
from clipsearch.eval.datasets import ClassificationDataset, RetrievalDataset, Skipped
from clipsearch.eval.embed import (
    CacheStats,
    EmbeddingCache,
    FrameEmbeddings,
    ImageEmbeddings,
    ProgressCallback,
    embed_images,
    embed_texts,
    embed_video_frames,
    model_fingerprint,
)
from clipsearch.eval.metrics import (
    DEFAULT_KS,
    ClassificationMetrics,
    RetrievalMetrics,
    classification_metrics,
    retrieval_metrics,
)
from clipsearch.eval.rerank import RerankContext, apply_reranker, get_reranker
from clipsearch.media.scan import MediaKind
from clipsearch.models.base import Encoder

VIDEO_TO_TEXT_NOTE = (
    "media→text: rank of the best-ranked of the media's captions (CLIP convention: a hit "
    "if any caption is in the top K). With one caption per video (MSR-VTT 1k-A) this is "
    "CLIP4Clip's compute_metrics(sim.T)."
)


@dataclass(frozen=True)
class RetrievalRun:
    """Metrics of one configuration (pooling is None for images)."""

    pooling: str | None
    rerank: str
    metrics: RetrievalMetrics

    @property
    def label(self) -> str:
        return f"{self.pooling}+{self.rerank}" if self.pooling else self.rerank


@dataclass
class RetrievalReport:
    dataset: str
    kind: MediaKind
    model: str
    n_media: int
    n_texts: int
    runs: list[RetrievalRun]
    skipped: Skipped
    sampler: str | None = None
    tau: float | None = None
    cache: CacheStats = field(default_factory=lambda: CacheStats(0, 0))
    seconds: dict[str, float] = field(default_factory=dict)
    note: str = VIDEO_TO_TEXT_NOTE
    precision: str | None = None  # the weights' precision the numbers were measured in
    runtime: str | None = None  # what ran the model, e.g. "torch 2.14.1 on cpu"
    # what a reranker that brings its own model ran with, e.g. {"itm": "BLIP ITM ..., top 32"}
    rerankers: dict[str, str] = field(default_factory=dict)

    def best(self, direction: str = "text_to_media", k: int = 1) -> RetrievalRun:
        """The run with the highest R@k in ``direction``."""
        return max(self.runs, key=lambda r: getattr(r.metrics, direction).recall[k])

    def to_dict(self) -> dict[str, object]:
        return {
            "task": "retrieval",
            "dataset": self.dataset,
            "kind": self.kind,
            "model": self.model,
            "precision": self.precision,
            "runtime": self.runtime,
            "n_media": self.n_media,
            "n_texts": self.n_texts,
            "sampler": self.sampler,
            "tau": self.tau,
            "skipped": self.skipped.to_dict(),
            "cache": {"hits": self.cache.hits, "misses": self.cache.misses},
            "seconds": self.seconds,
            "note": self.note,
            "rerankers": self.rerankers,
            "runs": [
                {"pooling": r.pooling, "rerank": r.rerank, **r.metrics.to_dict()} for r in self.runs
            ],
        }


@dataclass
class ClassificationReport:
    dataset: str
    model: str
    classnames: list[str]
    n_templates: int
    metrics: ClassificationMetrics
    skipped: Skipped
    empty_classes: list[str] = field(default_factory=list)
    cache: CacheStats = field(default_factory=lambda: CacheStats(0, 0))
    seconds: dict[str, float] = field(default_factory=dict)
    precision: str | None = None  # see RetrievalReport
    runtime: str | None = None

    def to_dict(self) -> dict[str, object]:
        per_class = {
            c: (None if np.isnan(v) else float(v))
            for c, v in zip(self.classnames, self.metrics.per_class_recall, strict=True)
        }
        return {
            "task": "classification",
            "dataset": self.dataset,
            "model": self.model,
            "precision": self.precision,
            "runtime": self.runtime,
            "n_classes": len(self.classnames),
            "n_templates": self.n_templates,
            "skipped": self.skipped.to_dict(),
            "empty_classes": self.empty_classes,
            "cache": {"hits": self.cache.hits, "misses": self.cache.misses},
            "seconds": self.seconds,
            "metrics": self.metrics.to_dict(),
            "per_class_recall": per_class,
        }


def _model_name(encoder: Encoder) -> str:
    return str(getattr(encoder, "spec", None) or encoder.fingerprint)


def encoder_precision(encoder: Encoder) -> str | None:
    """The precision the encoder's weights run in ("fp32", "bf16"...), None if unknown."""
    value = getattr(encoder, "precision", None)
    return None if value is None else str(value)


def encoder_runtime(encoder: Encoder) -> str:
    """What runs the model: the encoder's own ``runtime`` when it says, else torch (with
    its version and device) for torch-backed encoders, else the encoder's class."""
    runtime = getattr(encoder, "runtime", None)
    if runtime:
        return str(runtime)
    device = getattr(encoder, "device", None)
    if device is not None:
        import torch

        return f"torch {torch.__version__} on {device}"
    cls = type(encoder)
    return f"{cls.__module__}.{cls.__qualname__}"


def evaluate_retrieval(
    dataset: RetrievalDataset,
    encoder: Encoder,
    *,
    cache_dir: str | Path | None,
    poolings: Sequence[str] = ("mean",),
    reranks: Sequence[str] = ("none",),
    tau: float = 0.1,
    sampler: str = "uniform:12",
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 64,
    workers: int = 2,
    progress: ProgressCallback | None = None,
) -> RetrievalReport:
    """Evaluate text↔media retrieval on ``dataset`` with ``encoder``.

    cache_dir: where embeddings are cached (None: no cache). poolings: for video datasets,
    each of mean/max/softmax to evaluate (ignored for images). reranks: registered
    reranker names, each evaluated. Media that fail to decode are dropped with their
    captions and counted in ``report.skipped.undecodable_media``.
    Raises DatasetError if nothing decodable is left; UsageError for unknown
    pooling/reranker names (checked before any encoding).
    """
    from clipsearch.eval.video import parse_poolings

    for name in reranks:
        get_reranker(name)
    poolings = parse_poolings(poolings) if dataset.kind == "video" else [None]
    cache = EmbeddingCache(cache_dir)
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    media = _embed_media(
        dataset,
        encoder,
        cache=cache,
        sampler=sampler,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
    )
    seconds["embed_media"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    text_vecs = embed_texts(encoder, dataset.captions, cache=cache, progress=progress)
    seconds["embed_texts"] = time.perf_counter() - t0

    kept, keep_media = _drop_undecodable(dataset, media)
    text_vecs = text_vecs[media.ok[dataset.text_to_media]]  # (T', D)

    t0 = time.perf_counter()
    gallery, matrices = _similarities(media, keep_media, text_vecs, poolings, tau=tau)
    frame_time = None  # a cross-encoder looks at a video's frame nearest the caption
    if isinstance(media, FrameEmbeddings):
        frame_time = _best_frame_time(text_vecs, media.select(keep_media.tolist()))
    raw = RawInputs(kept.captions, kept.media, frame_time)
    runs = [
        RetrievalRun(
            pooling, name, _rerank_and_score(name, S, text_vecs, gallery, kept, raw, ks=ks)
        )
        for pooling, S in matrices.items()
        for name in reranks
    ]
    seconds["score"] = time.perf_counter() - t0

    return RetrievalReport(
        dataset=dataset.name,
        kind=dataset.kind,
        model=_model_name(encoder),
        precision=encoder_precision(encoder),
        runtime=encoder_runtime(encoder),
        n_media=len(kept.media),
        n_texts=len(kept.captions),
        runs=runs,
        skipped=dataset.skipped,
        sampler=sampler if dataset.kind == "video" else None,
        tau=tau if dataset.kind == "video" and "softmax" in poolings else None,
        cache=cache.stats,
        seconds=seconds,
    )


def _embed_media(
    dataset: RetrievalDataset,
    encoder: Encoder,
    *,
    cache: EmbeddingCache,
    sampler: str,
    batch_size: int,
    workers: int,
    progress: ProgressCallback | None,
) -> ImageEmbeddings | FrameEmbeddings:
    """The dataset's images, or its videos' sampled frames, encoded (cached)."""
    if dataset.kind == "video":
        return embed_video_frames(
            encoder,
            dataset.media,
            sampler=sampler,
            cache=cache,
            batch_size=batch_size,
            workers=workers,
            progress=progress,
        )
    return embed_images(
        encoder,
        dataset.media,
        cache=cache,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
    )


def _drop_undecodable(
    dataset: RetrievalDataset, media: ImageEmbeddings | FrameEmbeddings
) -> tuple[RetrievalDataset, np.ndarray]:
    """Record the media that failed in ``dataset.skipped``; return the dataset without them
    (and their captions) and the positions of the media kept.

    Raises DatasetError if no medium decoded.
    """
    failed = np.flatnonzero(~media.ok)
    dataset.skipped.undecodable_media = [
        f"{dataset.media_ids[i]}: {media.errors.get(int(i), '?')}" for i in failed
    ]
    keep_media = np.flatnonzero(media.ok)
    if keep_media.size == 0:
        raise DatasetError(
            f"{dataset.name}: none of the {len(dataset.media)} media could be decoded "
            f"(first error: {next(iter(media.errors.values()), '?')})"
        )
    return dataset.without_media(failed.tolist()), keep_media


def _similarities(
    media: ImageEmbeddings | FrameEmbeddings,
    keep_media: np.ndarray,
    text_vecs: np.ndarray,
    poolings: Sequence[str | None],
    *,
    tau: float,
) -> tuple[np.ndarray, dict[str | None, np.ndarray]]:
    """The gallery vectors (M', D) of the media kept and a (T', M') text→media similarity
    matrix per pooling (one, keyed None, for images)."""
    if isinstance(media, FrameEmbeddings):
        from clipsearch.eval.video import pooled_similarity, video_vectors

        kept_frames = media.select(keep_media.tolist())
        gallery = video_vectors(kept_frames)
        return gallery, {p: pooled_similarity(text_vecs, kept_frames, p, tau=tau) for p in poolings}
    gallery = media.vectors[keep_media]
    return gallery, {None: text_vecs @ gallery.T}  # (T', M')


def _rerank_and_score(
    name: str,
    S: np.ndarray,
    text_vecs: np.ndarray,
    gallery: np.ndarray,
    kept: RetrievalDataset,
    raw: RawInputs,
    *,
    ks: Sequence[int],
) -> RetrievalMetrics:
    """Metrics of reranker ``name`` applied to the (T', M') similarities ``S``, each
    direction reranked over its own queries."""
    inputs = {"texts": raw.texts, "media": raw.media, "frame_time": raw.frame_time}
    S_t2m = apply_reranker(name, S, RerankContext(text_vecs, gallery, "text_to_media", **inputs))
    S_m2t = apply_reranker(
        name, S.T, RerankContext(gallery, text_vecs, "media_to_text", **inputs)
    ).T
    return retrieval_metrics(S_t2m, kept.text_to_media, ks=ks, S_media_to_text=S_m2t)


@dataclass(frozen=True)
class RawInputs:
    """The kept captions and media paths (the order of S's rows and columns) and, for
    videos, which frame a (caption, video) pair is judged on: for rerankers that read the
    inputs themselves (a cross-encoder)."""

    texts: list[str]
    media: list[str]
    frame_time: Callable[[int, int], float] | None = None


def _best_frame_time(text_vecs: np.ndarray, frames: FrameEmbeddings) -> Callable[[int, int], float]:
    """(caption, video) -> time of the video's frame nearest the caption's embedding."""

    def when(t: int, m: int) -> float:
        lo, hi = int(frames.offsets[m]), int(frames.offsets[m + 1])
        best = int(np.argmax(frames.frames[lo:hi] @ text_vecs[t]))  # over (F_m,)
        return round(float(frames.times[lo + best]), 3)

    return when


def evaluate_classification(
    dataset: ClassificationDataset,
    encoder: Encoder,
    *,
    templates: Sequence[str],
    cache_dir: str | Path | None,
    ks: Sequence[int] = (1, 5),
    batch_size: int = 64,
    workers: int = 2,
    progress: ProgressCallback | None = None,
) -> ClassificationReport:
    """Zero-shot classification of ``dataset``'s images (CLIP_benchmark protocol).

    The classifier is the prompt-ensemble W of ``clipsearch.search.zeroshot`` (cached per
    classnames, templates and model); logits = 100·img·Wᵀ as in CLIP_benchmark (the scale
    does not change any metric). Undecodable images are dropped and counted.
    Raises DatasetError if no image decodes; UsageError for bad class names/templates.
    """
    import hashlib

    from clipsearch.search.zeroshot import build_classifier, zero_shot_logits

    cache = EmbeddingCache(cache_dir)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    images = embed_images(
        encoder,
        dataset.media,
        cache=cache,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
    )
    seconds["embed_media"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    digest = hashlib.sha256("\0".join([*dataset.classnames, "\1", *templates]).encode()).hexdigest()
    key = cache.key("classifier", prompts=digest, model=model_fingerprint(encoder))
    hit = cache.load(key)
    if hit is not None:
        W = hit["W"]
    else:

        def on_prompts(done: int, total: int) -> None:
            if progress is not None:
                progress("prompts", done, total)

        W = build_classifier(encoder, dataset.classnames, templates, progress=on_prompts)
        cache.save(key, {"W": W})
    seconds["classifier"] = time.perf_counter() - t0

    skipped = dataset.skipped
    failed = np.flatnonzero(~images.ok)
    skipped.undecodable_media = [
        f"{dataset.media[i]}: {images.errors.get(int(i), '?')}" for i in failed
    ]
    if images.ok.sum() == 0:
        raise DatasetError(
            f"{dataset.name}: none of the {len(dataset.media)} images could be decoded"
        )
    logits = zero_shot_logits(images.vectors[images.ok], W)  # (N', C)
    metrics = classification_metrics(logits, dataset.labels[images.ok], ks=ks)
    return ClassificationReport(
        dataset=dataset.name,
        model=_model_name(encoder),
        precision=encoder_precision(encoder),
        runtime=encoder_runtime(encoder),
        classnames=list(dataset.classnames),
        n_templates=len(templates),
        metrics=metrics,
        skipped=skipped,
        empty_classes=list(dataset.empty_classes),
        cache=cache.stats,
        seconds=seconds,
    )
