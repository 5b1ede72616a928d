"""`clipsearch eval`: retrieval and zero-shot benchmarks, and the synthetic benchmark maker.

Thin: parse options, call ``clipsearch.eval``, render with Rich. A ClipsearchError becomes
one red line and exit code ``err.exit_code``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from clipsearch.errors import ClipsearchError, UsageError

if TYPE_CHECKING:
    from clipsearch.eval.embed import CacheStats
    from clipsearch.eval.runner import RetrievalReport
    from clipsearch.models.base import Encoder

eval_app = typer.Typer(
    help="Measure retrieval and zero-shot quality with the field's standard protocols.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model spec (default: the global --model, else ViT-B-32:laion2b_s34b_b79k).",
    ),
]
PrecisionOpt = Annotated[str | None, typer.Option("--precision", help="auto | fp32 | bf16 | fp16.")]
LibraryOpt = Annotated[
    Path | None, typer.Option("--library", "-L", help="Library whose eval-cache folder to use.")
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
BatchOpt = Annotated[
    int, typer.Option("--batch-size", help="Images (or frames) per encoder batch.")
]
WorkersOpt = Annotated[int, typer.Option("--workers", help="Decode threads.")]
SplitOpt = Annotated[
    str, typer.Option("--split", help="Dataset split (Karpathy JSON, webdataset).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the report as JSON.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]


def _fail(e: ClipsearchError) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {e}", markup=True, highlight=False)
    return typer.Exit(e.exit_code)


def _global(name: str) -> object:
    """A global option of the root `clipsearch` command (None when run on its own)."""
    try:
        from clipsearch.cli import app as root
    except ImportError:  # pragma: no cover
        return None
    return getattr(getattr(root, "G", None), name, None)


def _load_encoder(model: str | None, precision: str | None) -> Encoder:
    from clipsearch.models import load_encoder
    from clipsearch.models.spec import DEFAULT_MODEL

    spec = model or _global("model") or DEFAULT_MODEL
    return load_encoder(spec, precision=precision or _global("precision") or "auto")


def _cache_dir(cache_dir: Path | None, library: Path | None, no_cache: bool) -> Path | None:
    from clipsearch.eval.embed import default_cache_dir

    if no_cache:
        return None
    return cache_dir or default_cache_dir(library or _global("library"))


def _split_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


@contextlib.contextmanager
def _progress(quiet: bool) -> Iterator:
    """A Rich progress bar fed by the library's (stage, done, total) callback."""
    if quiet:
        yield None
        return
    bar = Progress(
        TextColumn("{task.description:>8}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=_err,
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


def _notes(skipped: dict, ties: list[str], cache: CacheStats) -> None:
    lost = {k: v for k, v in skipped.items() if isinstance(v, int) and v}
    if lost:
        _err.print(
            "[yellow]skipped:[/] "
            + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in lost.items())
        )
        for k in ("missing_media_examples", "undecodable_media_examples"):
            for example in skipped.get(k, [])[:3]:
                _err.print(f"  [dim]{example}[/]")
    for t in ties:
        _err.print(f"[yellow]ties:[/] {t}")
    _err.print(f"[dim]embedding cache: {cache.hits} reused, {cache.misses} computed[/]")


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
        str, typer.Option("--format", help="auto | karpathy | pairs | msrvtt | wds.")
    ] = "auto",
    split: SplitOpt = "test",
    media_column: Annotated[
        str | None, typer.Option("--media-column", help="Pairs: the media column.")
    ] = None,
    caption_column: Annotated[
        str | None, typer.Option("--caption-column", help="Pairs: the caption column.")
    ] = None,
    pooling: Annotated[
        str, typer.Option("--pooling", help="Videos: poolings to compare, e.g. mean,softmax,max.")
    ] = "mean",
    tau: Annotated[float, typer.Option("--tau", help="Softmax pooling temperature.")] = 0.1,
    sampler: Annotated[
        str, typer.Option("--sampler", help="Videos: frame sampler (CLIP4Clip: uniform:12).")
    ] = "uniform:12",
    rerank: Annotated[
        str, typer.Option("--rerank", help="Rerankers to compare, e.g. none,qbnorm.")
    ] = "none",
    model: ModelOpt = None,
    precision: PrecisionOpt = None,
    library: LibraryOpt = None,
    cache_dir: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    report: ReportOpt = None,
    no_plots: NoPlotsOpt = False,
    batch_size: BatchOpt = 64,
    workers: WorkersOpt = 2,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Text↔image or text↔video retrieval: R@1/5/10, MdR, MnR in both directions."""
    try:
        from clipsearch.eval.datasets import load_retrieval
        from clipsearch.eval.runner import evaluate_retrieval
        from clipsearch.eval.video import parse_poolings

        if images is not None and videos is not None:
            raise UsageError("give --images or --videos, not both")
        if fmt not in ("auto", "karpathy", "pairs", "msrvtt", "wds"):
            raise UsageError(f"unknown --format {fmt!r}: auto, karpathy, pairs, msrvtt or wds")
        if batch_size < 1 or workers < 1:
            raise UsageError("--batch-size and --workers must be at least 1")
        kind = "video" if videos is not None else "image"
        poolings = parse_poolings(pooling)  # ignored for image datasets
        reranks = _split_list(rerank) or ["none"]
        cache = _cache_dir(cache_dir, library, no_cache)
        dataset = load_retrieval(
            captions,
            videos if videos is not None else images,
            kind=kind,
            fmt=fmt,  # type: ignore[arg-type]
            split=split,
            media_column=media_column,
            caption_column=caption_column,
            extract_dir=(cache / "wds-extract" / captions.name / split) if cache else None,
        )
        encoder = _load_encoder(model, precision)
        with _progress(quiet or json_out) as on_progress:
            result = evaluate_retrieval(
                dataset,
                encoder,
                cache_dir=cache,
                poolings=poolings,
                reranks=reranks,
                tau=tau,
                sampler=sampler,
                batch_size=batch_size,
                workers=workers,
                progress=on_progress,
            )
        written = []
        if report is not None:
            from clipsearch.eval.report import write_report

            written = write_report(result, report, plots=not no_plots)
    except ClipsearchError as e:
        raise _fail(e) from None
    if json_out:
        import json

        _out.print_json(json.dumps(result.to_dict()))
        return
    _out.print(_retrieval_table(result))
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
    for path in written:
        _err.print(f"wrote {path}")


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
            help="imagenet | simple | default | a file with one template per line ({c} = class) (default: the dataset's, else imagenet).",
        ),
    ] = None,
    model: ModelOpt = None,
    precision: PrecisionOpt = None,
    library: LibraryOpt = None,
    cache_dir: CacheOpt = None,
    no_cache: NoCacheOpt = False,
    report: ReportOpt = None,
    no_plots: NoPlotsOpt = False,
    batch_size: BatchOpt = 64,
    workers: WorkersOpt = 2,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Zero-shot classification: top-1/top-5 accuracy and mean per-class recall."""
    try:
        from clipsearch.eval.datasets import (
            ClassificationDataset,
            load_class_folders,
            load_webdataset,
        )
        from clipsearch.eval.runner import evaluate_classification
        from clipsearch.search.templates import resolve_templates

        if (folder is None) == (wds is None):
            raise UsageError("give exactly one of --folder or --wds")
        if batch_size < 1 or workers < 1:
            raise UsageError("--batch-size and --workers must be at least 1")
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
        encoder = _load_encoder(model, precision)
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
    except ClipsearchError as e:
        raise _fail(e) from None
    if json_out:
        import json

        _out.print_json(json.dumps(result.to_dict()))
        return
    m = result.metrics
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
    _out.print(table)
    ties = (
        [f"{m.n_tied} of {m.n} images tie between the true class and another"] if m.n_tied else []
    )
    if result.empty_classes:
        _err.print(f"[yellow]classes with no image:[/] {', '.join(result.empty_classes)}")
    _notes(result.skipped.to_dict(), ties, result.cache)
    for path in written:
        _err.print(f"wrote {path}")


@eval_app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the benchmark into.")],
    images: Annotated[int, typer.Option("--images", help="Number of images (0: none).")] = 60,
    videos: Annotated[int, typer.Option("--videos", help="Number of videos (0: none).")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same files).")] = 0,
    image_captions: Annotated[
        str, typer.Option("--image-captions", help="full | background.")
    ] = "full",
    video_captions: Annotated[str, typer.Option("--video-captions", help="scene | all.")] = "scene",
) -> None:
    """Write a deterministic synthetic benchmark (shapes on colours; coloured-scene videos)."""
    try:
        from clipsearch.eval.synthetic import make_image_set, make_video_set

        if image_captions not in ("full", "background") or video_captions not in ("scene", "all"):
            raise UsageError("--image-captions is full|background, --video-captions is scene|all")
        if images < 0 or videos < 0:
            raise UsageError("--images and --videos must be ≥ 0")
        if images:
            make_image_set(out, n=images, seed=seed, caption_style=image_captions)  # type: ignore[arg-type]
            _out.print(
                f"{images} images: clipsearch eval retrieval --captions {out / 'images.csv'}"
            )
        if videos:
            make_video_set(out, n=videos, seed=seed, caption_style=video_captions)  # type: ignore[arg-type]
            _out.print(
                f"{videos} videos: clipsearch eval retrieval --videos {out / 'videos'} "
                f"--captions {out / 'videos.csv'} --pooling mean,softmax,max"
            )
    except ClipsearchError as e:
        raise _fail(e) from None
