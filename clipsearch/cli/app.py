"""The `clipsearch` command line (Typer). Thin: parse options, call the library, render.

Exit codes: 0 success; 1 a clipsearch error; 2 bad usage or query; 3 model problem;
4 something named was not found; 130 interrupted (Ctrl-C; the run can be resumed).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer

from clipsearch.cli import render
from clipsearch.errors import ClipsearchError, UsageError

app = typer.Typer(
    name="clipsearch",
    help="Search your own images and videos by text or by example (CLIP).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

LibraryOpt = Annotated[
    Path | None,
    typer.Option(
        "--library",
        "-L",
        help="Library directory (default: $CLIPSEARCH_HOME or ~/.local/share/clipsearch/default).",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model spec: ARCH:TAG (open_clip), hf-hub:org/repo, ARCH@/weights.safetensors, "
        "or a clipsearch checkpoint path (default: the library's model, else ViT-B-32:laion2b_s34b_b79k).",
        show_default=False,
    ),
]
PrecisionOpt = Annotated[
    str,
    typer.Option("--precision", help="Model precision: auto | fp32 | bf16 | fp16."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


class _Globals:
    library: Path | None = None
    model: str | None = None
    precision: str = "auto"


G = _Globals()


@app.callback()
def _root(
    library: LibraryOpt = None,
    model: ModelOpt = None,
    precision: PrecisionOpt = "auto",
) -> None:
    """Options given before the command apply to every command."""
    G.library, G.model, G.precision = library, model, precision


def open_library(library: Path | None, model: str | None, precision: str = "auto", **kw):
    """Build a Library from CLI options (command options override the global ones)."""
    from clipsearch.library import Library

    return Library(
        library or G.library,
        model=model or G.model,
        precision=precision if precision != "auto" else G.precision,
        **kw,
    )


class _StopFlag:
    """First Ctrl-C asks the run to stop after the batch in flight; the second aborts."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __enter__(self) -> _StopFlag:
        self._old = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            if self.event.is_set():
                signal.signal(signal.SIGINT, self._old)
                raise KeyboardInterrupt
            self.event.set()
            render.err.print(
                "[yellow]Stopping after the batch in flight (Ctrl-C again to abort)…[/]"
            )

        signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._old)


@app.command()
def index(
    folders: Annotated[
        list[Path], typer.Argument(help="Folders (or files) to index.", show_default=False)
    ],
    library: LibraryOpt = None,
    model: ModelOpt = None,
    precision: PrecisionOpt = "auto",
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
    max_frames: Annotated[int, typer.Option("--max-frames", help="Cap on frames per video.")] = 512,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per encoder batch.")] = 32,
    workers: Annotated[int, typer.Option("--workers", help="Decode threads.")] = 2,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Retry files that failed before.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Index folders of images and videos (incremental: only new or changed files are encoded)."""
    from clipsearch.ingest import IndexOptions

    if batch_size < 1 or workers < 1 or max_frames < 1:
        raise UsageError("--batch-size, --workers and --max-frames must be at least 1")
    options = IndexOptions(
        include=tuple(include),
        exclude=tuple(exclude),
        hidden=hidden,
        video_sampler=sampler,
        max_frames=max_frames,
        batch_size=batch_size,
        workers=workers,
        retry_failed=retry_failed,
    )
    with (
        open_library(library, model, precision) as lib,
        _StopFlag() as stop,
        render.IndexProgress(quiet=quiet or json_out) as progress,
    ):
        report = lib.index(
            folders, options=options, on_event=progress, should_stop=stop.event.is_set
        )
    if json_out:
        render.print_json(report.to_dict())
    else:
        render.index_summary(report)
    if report.interrupted:
        raise typer.Exit(130)


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
    k: Annotated[int, typer.Option("-k", "--top", help="Number of results.")] = 20,
    offset: Annotated[int, typer.Option("--offset", help="Skip this many results (paging).")] = 0,
    kind: Annotated[str | None, typer.Option("--kind", help="Only image or video results.")] = None,
    where: Annotated[
        list[str],
        typer.Option(
            "--where",
            help='Filter, e.g. "path:/photos/2023/*", "after:2023-01-01", "size>1MB" (repeatable).',
        ),
    ] = [],  # noqa: B006
    pooling: Annotated[
        str, typer.Option("--pooling", help="Video scoring: mean | max | softmax.")
    ] = "mean",
    tau: Annotated[float, typer.Option("--tau", help="Softmax pooling temperature.")] = 0.1,
    exact: Annotated[bool, typer.Option("--exact", help="Force exact search.")] = False,
    tag: Annotated[
        list[str],
        typer.Option("--tag", help="Only items with this tag (repeatable; see `clipsearch tag`)."),
    ] = [],  # noqa: B006
    rerank: Annotated[
        str,
        typer.Option(
            "--rerank",
            help="Hubness reranker: none | is | qbnorm | dbnorm | dbnorm-dynamic (docs/rerank.md).",
        ),
    ] = "none",
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
        str, typer.Option("--compose", help="How --image and --text combine: slerp | sum.")
    ] = "slerp",
    text_weight: Annotated[
        float, typer.Option("--text-weight", help="Weight of --text in a composed query, 0..1.")
    ] = 0.5,
    library: LibraryOpt = None,
    model: ModelOpt = None,
    precision: PrecisionOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Search the library by text, image or video."""
    if kind is not None and kind not in ("image", "video"):
        raise UsageError("--kind must be image or video")
    if text is not None and (len(image) != 1 or query or video):
        raise UsageError("--text composes with exactly one --image (and no query text or --video)")
    with open_library(library, model, precision, create=False) as lib:
        vector = None
        if text is not None:
            from clipsearch.search.compose import composed_query

            vector = composed_query(
                lib.encoder, image[0], text, method=compose, text_weight=text_weight
            )
        hits = lib.search(
            query,
            image=image if vector is None else None,
            video=video,
            vector=vector,
            k=k,
            offset=offset,
            kind=kind,
            where=[*where, *(f"tag:{t}" for t in tag)],
            pooling=pooling,
            tau=tau,
            exact=exact,
            rerank=rerank,
            gap_correction="shift" if gap_correction else None,
        )
    if json_out:
        render.print_json([h.to_dict() for h in hits])
        return
    if not hits:
        render.err.print("no results")
        return
    render.out.print(render.hits_table(hits))


@app.command()
def status(
    library: LibraryOpt = None,
    failures: Annotated[
        int, typer.Option("--failures", help="How many failed files to list.")
    ] = 20,
    json_out: JsonOpt = False,
) -> None:
    """Show the library: model, counts by kind and status, failed files with reasons."""
    with open_library(library, None, create=False) as lib:
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
    json_out: JsonOpt = False,
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


def _mount_subapps() -> None:
    """Sub-commands that live in their own modules (each imports its heavy parts lazily)."""
    import importlib

    for module, name, attr in (("clipsearch.cli.eval_cmd", "eval", "eval_app"),):
        app.add_typer(getattr(importlib.import_module(module), attr), name=name)
    for module, attr, name in (
        ("clipsearch.cli.ann_cmd", "index_info", "index-info"),
        ("clipsearch.cli.ann_cmd", "reindex", "reindex"),
        ("clipsearch.cli.train_cmd", "train", "train"),
        ("clipsearch.cli.serve_cmd", "serve", "serve"),
        ("clipsearch.cli.classify_cmd", "classify", "classify"),
        ("clipsearch.cli.classify_cmd", "tag", "tag"),
        ("clipsearch.cli.classify_cmd", "moderate", "moderate"),
        ("clipsearch.cli.classify_cmd", "dedup", "dedup"),
    ):
        app.command(name=name)(getattr(importlib.import_module(module), attr))


_mount_subapps()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point. Turns ClipsearchError into one red line and an exit code."""
    import warnings

    from PIL import Image

    # Large-but-allowed photos (90–179 MP) are fine; load_image enforces our own limit.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    try:
        rv = app(args=argv, prog_name="clipsearch", standalone_mode=False)
    except ClipsearchError as e:
        render.error_line(str(e))
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except KeyboardInterrupt:
        render.err.print("[yellow]Interrupted.[/]")
        return 130
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return e.exit_code
        if isinstance(e, click.exceptions.Abort):
            return 130
        raise
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
