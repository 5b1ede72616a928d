"""The `clipsearch` command line (Typer). Thin: parse options, call the library, render.

Exit codes: 0 success; 1 a clipsearch error; 2 bad usage or query; 3 model problem;
4 something named was not found; 5 the server cannot listen on its address; 130
interrupted (Ctrl-C; the run can be resumed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clipsearch.cli import (
    ann_cmd,
    blip_cmd,
    classify_cmd,
    eval_cmd,
    exchange_cmd,
    options,
    render,
    serve_cmd,
    train_cmd,
)
from clipsearch.cli.index_run import run_index
from clipsearch.errors import ClipsearchError, UsageError
from clipsearch.ingest.choices import EngineName
from clipsearch.models.runtime import Quantize, Runtime
from clipsearch.search.choices import MAX_K, MAX_MOMENTS

app = typer.Typer(
    name="clipsearch",
    help="Search your own images and videos by text or by example (CLIP).",
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from clipsearch import __version__

        render.out.print(f"clipsearch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    library: options.LibraryOpt = None,
    model: options.ModelOpt = None,
    precision: Annotated[
        options.PrecisionChoice,
        options.precision_option(help="Model precision.", show_default=True),
    ] = "auto",
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            is_eager=True,
            callback=_print_version,
        ),
    ] = False,
) -> None:
    """Options given before the command apply to every command."""
    options.root = options.RootOptions(library, model, precision)


@app.command()
def index(
    folders: Annotated[
        list[Path], typer.Argument(help="Folders (or files) to index.", show_default=False)
    ],
    library: options.LibraryOpt = None,
    model: options.ModelOpt = None,
    precision: options.PrecisionOpt = None,
    include: Annotated[
        list[str], typer.Option("--include", help="Only files matching this glob (repeatable).")
    ] = [],  # noqa: B006
    exclude: Annotated[
        list[str],
        typer.Option("--exclude", help="Skip files/folders matching this glob (repeatable)."),
    ] = [],  # noqa: B006
    hidden: Annotated[
        bool, typer.Option("--hidden", help="Also index hidden files and folders.")
    ] = False,
    sampler: Annotated[
        str,
        typer.Option(
            "--sampler", help="Video frame sampling: auto | uniform:N | fps:R | shots[:K]."
        ),
    ] = "auto",
    max_frames: Annotated[
        int, typer.Option("--max-frames", help="Cap on frames per video.", min=1)
    ] = 512,
    batch_size: options.BatchSizeOpt = 32,
    workers: Annotated[
        int,
        options.workers_option(
            "Decode threads (with --engine ray: model actors, each with its own decode threads)."
        ),
    ] = 2,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Retry files that failed before.")
    ] = False,
    ocr: options.OcrOpt = None,
    ocr_frames: options.OcrFramesOpt = None,
    engine: Annotated[
        EngineName,
        typer.Option(
            "--engine", help="Where files are decoded and encoded: this process, or a Ray cluster."
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="With --engine ray: auto (the cluster this machine belongs to) or "
            "ray://HOST:10001 (default: a local Ray instance for this run).",
        ),
    ] = None,
    gpus_per_worker: Annotated[
        float,
        typer.Option("--gpus-per-worker", help="With --engine ray: GPUs per model actor.", min=0),
    ] = 0.0,
    parquet_shards: Annotated[
        Path | None,
        typer.Option(
            "--parquet-shards",
            help="With --engine ray: workers write results as Parquet shards to this shared "
            "folder, then the catalog ingests them (for very large runs).",
        ),
    ] = None,
    captions: Annotated[
        bool,
        typer.Option(
            "--captions",
            help="Also write a BLIP caption per image and video moment (see `caption`).",
        ),
    ] = False,
    caption_model: options.CaptionModelOpt = None,
    runtime: Annotated[
        Runtime | None,
        typer.Option(
            "--runtime",
            help="Image encoder for indexing (remembered by the library; an accelerated one "
            "is used only if it passes the accuracy gate on your images).",
            show_default=False,
        ),
    ] = None,
    quantize: Annotated[
        Quantize | None,
        typer.Option(
            "--quantize",
            help="int8: quantized image encoder (OpenVINO, calibrated on your images; "
            "remembered by the library).",
            show_default=False,
        ),
    ] = None,
    quiet: options.QuietOpt = False,
    json_out: options.JsonOpt = False,
) -> None:
    """Index folders of images and videos (incremental: only new or changed files are encoded)."""
    from clipsearch.ingest import IndexOptions

    if engine != "ray" and (ray_address or parquet_shards or gpus_per_worker):
        raise UsageError("--ray-address, --gpus-per-worker and --parquet-shards need --engine ray")
    ray = None
    if engine == "ray":
        from clipsearch.ingest.ray_engine import RaySettings

        ray = RaySettings(
            address=ray_address,
            workers=workers,
            gpus_per_worker=gpus_per_worker,
            shards=parquet_shards.expanduser().absolute() if parquet_shards else None,
        )
    index_options = IndexOptions(
        include=tuple(include),
        exclude=tuple(exclude),
        hidden=hidden,
        video_sampler=sampler,
        max_frames=max_frames,
        batch_size=batch_size,
        workers=workers,
        retry_failed=retry_failed,
        ocr=ocr,
        ocr_frames=ocr_frames,
    )
    code = run_index(
        folders,
        library=options.library_path(library),
        model=options.model_spec(model),
        precision=options.precision_of(precision),
        options=index_options,
        quiet=quiet,
        json_out=json_out,
        ray=ray,
        captions=captions,
        library_options={"caption_model": caption_model, "runtime": runtime, "quantize": quantize},
        open_library=options.open_library,
    )
    if code:
        raise typer.Exit(code)


@app.command()
def search(
    query: Annotated[
        str | None,
        typer.Argument(
            help='Text, or a composed query: \'"2:golden retriever" + ./pool.jpg - "blurry"\'.',
            show_default=False,
        ),
    ] = None,
    image: Annotated[
        list[Path], typer.Option("--image", "-i", help="Example image (repeatable).")
    ] = [],  # noqa: B006
    video: Annotated[
        list[Path], typer.Option("--video", help="Example video (repeatable): its pooled vector.")
    ] = [],  # noqa: B006
    k: Annotated[int, options.top_option(max=MAX_K)] = 20,
    offset: Annotated[
        int, typer.Option("--offset", help="Skip this many results (paging).", min=0)
    ] = 0,
    kind: Annotated[
        options.KindChoice | None,
        typer.Option("--kind", help="Only image or video results.", show_default=False),
    ] = None,
    where: options.WhereOpt = [],  # noqa: B006
    pooling: Annotated[
        options.PoolingChoice,
        typer.Option(
            "--pooling",
            help="Video scoring: peak (its best-matching part) | mean | max | softmax "
            "(docs/video.md).",
        ),
    ] = "peak",
    tau: Annotated[
        float | None,
        typer.Option(
            "--tau",
            help="Temperature of peak / softmax pooling (default 0.01 / 0.1).",
            show_default=False,
        ),
    ] = None,
    moments: Annotated[
        int,
        typer.Option(
            "--moments",
            help="Up to N non-overlapping moments per video, best first.",
            min=1,
            max=MAX_MOMENTS,
        ),
    ] = 1,
    exact: Annotated[bool, typer.Option("--exact", help="Force exact search.")] = False,
    tag: Annotated[
        list[str],
        typer.Option("--tag", help="Only items with this tag (repeatable; see `clipsearch tag`)."),
    ] = [],  # noqa: B006
    rerank: Annotated[
        options.RerankChoice,
        typer.Option(
            "--rerank",
            help="Reranker: hubness (docs/rerank.md) or itm, the BLIP cross-encoder over the "
            "top --rerank-k of a text query (docs/blip.md).",
        ),
    ] = "none",
    rerank_k: options.RerankKOpt = 32,
    rerank_score: options.RerankScoreOpt = "fusion",
    itm_model: options.ItmModelOpt = None,
    captions: Annotated[
        bool, typer.Option("--captions", help="Show each hit's stored BLIP caption.")
    ] = False,
    gap_correction: Annotated[
        bool,
        typer.Option(
            "--gap-correction", help="Image→image: correct the modality gap (docs/rerank.md)."
        ),
    ] = False,
    text: Annotated[
        str | None,
        typer.Option(
            "--text",
            help='With one --image: a composed query, e.g. --image shirt.jpg --text "in red".',
        ),
    ] = None,
    compose: Annotated[
        options.ComposeChoice,
        typer.Option("--compose", help="How --image and --text combine."),
    ] = "slerp",
    text_weight: Annotated[
        float,
        typer.Option(
            "--text-weight", help="Weight of --text in a composed query, 0..1.", min=0.0, max=1.0
        ),
    ] = 0.5,
    text_match: options.TextMatchOpt = None,
    phrases: options.PhrasesOpt = None,
    no_server: Annotated[
        bool,
        typer.Option(
            "--no-server",
            help="Search in this process even when `clipsearch serve` runs for the library.",
        ),
    ] = False,
    min_score: options.MinScoreOpt = "auto",
    sort: options.SortOpt = "relevance",
    collapse: options.CollapseOpt = False,
    taken_after: options.TakenAfterOpt = None,
    taken_before: options.TakenBeforeOpt = None,
    library: options.LibraryOpt = None,
    model: options.ModelOpt = None,
    precision: options.PrecisionOpt = None,
    json_out: options.JsonOpt = False,
) -> None:
    """Search the library by text, image or video. When `clipsearch serve` runs for the same
    library, a text query is answered by it (same results, model already loaded)."""
    if text is not None and (len(image) != 1 or query or video):
        raise UsageError("--text composes with exactly one --image (and no query text or --video)")
    search_options = dict(
        k=k,
        offset=offset,
        kind=kind,
        where=[*where, *(f"tag:{t}" for t in tag)],
        pooling=pooling,
        tau=tau,
        exact=exact,
        moments=moments,
        rerank=rerank,
        gap_correction="shift" if gap_correction else None,
        text_match=text_match,
        phrases=phrases,
        min_score=min_score,
        sort=sort,
        collapse=collapse,
        taken_after=taken_after,
        taken_before=taken_before,
    )
    hits = None
    # BLIP re-ranking and captions load models the server may not have: searched here
    blip = rerank in ("itm", "itm-prob") or captions or itm_model is not None
    if query and text is None and not image and not video and not no_server and not blip:
        hits = _warm_search(library, model, precision, query, **search_options)
    if hits is None:
        hits = _cold_search(
            library,
            model,
            precision,
            query,
            image=image,
            video=video,
            text=text,
            compose=compose,
            text_weight=text_weight,
            itm_model=itm_model,
            rerank_k=rerank_k,
            rerank_score=rerank_score,
            with_captions=captions,
            **search_options,
        )
    if json_out:
        render.print_json([h.to_dict() for h in hits])
        return
    render.search_results(hits, dates=sort != "relevance", duplicates=collapse)


def _warm_search(library, model, precision, query, **search_options):
    """The hits of a running server of the library, or None (see `clipsearch.cli.warm`)."""
    from clipsearch.cli import warm
    from clipsearch.store.location import default_library_path

    return warm.search(
        options.library_path(library) or default_library_path(),
        query,
        search_options,
        model=options.model_spec(model),
        precision=options.precision_of(precision),
    )


def _cold_search(
    library,
    model,
    precision,
    query,
    *,
    image,
    video,
    text,
    compose,
    text_weight,
    itm_model=None,
    **search_options,
):
    with options.open_library(library, model, precision, create=False, itm_model=itm_model) as lib:
        vector = None
        if text is not None:
            vector = lib.compose_image_text(image[0], text, method=compose, text_weight=text_weight)
        return lib.search(
            query,
            image=image if vector is None else None,
            video=video,
            vector=vector,
            **search_options,
        )


@app.command()
def status(
    library: options.LibraryOpt = None,
    failures: Annotated[
        int, typer.Option("--failures", help="How many failed files to list.", min=0)
    ] = 20,
    json_out: options.JsonOpt = False,
) -> None:
    """Show the library: model, counts by kind and status, failed files with reasons."""
    with options.open_library(library, create=False) as lib:
        st = lib.status(failures=failures).to_dict()
    if json_out:
        render.print_json(st)
        return
    for table in render.status_tables(st):
        render.out.print(table)


@app.command()
def models(
    filter: Annotated[
        str | None, typer.Argument(help="Only architectures or tags containing this.")
    ] = None,
    json_out: options.JsonOpt = False,
) -> None:
    """List the open_clip models and pretrained tags clipsearch knows."""
    from clipsearch.models import DEFAULT_MODEL, list_models

    rows = [(a, t) for a, t in list_models() if not filter or filter.lower() in f"{a}:{t}".lower()]
    if json_out:
        render.print_json([{"spec": f"{a}:{t}", "arch": a, "tag": t} for a, t in rows])
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} models (default {DEFAULT_MODEL})")
    table.add_column("spec")
    for a, t in rows:
        table.add_row(f"{a}:{t}")
    render.out.print(table)


# Commands that live in their own modules (each imports its heavy parts lazily).
app.add_typer(eval_cmd.eval_app, name="eval")
for _name, _command in (
    ("index-info", ann_cmd.index_info),
    ("reindex", ann_cmd.reindex),
    ("export", exchange_cmd.export),
    ("import", exchange_cmd.import_embeddings),
    ("train", train_cmd.train),
    ("serve", serve_cmd.serve),
    ("classify", classify_cmd.classify),
    ("tag", classify_cmd.tag),
    ("moderate", classify_cmd.moderate),
    ("dedup", classify_cmd.dedup),
    ("caption", blip_cmd.caption),
    ("make-pairs", blip_cmd.make_pairs),
):
    app.command(name=_name)(_command)


# Typer >= 0.26 carries its own copy of click: the usage errors it raises are that copy's
# classes, not the `click` package's. typer.BadParameter is one of them in every version.
_ClickException: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)


def usage_error_line(e: Exception) -> str:
    """A click usage error as one line: the message, the commands when a command name was
    missing or wrong, and where to find help."""
    message = e.format_message() if hasattr(e, "format_message") else str(e)
    ctx = getattr(e, "ctx", None)
    if ctx is None:
        return message
    command = ctx.command
    about_the_command = not hasattr(e, "param") and not hasattr(e, "option_name")
    if hasattr(command, "list_commands") and about_the_command:  # missing or unknown
        names = [
            n
            for n in command.list_commands(ctx)
            if not getattr(command.get_command(ctx, n), "hidden", False)
        ]
        message += f" Commands: {', '.join(names)}."
    return f"{message} (see '{ctx.command_path} --help')"


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point and the CLI's one error boundary: a ClipsearchError
    becomes one red line and its exit code; a usage error (unknown command or option, a
    bad or missing value) one line and exit code 2."""
    render.quiet_large_image_warning()
    try:
        rv = app(args=argv, prog_name="clipsearch", standalone_mode=False)
    except ClipsearchError as e:
        render.error_line(str(e))
        return e.exit_code
    except _ClickException as e:
        render.error_line(usage_error_line(e))
        return int(getattr(e, "exit_code", 2))
    except typer.Exit as e:
        return e.exit_code
    except (KeyboardInterrupt, typer.Abort):
        render.err.print("[yellow]Interrupted.[/]")
        return 130
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
