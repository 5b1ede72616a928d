"""`clipsearch index-info` and `clipsearch reindex`: the nearest-neighbour index."""

from __future__ import annotations

from typing import Annotated

import typer

from clipsearch.cli import options, render


def _info_rows(info) -> list[tuple[str, str]]:
    recall = "—" if info.recall_at_10 is None else f"{info.recall_at_10:.4f}"
    if info.recall_queries:
        recall += f" (on {info.recall_queries} sample queries"
        recall += f", target {info.recall_target})" if info.recall_target else ")"
    params = ", ".join(f"{k}={v}" for k, v in sorted(info.params.items())) or "—"
    return [
        ("backend", f"{info.backend} ({info.factory})"),
        ("parameters", params),
        ("vectors", str(info.vectors)),
        ("memory", _bytes(info.memory_bytes)),
        ("recall@10 vs exact", recall),
        ("built", info.built_at or "—"),
        ("catalog generation", str(info.generation)),
        ("tombstones", str(info.tombstones)),
    ]


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _show(info, json_out: bool, runtime: dict | None = None) -> None:
    """Print the index info; ``runtime`` (`Library.runtime_info`) adds the image encoder
    that indexes the library and its accuracy-gate figures (JSON key ``runtime``)."""
    from dataclasses import asdict

    if json_out:
        data = None if info is None else asdict(info)
        if data is not None and runtime is not None:
            data["runtime"] = runtime
        render.print_json(data)
        return
    if info is None:
        render.err.print("no search index yet: run `clipsearch index` or `clipsearch reindex`")
        return
    from rich.table import Table

    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    for k, v in _info_rows(info):
        table.add_row(k, v)
    if runtime is not None:
        table.add_row("image encoder", render.runtime_line(runtime))
    render.out.print(table)


def index_info(
    library: options.LibraryOpt = None,
    json_out: options.JsonOpt = False,
) -> None:
    """Show the search index (backend, parameters, vectors, memory, measured recall@10) and
    the image encoder indexing uses, with its accuracy-gate figures."""
    with options.open_library(library, create=False) as lib:
        _show(lib.index_info(), json_out, lib.runtime_info())


def reindex(
    ann: Annotated[
        str | None,
        typer.Option(
            "--ann",
            help='Index type: auto | exact | a FAISS factory string ("HNSW32", "IVF4096,Flat", "OPQ64_256,IVF65536_HNSW32,PQ64x8") | milvus[:HNSW|IVF_FLAT|FLAT] (Milvus Lite in the library, or --milvus-uri).',
        ),
    ] = None,
    milvus_uri: Annotated[
        str | None,
        typer.Option(
            "--milvus-uri",
            help="With --ann milvus: a Milvus server or cluster, e.g. http://host:19530 "
            "(token from $MILVUS_TOKEN). Default: Milvus Lite inside the library.",
        ),
    ] = None,
    recall_target: Annotated[
        float | None,
        typer.Option(
            "--recall-target", help="Raise search parameters until recall@10 reaches this."
        ),
    ] = None,
    library: options.LibraryOpt = None,
    json_out: options.JsonOpt = False,
) -> None:
    """Rebuild the search index (optionally with explicit FAISS parameters, remembered)."""
    with (
        options.open_library(library, create=False) as lib,
        render.err.status("building the search index…") as status,
    ):

        def progress(stage: str, fraction: float) -> None:
            status.update(f"building the search index: {stage} {fraction:.0%}")

        info = lib.reindex(
            backend=ann, recall_target=recall_target, milvus_uri=milvus_uri, progress=progress
        )
    _show(info, json_out)
