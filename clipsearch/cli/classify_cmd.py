"""`clipsearch classify | tag | moderate | dedup`: zero-shot labels, tags, policy flags and
duplicate groups. Thin: parse options, call clipsearch.search.{classify,moderation,dedup},
render with Rich. A ClipsearchError becomes one red line and its exit code.

The lead mounts them with ``app.command()(fn)`` for fn in (classify, tag, moderate, dedup).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from clipsearch.errors import ClipsearchError

if TYPE_CHECKING:
    from clipsearch.library import Library
    from clipsearch.models.base import Encoder

_out = Console(highlight=False, soft_wrap=True)
_err = Console(stderr=True, highlight=False, soft_wrap=True)

LibraryOpt = Annotated[
    Path | None,
    typer.Option(
        "--library",
        "-L",
        help="Library directory (default: the global --library).",
        show_default=False,
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model spec for files (default: the library's, else the default model).",
        show_default=False,
    ),
]
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
        help="Prompt templates: default | simple | imagenet | a file with one {c} template per line.",
    ),
]
WhereOpt = Annotated[
    list[str],
    typer.Option(
        "--where", help='Only items matching this filter, e.g. "path:/photos/2023/*" (repeatable).'
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """ClipsearchError -> one red line on stderr and exit with its code."""
    try:
        yield
    except ClipsearchError as e:
        _err.print(f"[bold red]error:[/] {e}", markup=True, highlight=False)
        raise typer.Exit(e.exit_code) from None


def _global(name: str) -> object:
    try:
        from clipsearch.cli import app as root
    except ImportError:  # pragma: no cover
        return None
    return getattr(getattr(root, "G", None), name, None)


def _open_library(library: Path | None, *, create: bool = False) -> Library:
    from clipsearch.library import Library

    return Library(
        library or _global("library"),
        model=_global("model"),
        precision=str(_global("precision") or "auto"),
        create=create,
    )


def _file_encoder(model: str | None, library: Path | None) -> Encoder:
    from clipsearch.models import DEFAULT_MODEL, load_encoder

    spec = model or _global("model")
    if spec is None and library is not None:
        with _open_library(library) as lib:
            spec = lib.model_spec
    return load_encoder(str(spec or DEFAULT_MODEL), precision=str(_global("precision") or "auto"))


def _print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _notes(notes: list[str] | tuple[str, ...]) -> None:
    for note in notes:
        _err.print(f"[yellow]warning:[/] {note}", markup=True, highlight=False)


def classify(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Images, videos or folders; none: the library's indexed items.", show_default=False
        ),
    ] = [],  # noqa: B006
    labels: LabelsOpt = "",
    templates: TemplatesOpt = "default",
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Labels to show per file.")] = 5,
    per_moment: Annotated[
        bool, typer.Option("--per-moment", help="Videos: label each stretch of similar frames.")
    ] = False,
    where: WhereOpt = [],  # noqa: B006
    library: LibraryOpt = None,
    model: ModelOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Classify files (or the library's items) zero-shot: top-k labels with probabilities."""
    from clipsearch.search import classify as C

    with _errors():
        if paths:
            encoder = _file_encoder(model, library)
            clf = C.build_classifier(encoder, labels, templates=templates)
            results = C.classify_files(encoder, clf, paths, top_k=top_k, per_moment=per_moment)
        else:
            with _open_library(library) as lib:
                clf = C.build_classifier(lib.encoder, labels, templates=templates)
                results = lib.classify_items(clf, where=where, top_k=top_k, per_moment=per_moment)
    _notes(clf.notes)
    if json_out:
        _print_json([r.to_dict() for r in results])
        return
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
    _out.print(table)


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
    where: WhereOpt = [],  # noqa: B006
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be tagged; store nothing.")
    ] = False,
    library: LibraryOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Tag the library's items with labels; search them with --where tag:LABEL."""
    from clipsearch.search import classify as C

    with _errors(), _open_library(library) as lib:
        thr: float | str = (
            threshold
            if threshold.strip().lower() == C.AUTO
            else C.check_threshold(threshold, "--threshold")
        )
        clf = C.build_classifier(lib.encoder, labels, templates=templates)
        report = lib.tag(clf, threshold=thr, where=where, dry_run=dry_run)
    if json_out:
        _print_json(report.to_dict())
        return
    _notes(report.notes)
    table = Table(title=f"{'dry run: ' if dry_run else ''}{report.n_items} items scored")
    for col in ("tag", "threshold", "items"):
        table.add_column(col, justify="left" if col == "tag" else "right")
    for lab, thr_ in report.thresholds.items():
        table.add_row(lab, "—" if thr_ is None else f"{thr_:.3f}", str(report.counts[lab]))
    _out.print(table)


def moderate(
    policy: Annotated[
        Path,
        typer.Option(
            "--policy", help="TOML policy: [labels] with cosine thresholds.", show_default=False
        ),
    ],
    where: WhereOpt = [],  # noqa: B006
    store_tags: Annotated[
        bool, typer.Option("--tag", help="Also store flagged labels as tags.")
    ] = False,
    library: LibraryOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Flag the library's items that match a moderation policy, with the reason and score."""
    from clipsearch.search.moderation import ModerationPolicy

    with _errors():
        rules = ModerationPolicy.load(policy)
        with _open_library(library) as lib:
            flags, n = lib.moderate(rules, where=where, tag=store_tags)
    if json_out:
        _print_json(
            {
                "checked": n,
                "flagged": len({f.item_id for f in flags}),
                "flags": [f.to_dict() for f in flags],
            }
        )
        return
    if not flags:
        _err.print(f"no item of {n} matches the policy")
        return
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
    _out.print(table)


def dedup(
    threshold: Annotated[
        float,
        typer.Option("--threshold", help="Cosine similarity for near duplicates, in [-1, 1]."),
    ] = 0.95,
    k: Annotated[
        int, typer.Option("-k", "--neighbours", help="Nearest neighbours examined per item.")
    ] = 10,
    exact_only: Annotated[
        bool, typer.Option("--exact-only", help="Only identical files (content hash).")
    ] = False,
    where: WhereOpt = [],  # noqa: B006
    library: LibraryOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Find exact and near-duplicate items, with a keep/remove suggestion per group."""
    with _errors(), _open_library(library) as lib:
        report = lib.find_duplicates(threshold=threshold, k=k, where=where, near=not exact_only)
    if json_out:
        _print_json(report.to_dict())
        return
    _notes(report.notes)
    if not report.groups:
        _err.print(f"no duplicates among {report.n_items} items")
        return
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
    _out.print(table)
