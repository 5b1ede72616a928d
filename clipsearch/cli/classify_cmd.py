"""`clipsearch classify | tag | moderate | dedup`: zero-shot labels, tags, policy flags and
duplicate groups. Thin: parse options, call clipsearch.search.{classify,moderation,dedup},
render with Rich.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clipsearch.cli import options, render
from clipsearch.search.templates import TEMPLATE_SETS

LabelsOpt = Annotated[
    str,
    typer.Option(
        "--labels",
        "-l",
        help='Labels: "cat,dog,bird" or a file with one label per line.',
        show_default=False,
    ),
]
TemplatesOpt = Annotated[
    str,
    typer.Option(
        "--templates",
        "-t",
        help=f"Prompt templates: {' | '.join(TEMPLATE_SETS)} | a file with one template per "
        "line ({c} or {} = the label).",
    ),
]


def _notes(notes: list[str] | tuple[str, ...]) -> None:
    for note in notes:
        render.warning_line(note)


def classify(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Images, videos or folders; none: the library's indexed items.", show_default=False
        ),
    ] = [],  # noqa: B006
    labels: LabelsOpt = "",
    templates: TemplatesOpt = "default",
    top_k: Annotated[int, options.top_option("Labels to show per file.", "--top-k")] = 5,
    per_moment: Annotated[
        bool, typer.Option("--per-moment", help="Videos: label each stretch of similar frames.")
    ] = False,
    where: options.WhereOpt = [],  # noqa: B006
    library: options.LibraryOpt = None,
    model: options.ModelOpt = None,
    precision: options.PrecisionOpt = None,
    json_out: options.JsonOpt = False,
) -> None:
    """Classify files (or the library's items) zero-shot: top-k labels with probabilities."""
    from clipsearch.search import classify as C

    if paths:
        encoder = options.load_encoder(model, precision, library=options.library_path(library))
        clf = C.build_classifier(encoder, labels, templates=templates)
        results = C.classify_files(encoder, clf, paths, top_k=top_k, per_moment=per_moment)
    else:
        with options.open_library(library, model, precision, create=False) as lib:
            clf = C.build_classifier(lib.encoder, labels, templates=templates)
            results = lib.classify_items(clf, where=where, top_k=top_k, per_moment=per_moment)
    _notes(clf.notes)
    if json_out:
        render.print_json([r.to_dict() for r in results])
        return
    from rich.table import Table

    table = Table(
        title=f"{len(results)} files · {len(clf.labels)} labels · {len(clf.templates)} templates"
    )
    table.add_column("file", overflow="fold")
    table.add_column("top labels (probability)")
    for r in results:
        if getattr(r, "error", None):
            table.add_row(r.path, f"[red]{r.error}[/]")
            continue
        text = ", ".join(
            f"{lab} {p:.1%}" for lab, p in zip(r.prediction.labels, r.prediction.probs, strict=True)
        )
        if r.moments:
            text += "\n" + "  ".join(f"[{m.start:.1f}–{m.end:.1f}s] {m.label}" for m in r.moments)
        table.add_row(r.path, text)
    render.out.print(table)


def tag(
    labels: LabelsOpt = "",
    threshold: Annotated[
        str,
        typer.Option(
            "--threshold",
            help="Cosine in [-1, 1], or auto (per label, from the library's own scores).",
        ),
    ] = "auto",
    templates: TemplatesOpt = "default",
    where: options.WhereOpt = [],  # noqa: B006
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be tagged; store nothing.")
    ] = False,
    library: options.LibraryOpt = None,
    model: options.ModelOpt = None,
    precision: options.PrecisionOpt = None,
    json_out: options.JsonOpt = False,
) -> None:
    """Tag the library's items with labels; search them with --where tag:LABEL."""
    from clipsearch.search import classify as C

    with options.open_library(library, model, precision, create=False) as lib:
        thr: float | str = (
            threshold
            if threshold.strip().lower() == C.AUTO
            else C.check_threshold(threshold, "--threshold")
        )
        clf = C.build_classifier(lib.encoder, labels, templates=templates)
        report = lib.tag(clf, threshold=thr, where=where, dry_run=dry_run)
    if json_out:
        render.print_json(report.to_dict())
        return
    _notes(report.notes)
    from rich.table import Table

    table = Table(title=f"{'dry run: ' if dry_run else ''}{report.n_items} items scored")
    for col in ("tag", "threshold", "items"):
        table.add_column(col, justify="left" if col == "tag" else "right")
    for lab, thr_ in report.thresholds.items():
        table.add_row(lab, "—" if thr_ is None else f"{thr_:.3f}", str(report.counts[lab]))
    render.out.print(table)


def moderate(
    policy: Annotated[
        Path,
        typer.Option(
            "--policy", help="TOML policy: [labels] with cosine thresholds.", show_default=False
        ),
    ],
    where: options.WhereOpt = [],  # noqa: B006
    store_tags: Annotated[
        bool, typer.Option("--tag", help="Also store flagged labels as tags.")
    ] = False,
    library: options.LibraryOpt = None,
    model: options.ModelOpt = None,
    precision: options.PrecisionOpt = None,
    json_out: options.JsonOpt = False,
) -> None:
    """Flag the library's items that match a moderation policy, with the reason and score."""
    from clipsearch.search.moderation import ModerationPolicy

    rules = ModerationPolicy.load(policy)
    with options.open_library(library, model, precision, create=False) as lib:
        flags, n = lib.moderate(rules, where=where, tag=store_tags)
    if json_out:
        render.print_json(
            {
                "checked": n,
                "flagged": len({f.item_id for f in flags}),
                "flags": [f.to_dict() for f in flags],
            }
        )
        return
    if not flags:
        render.err.print(f"no item of {n} matches the policy")
        return
    from rich.table import Table

    table = Table(title=f"{len({f.item_id for f in flags})} of {n} items flagged")
    for col in ("file", "reason", "score", "threshold", "at"):
        table.add_column(col, overflow="fold" if col == "file" else "ellipsis")
    for f in flags:
        table.add_row(
            f.path,
            f.reason,
            f"{f.score:.3f}",
            f"{f.threshold:.3f}",
            "" if f.t is None else f"{f.t:.1f}s",
        )
    render.out.print(table)


def dedup(
    threshold: Annotated[
        float,
        typer.Option("--threshold", help="Cosine similarity for near duplicates, in [-1, 1]."),
    ] = 0.95,
    k: Annotated[
        int,
        typer.Option("--neighbours", help="Nearest neighbours examined per item.", min=1),
    ] = 10,
    exact_only: Annotated[
        bool, typer.Option("--exact-only", help="Only identical files (content hash).")
    ] = False,
    where: options.WhereOpt = [],  # noqa: B006
    library: options.LibraryOpt = None,
    json_out: options.JsonOpt = False,
) -> None:
    """Find exact and near-duplicate items, with a keep/remove suggestion per group."""
    with options.open_library(library, create=False) as lib:
        report = lib.find_duplicates(threshold=threshold, k=k, where=where, near=not exact_only)
    if json_out:
        render.print_json(report.to_dict())
        return
    _notes(report.notes)
    if not report.groups:
        render.err.print(f"no duplicates among {report.n_items} items")
        return
    from rich.table import Table

    table = Table(title=f"{len(report.groups)} groups · {report.removable} files could go")
    for col in ("group", "", "file", "size", "similarity"):
        table.add_column(col, overflow="fold" if col == "file" else "ellipsis")
    for n, g in enumerate(report.groups, start=1):
        for m in g.members:
            action = "[green]keep[/]" if m is g.keep else "[red]remove[/]"
            dims = f"{m.width}×{m.height}" if m.width else ""
            table.add_row(
                f"{n} {g.kind}",
                action,
                m.path,
                f"{dims} {m.size:,} B".strip(),
                f"{m.similarity:.3f}",
            )
    render.out.print(table)
