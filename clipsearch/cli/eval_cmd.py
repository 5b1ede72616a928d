"""`clipsearch eval`: retrieval and zero-shot benchmarks, and the synthetic benchmark maker.

Thin: parse options, call ``clipsearch.eval``, render with Rich.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from clipsearch.cli import options, render
from clipsearch.cli.render import escape
from clipsearch.errors import UsageError
from clipsearch.eval.choices import (
    ITM_RERANKERS,
    DatasetFormat,
    ImageCaptionStyle,
    MomentFormat,
    VideoCaptionStyle,
)
from clipsearch.search.choices import POOLINGS, RERANK_METHODS
from clipsearch.search.templates import TEMPLATE_SETS

EVAL_RERANKERS = (*RERANK_METHODS, *ITM_RERANKERS)  # --rerank of `eval retrieval`

if TYPE_CHECKING:
    from rich.table import Table

    from clipsearch.eval.embed import CacheStats
    from clipsearch.eval.runner import RetrievalReport

eval_app = typer.Typer(
    help="Measure retrieval and zero-shot quality with the field's standard protocols.",
    pretty_exceptions_enable=False,
)

ModelOpt = Annotated[
    str | None,
    options.model_option(
        help="Model spec (default: the --model given before the command, else "
        "ViT-B-32:laion2b_s34b_b79k)."
    ),
]
EvalPrecisionOpt = Annotated[
    options.PrecisionChoice | None,
    options.precision_option(
        help="Model precision (default fp32, for reference numbers; auto, bf16 or fp16 "
        "trade accuracy for speed)."
    ),
]
LibraryOpt = Annotated[
    Path | None, options.library_option(help="Library whose eval-cache folder to use.")
]
CacheOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Embedding cache (default: <library>/eval-cache or ~/.cache/clipsearch/eval-cache).",
    ),
]
NoCacheOpt = Annotated[
    bool, typer.Option("--no-cache", help="Do not read or write cached embeddings.")
]
ReportOpt = Annotated[
    Path | None,
    typer.Option("--report", help="Write report.json, report.md and plots into this folder."),
]
NoPlotsOpt = Annotated[
    bool, typer.Option("--no-plots", help="With --report: skip the matplotlib plots.")
]
BatchOpt = Annotated[int, options.batch_size_option(help="Images (or frames) per encoder batch.")]
SplitOpt = Annotated[
    str, typer.Option("--split", help="Dataset split (Karpathy JSON, webdataset).")
]
JsonOpt = Annotated[bool, options.json_option(help="Print the report as JSON.")]
QuietOpt = Annotated[bool, options.quiet_option(help="No progress bar.")]


def eval_precision(precision: str | None) -> str:
    """The precision an evaluation runs in: the command's ``--precision``, else fp32.

    Evaluations produce reference numbers (bf16 moved image->text R@1 from 0.0 to 1.7 on
    a random-weight model), so the root ``--precision`` only counts when it names a
    precision; its default "auto" (bf16 where the CPU has it) is not a request."""
    if precision is not None:
        return precision
    return "fp32" if options.root.precision == "auto" else options.root.precision


def _cache_dir(cache_dir: Path | None, library: Path | None, no_cache: bool) -> Path | None:
    from clipsearch.eval.embed import default_cache_dir

    if no_cache:
        return None
    return cache_dir or default_cache_dir(options.library_path(library))


@contextlib.contextmanager
def _progress(quiet: bool) -> Iterator:
    """A Rich progress bar fed by the library's (stage, done, total) callback."""
    if quiet:
        yield None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("{task.description:>8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=render.err,
        transient=True,
    )
    tasks: dict[str, int] = {}

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    with bar:
        yield on_progress


def _retrieval_table(report: RetrievalReport) -> Table:
    ks = sorted(report.runs[0].metrics.text_to_media.recall)
    from rich.table import Table

    table = Table(
        title=f"{report.dataset}: {report.n_texts} captions, {report.n_media} {report.kind}s"
    )
    if report.kind == "video":
        table.add_column("pooling")
    table.add_column("rerank")
    for label in (f"t→{report.kind[0]}", f"{report.kind[0]}→t"):
        for k in ks:
            table.add_column(f"{label} R@{k}", justify="right")
        table.add_column(f"{label} MdR", justify="right")  # MnR: in --json and --report
    best = report.best().label
    for run in report.runs:
        row = [run.pooling] if report.kind == "video" else []
        row.append(run.rerank)
        for m in (run.metrics.text_to_media, run.metrics.media_to_text):
            row += [f"{m.recall[k]:.1f}" for k in ks] + [f"{m.median_rank:g}"]
        table.add_row(*row, style="bold" if run.label == best and len(report.runs) > 1 else None)
    return table


def _changes_vs_plain(report: RetrievalReport) -> list[str]:
    """One line per reranked run: its R@K minus the plain run's (same pooling)."""
    plain = {r.pooling: r for r in report.runs if r.rerank == "none"}
    lines = []
    for run in report.runs:
        base = plain.get(run.pooling)
        if base is None or run is base:
            continue
        parts = []
        for name, a, b in (
            (f"t→{report.kind[0]}", run.metrics.text_to_media, base.metrics.text_to_media),
            (f"{report.kind[0]}→t", run.metrics.media_to_text, base.metrics.media_to_text),
        ):
            parts.append(
                f"{name} "
                + ", ".join(f"R@{k} {a.recall[k] - b.recall[k]:+.1f}" for k in sorted(a.recall))
            )
        lines.append(f"{run.label} vs {base.label}: " + "; ".join(parts))
    return lines


def _notes(skipped: dict, ties: list[str], cache: CacheStats) -> None:
    lost = {k: v for k, v in skipped.items() if isinstance(v, int) and v}
    if lost:
        render.err.print(
            "[yellow]skipped:[/] "
            + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in lost.items())
        )
        for k in ("missing_media_examples", "undecodable_media_examples"):
            for example in skipped.get(k, [])[:3]:
                render.err.print(f"  [dim]{escape(str(example))}[/]")
    for t in ties:
        render.err.print(f"[yellow]ties:[/] {escape(t)}")
    render.err.print(f"[dim]embedding cache: {cache.hits} reused, {cache.misses} computed[/]")


@eval_app.command()
def retrieval(
    captions: Annotated[
        Path,
        typer.Option(
            "--captions",
            help="Annotations: Karpathy JSON, CSV/JSONL pairs, MSR-VTT csv, or a webdataset folder.",
        ),
    ],
    images: Annotated[
        Path | None, typer.Option("--images", help="Folder the image paths are relative to.")
    ] = None,
    videos: Annotated[
        Path | None, typer.Option("--videos", help="Folder holding the videos.")
    ] = None,
    fmt: Annotated[
        DatasetFormat, typer.Option("--format", help="Annotation format (auto: guessed).")
    ] = "auto",
    split: SplitOpt = "test",
    media_column: Annotated[
        str | None, typer.Option("--media-column", help="Pairs: the media column.")
    ] = None,
    caption_column: Annotated[
        str | None, typer.Option("--caption-column", help="Pairs: the caption column.")
    ] = None,
    pooling: Annotated[
        list[str],
        typer.Option(
            "--pooling",
            help="Videos: poolings to compare, comma-separated or repeated.",
            parser=options.choice_list(POOLINGS),
            metavar=options.choice_list_metavar(POOLINGS),
        ),
    ] = ["mean"],  # noqa: B006
    tau: options.TauOpt = 0.1,
    sampler: Annotated[
        str, typer.Option("--sampler", help="Videos: frame sampler (CLIP4Clip: uniform:12).")
    ] = "uniform:12",
    rerank: Annotated[
        list[str],
        typer.Option(
            "--rerank",
            help="Rerankers to compare, comma-separated or repeated (docs/rerank.md); itm / "
            "itm-prob: the BLIP cross-encoder over each query's top --rerank-k, fused with the "
            "CLIP score / alone (docs/blip.md). A plain run is added to compare against.",
            parser=options.choice_list(EVAL_RERANKERS),
            metavar=options.choice_list_metavar(EVAL_RERANKERS),
        ),
    ] = ["none"],  # noqa: B006
    rerank_k: Annotated[
        int,
        typer.Option("--rerank-k", help="--rerank itm: candidates re-scored per query.", min=1),
    ] = 32,
    itm_model: options.ItmModelOpt = None,
    model: ModelOpt = None,
    precision: EvalPrecisionOpt = None,
    library: LibraryOpt = None,
    cache_dir: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    report: ReportOpt = None,
    no_plots: NoPlotsOpt = False,
    batch_size: BatchOpt = 64,
    workers: options.WorkersOpt = 2,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Text↔image or text↔video retrieval: R@1/5/10, MdR, MnR in both directions."""
    from clipsearch.eval.datasets import load_retrieval
    from clipsearch.eval.runner import evaluate_retrieval

    if images is not None and videos is not None:
        raise UsageError("give --images or --videos, not both")
    kind = "video" if videos is not None else "image"
    cache = _cache_dir(cache_dir, library, no_cache)
    dataset = load_retrieval(
        captions,
        videos if videos is not None else images,
        kind=kind,
        fmt=fmt,
        split=split,
        media_column=media_column,
        caption_column=caption_column,
        extract_dir=(cache / "wds-extract" / captions.name / split) if cache else None,
    )
    reranks = options.flatten(rerank)
    itm_settings = ""
    if any(r in ITM_RERANKERS for r in reranks):
        from clipsearch.eval.itm import register_itm_rerankers
        from clipsearch.models.blip import load_matcher

        if "none" not in reranks:  # the plain run, for the change in R@K
            reranks.insert(0, "none")
        matcher = load_matcher(itm_model, precision=eval_precision(precision))
        register_itm_rerankers(matcher, k=rerank_k)
        itm_settings = f"BLIP ITM {matcher.name} ({matcher.precision}), top {rerank_k}"
    encoder = options.load_encoder(model, eval_precision(precision))
    with _progress(quiet or json_out) as on_progress:
        result = evaluate_retrieval(
            dataset,
            encoder,
            cache_dir=cache,
            poolings=options.flatten(pooling),  # ignored for image datasets
            reranks=reranks,
            tau=tau,
            sampler=sampler,
            batch_size=batch_size,
            workers=workers,
            progress=on_progress,
        )
    result.rerankers = {r: itm_settings for r in reranks if r in ITM_RERANKERS}
    written = []
    if report is not None:
        from clipsearch.eval.report import write_report

        written = write_report(result, report, plots=not no_plots)
    if json_out:
        render.print_json(result.to_dict())
        return
    render.out.print(_retrieval_table(result))
    ties = []
    for run in result.runs:
        for name, m in (
            ("text→media", run.metrics.text_to_media),
            ("media→text", run.metrics.media_to_text),
        ):
            if m.n_tied:
                k1 = min(m.expected_recall)
                ties.append(
                    f"{run.label} {name}: {m.n_tied} of {m.n} ground truths tie with another "
                    f"candidate (counted as winning); with a random tie order R@{k1} would be "
                    f"{m.expected_recall[k1]:.1f}"
                )
    _notes(result.skipped.to_dict(), ties, result.cache)
    for line in _changes_vs_plain(result):
        render.out.print(line)
    for path in written:
        render.err.print(f"wrote {escape(str(path))}")


@eval_app.command()
def classify(
    folder: Annotated[
        Path | None, typer.Option("--folder", help="One sub-folder of images per class.")
    ] = None,
    wds: Annotated[
        Path | None, typer.Option("--wds", help="A CLIP_benchmark webdataset folder.")
    ] = None,
    split: SplitOpt = "test",
    templates: Annotated[
        str | None,
        typer.Option(
            "--templates",
            help=f"{' | '.join(TEMPLATE_SETS)} | a file with one template per line "
            "({c} or {} = the class) (default: the dataset's, else imagenet).",
        ),
    ] = None,
    model: ModelOpt = None,
    precision: EvalPrecisionOpt = None,
    library: LibraryOpt = None,
    cache_dir: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    report: ReportOpt = None,
    no_plots: NoPlotsOpt = False,
    batch_size: BatchOpt = 64,
    workers: options.WorkersOpt = 2,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Zero-shot classification: top-1/top-5 accuracy and mean per-class recall."""
    from clipsearch.eval.datasets import (
        ClassificationDataset,
        load_class_folders,
        load_webdataset,
    )
    from clipsearch.eval.runner import evaluate_classification
    from clipsearch.search.templates import resolve_templates

    if (folder is None) == (wds is None):
        raise UsageError("give exactly one of --folder or --wds")
    cache = _cache_dir(cache_dir, library, no_cache)
    if folder is not None:
        dataset = load_class_folders(folder)
    else:
        assert wds is not None
        loaded = load_webdataset(
            wds,
            split=split,
            extract_dir=(cache / "wds-extract" / wds.name / split) if cache else None,
        )
        if not isinstance(loaded, ClassificationDataset):
            raise UsageError(
                f"{wds} is a retrieval webdataset; use `clipsearch eval retrieval --captions {wds}`"
            )
        dataset = loaded
    tpl = (
        resolve_templates(templates)
        if templates
        else (dataset.templates or resolve_templates("imagenet"))
    )
    encoder = options.load_encoder(model, eval_precision(precision))
    with _progress(quiet or json_out) as on_progress:
        result = evaluate_classification(
            dataset,
            encoder,
            templates=tpl,
            cache_dir=cache,
            batch_size=batch_size,
            workers=workers,
            progress=on_progress,
        )
    written = []
    if report is not None:
        from clipsearch.eval.report import write_report

        written = write_report(result, report, plots=not no_plots)
    if json_out:
        render.print_json(result.to_dict())
        return
    m = result.metrics
    from rich.table import Table

    table = Table(
        title=f"{result.dataset}: {m.n} images, {len(result.classnames)} classes, {result.n_templates} templates"
    )
    for k in m.top_k:
        table.add_column(f"top-{k}", justify="right")
    table.add_column("mean per-class recall", justify="right")
    table.add_row(
        *[("–" if v is None else f"{v:.1f}") for v in m.top_k.values()],
        f"{m.mean_per_class_recall:.1f}",
    )
    render.out.print(table)
    ties = (
        [f"{m.n_tied} of {m.n} images tie between the true class and another"] if m.n_tied else []
    )
    if result.empty_classes:
        render.err.print(
            f"[yellow]classes with no image:[/] {escape(', '.join(result.empty_classes))}"
        )
    _notes(result.skipped.to_dict(), ties, result.cache)
    for path in written:
        render.err.print(f"wrote {escape(str(path))}")


@eval_app.command()
def moments(
    annotations: Annotated[
        Path,
        typer.Argument(
            help="Charades-STA lines (VIDEO START END##sentence), QVHighlights JSONL, or a "
            "TSV of picture queries (video, start, end, image).",
            show_default=False,
        ),
    ],
    videos: Annotated[Path, typer.Option("--videos", help="Folder holding the videos.")],
    fmt: Annotated[
        MomentFormat, typer.Option("--format", help="Annotation format (auto: by suffix).")
    ] = "auto",
    pooling: Annotated[
        list[str],
        typer.Option(
            "--pooling",
            help="Video scorings to compare, comma-separated or repeated; the first one's top "
            "video is what the corpus baselines use.",
            parser=options.choice_list(POOLINGS),
            metavar=options.choice_list_metavar(POOLINGS),
        ),
    ] = ["peak,mean,max,softmax"],  # noqa: B006
    sampler: Annotated[
        str, typer.Option("--sampler", help="Frame sampler for indexing (as `index`).")
    ] = "auto",
    model: ModelOpt = None,
    precision: EvalPrecisionOpt = None,
    library: LibraryOpt = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            help="Where the videos are indexed (one library per videos folder, model and "
            "sampler; re-runs reuse it) (default: <library>/eval-cache or "
            "~/.cache/clipsearch/eval-cache).",
        ),
    ] = None,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write report.json and report.md here.")
    ] = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Moment retrieval: R1@IoU 0.3/0.5/0.7 and mIoU, with whole-video and best-frame baselines."""
    from clipsearch.eval.moments import evaluate_moments, load_moments, moments_markdown
    from clipsearch.library import Library
    from clipsearch.models import DEFAULT_MODEL

    dataset = load_moments(annotations, videos, fmt=fmt)
    spec = options.model_spec(model) or DEFAULT_MODEL
    precision = eval_precision(precision)
    where = _moments_library(videos, f"{spec}|{precision}|{sampler}", cache_dir, library)
    with (
        Library(where, model=spec, precision=precision) as lib,
        _progress(quiet or json_out) as on_progress,
    ):
        result = evaluate_moments(
            lib,
            dataset,
            poolings=options.flatten(pooling),
            sampler=sampler,
            progress=on_progress,
        )
    written = []
    if report is not None:
        import json

        from clipsearch.atomic import atomic_write_text

        report.mkdir(parents=True, exist_ok=True)
        atomic_write_text(report / "report.json", json.dumps(result.to_dict(), indent=2))
        atomic_write_text(report / "report.md", moments_markdown(result))
        written = [report / "report.json", report / "report.md"]
    if json_out:
        render.print_json(result.to_dict())
        return
    render.out.print(_moments_table(result))
    skipped = result.skipped.to_dict()
    lost = {k: v for k, v in skipped.items() if isinstance(v, int) and v}
    if lost:
        render.err.print(
            "[yellow]skipped:[/] "
            + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in lost.items())
        )
        for k in ("missing_videos_examples", "missing_images_examples"):
            for example in skipped.get(k, [])[:3]:
                render.err.print(f"  [dim]{escape(str(example))}[/]")
    for path in written:
        render.err.print(f"wrote {escape(str(path))}")


def _moments_library(
    videos: Path, setting: str, cache_dir: Path | None, library: Path | None
) -> Path:
    """The library a moment evaluation indexes into: one per videos folder and ``setting``
    (model, precision, sampler), under the eval cache."""
    import hashlib

    from clipsearch.eval.embed import default_cache_dir

    key = f"{videos.resolve()}|{setting}".encode()
    root = cache_dir or default_cache_dir(options.library_path(library))
    return root / "moments" / hashlib.sha256(key).hexdigest()[:16]


def _moments_table(report) -> Table:
    from rich.table import Table

    from clipsearch.eval.moments import IOU_THRESHOLDS

    table = Table(title=f"{report.dataset}: {report.n_queries} queries, {report.n_videos} videos")
    for col in ("setting", "scoring", "right video first"):
        table.add_column(col)
    for m in IOU_THRESHOLDS:
        table.add_column(f"R1@{m:g}", justify="right")
    table.add_column("mIoU", justify="right")
    for run in report.runs:
        m = run.metrics
        video = f"{m.video_r1:.1f}" if m.video_r1 is not None else "(given)"
        table.add_row(
            run.setting,
            run.label,
            video,
            *(f"{m.recall[t]:.1f}" for t in IOU_THRESHOLDS),
            f"{m.miou:.3f}",
        )
    return table


@eval_app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the benchmark into.")],
    images: Annotated[
        int, typer.Option("--images", help="Number of images (0: none).", min=0)
    ] = 60,
    videos: Annotated[
        int, typer.Option("--videos", help="Number of videos (0: none).", min=0)
    ] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same files).")] = 0,
    image_captions: Annotated[
        ImageCaptionStyle,
        typer.Option("--image-captions", help="Image captions: the whole scene or its background."),
    ] = "full",
    video_captions: Annotated[
        VideoCaptionStyle,
        typer.Option("--video-captions", help="Video captions: one per scene, or all scenes."),
    ] = "scene",
) -> None:
    """Write a deterministic synthetic benchmark (shapes on colours; coloured-scene videos)."""
    from clipsearch.eval.synthetic import make_image_set, make_video_set

    if images:
        make_image_set(out, n=images, seed=seed, caption_style=image_captions)
        render.out.print(
            f"{images} images: clipsearch eval retrieval --captions {out / 'images.csv'}"
        )
    if videos:
        make_video_set(out, n=videos, seed=seed, caption_style=video_captions)
        render.out.print(
            f"{videos} videos: clipsearch eval retrieval --videos {out / 'videos'} "
            f"--captions {out / 'videos.csv'} --pooling mean,softmax,max"
        )
