"""`clipsearch export` and `clipsearch import`: embeddings in clip-retrieval's layout or
one Parquet table (formats: clipsearch.store.exchange)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clipsearch.cli import options, render
from clipsearch.store.choices import ExportDtype, ExportFormat


def _progress(label: str):
    """A Rich progress bar fed (done, total) rows; a context manager giving the callback."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), console=render.err, transient=True
    )

    class _Bar:
        def __enter__(self):
            bar.__enter__()
            task = bar.add_task(label, total=None)

            def update(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            return update

        def __exit__(self, *exc: object) -> None:
            bar.__exit__(*exc)

    return _Bar()


def export(
    out: Annotated[
        Path,
        typer.Argument(
            help="Output: a folder (clip-retrieval) or a .parquet file (parquet).",
            show_default=False,
        ),
    ],
    fmt: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="clip-retrieval: img_emb/img_emb_N.npy + metadata/metadata_N.parquet; "
            "parquet: one table with an embedding column.",
        ),
    ] = "clip-retrieval",
    dtype: Annotated[ExportDtype, typer.Option("--dtype", help="Embedding element type.")] = (
        "float16"
    ),
    items_only: Annotated[
        bool,
        typer.Option(
            "--items-only", help="One row per item (no video frame rows; videos by meanP vector)."
        ),
    ] = False,
    library: options.LibraryOpt = None,
    json_out: options.JsonOpt = False,
) -> None:
    """Export the library's embeddings (for autofaiss, clip-retrieval's back end, or Parquet tools)."""
    with (
        options.open_library(library, create=False) as lib,
        _progress("exporting") as progress,
    ):
        report = lib.export(out, fmt=fmt, dtype=dtype, items_only=items_only, progress=progress)
    if json_out:
        render.print_json(report.to_dict())
        return
    render.err.print(
        f"exported {report.vectors} vectors of {report.items} items ({report.dtype}) to {report.path}"
    )


def import_embeddings(
    source: Annotated[
        Path,
        typer.Argument(
            help="A clip-retrieval export folder (img_emb/, metadata/) or a .parquet export.",
            show_default=False,
        ),
    ],
    library: options.LibraryOpt = None,
    model: Annotated[
        str | None,
        options.model_option(
            "The model that made the embeddings (needed when the source does not record it)."
        ),
    ] = None,
    json_out: options.JsonOpt = False,
) -> None:
    """Import embeddings exported by clipsearch or made by clip-retrieval into the library."""
    with options.open_library(library, model) as lib, _progress("importing") as progress:
        report = lib.import_embeddings(source, progress=progress)
    if json_out:
        render.print_json(report.to_dict())
        return
    render.err.print(
        f"imported {report.vectors} vectors of {report.items} items from {report.path}"
    )
    if report.normalised:
        render.err.print(f"{report.normalised} vectors were not unit-length and were normalised")
    for path, why in report.skipped[:20]:
        render.err.print(f"[yellow]skipped[/] {path or '(no path)'}: {why}")
    if len(report.skipped) > 20:
        render.err.print(f"… and {len(report.skipped) - 20} more skipped rows")
