"""Rich rendering for the CLI: progress bars, result tables, status. Only the CLI prints.

Rich is imported on first use: ``--help``, ``--json`` output and the warm search path do
not pay for it. ``out`` (stdout) and ``err`` (stderr) are its consoles, made on first use.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID
    from rich.table import Table
    from rich.text import Text

    from clipsearch.ingest.events import IndexEvent, IndexReport
    from clipsearch.search.hits import Hit, SearchResults

_consoles: dict[str, Console] = {}


def console(name: str) -> Console:
    """The ``out`` or ``err`` console (see `console_options`)."""
    if name not in _consoles:
        from rich.console import Console

        stream = sys.stdout if name == "out" else sys.stderr
        _consoles[name] = Console(**console_options(stderr=name == "err", tty=stream.isatty()))
    return _consoles[name]


def console_options(*, stderr: bool, tty: bool) -> dict[str, Any]:
    """How the CLI's consoles are made, for a stream that is (``tty``) a terminal or not.
    When piped, long paths are not folded at 80 columns."""
    return {"stderr": stderr, "highlight": False, "soft_wrap": True, "width": None if tty else 240}


_console = console  # for functions whose ``console`` parameter hides this function


def __getattr__(name: str) -> Any:
    if name in ("out", "err"):
        return console(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def quiet_large_image_warning() -> None:
    """Large-but-allowed photos (90–179 MP) are fine (load_image enforces clipsearch's own
    limit): no Pillow DecompressionBombWarning, matched by its message, so Pillow is not
    imported by commands that never open an image."""
    import warnings

    warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")


def print_json(data: Any) -> None:
    """Plain JSON on stdout (no colour codes) for scripts."""
    sys.stdout.write(json_text(data))
    sys.stdout.flush()


def json_text(data: Any) -> str:
    """What `print_json` prints."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def escape(text: str) -> str:
    """``text`` with Rich markup characters escaped (shown as is)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def error_line(message: str) -> None:
    """``error: MESSAGE`` in red on stderr; the message is shown as is (no Rich markup)."""
    from rich.markup import escape

    console("err").print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)


def warning_line(message: str) -> None:
    """``warning: MESSAGE`` in yellow on stderr (no Rich markup in the message)."""
    from rich.markup import escape

    console("err").print(f"[yellow]warning:[/] {escape(message)}", markup=True, highlight=False)


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = round(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class IndexProgress:
    """Renders indexing events: a scan spinner, then a bar with files/s, ETA and errors.
    Quiet, it only counts (and Rich is not loaded)."""

    def __init__(self, *, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.errors = 0
        self.frames = 0
        self.task: TaskID | None = None
        self._start: float | None = None
        if quiet:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("[red]{task.fields[errors]}"),
            console=console or _console("err"),
            transient=False,
        )

    def __enter__(self) -> IndexProgress:
        if not self.quiet:
            self.progress.start()
            self.task = self.progress.add_task("scanning", total=None, rate="", errors="")
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.quiet:
            self.progress.stop()

    def __call__(self, event: IndexEvent) -> None:
        from clipsearch.ingest.events import (
            AnnProgress,
            DatesRead,
            FileDone,
            RuntimeChosen,
            RuntimeProgress,
            ScanDone,
            ScanProgress,
        )

        if self.quiet:
            if isinstance(event, FileDone):
                self.errors += 0 if event.ok else 1
                self.frames += event.frames
            return
        assert self.task is not None
        p = self.progress
        if isinstance(event, ScanProgress):
            p.update(self.task, description=f"scanning {event.root}: {event.found} files")
        elif isinstance(event, ScanDone):
            total = event.to_encode + event.to_read
            p.update(self.task, description="indexing", total=total, completed=0)
            p.reset(self.task, total=total, description="indexing")
        elif isinstance(event, FileDone):
            if not event.ok:
                self.errors += 1
            self.frames += event.frames
            task = p.tasks[0]
            elapsed = task.elapsed or 0.0
            rate = f"{(task.completed + 1) / elapsed:.1f} files/s" if elapsed > 0 else ""
            p.update(
                self.task,
                advance=1 if task.total is not None else 0,
                rate=rate,
                errors=f"{self.errors} errors" if self.errors else "",
            )
        elif isinstance(event, DatesRead):
            p.update(
                self.task,
                description="reading capture dates",
                total=event.total,
                completed=event.done,
            )
        elif isinstance(event, AnnProgress):
            p.update(self.task, description=f"search index: {event.stage} {event.fraction:.0%}")
        elif isinstance(event, RuntimeProgress):  # once per library: export, calibrate, check
            p.update(self.task, description=f"image encoder: {event.stage} {event.fraction:.0%}")
        elif isinstance(event, RuntimeChosen):
            p.update(self.task, description="indexing")


def index_summary(report: IndexReport, console: Console | None = None) -> None:
    console = console or _console("err")
    parts = [
        f"{report.scanned} files seen",
        f"{report.encoded} encoded",
        f"{report.unchanged} unchanged",
    ]
    if report.reused:
        parts.append(f"{report.reused} moved/copied (vectors reused)")
    if report.deleted:
        parts.append(f"{report.deleted} removed")
    if report.frames:
        parts.append(f"{report.frames} video frames")
    if report.read:
        parts.append(f"{report.read} read for text")
    if report.dated:
        parts.append(f"{report.dated} capture dates read")
    if report.failed:
        parts.append(f"[red]{report.failed} failed[/] (see `clipsearch status`)")
    accelerated = report.image_encoder and not report.image_encoder.startswith("torch")
    if report.encoded and (accelerated or report.image_encoder_fell_back):
        why = f" ({report.image_encoder_reason})" if report.image_encoder_reason else ""
        parts.append(f"images encoded with {report.image_encoder}{why}")
    rate = report.encoded / report.elapsed_s if report.elapsed_s > 0 else 0.0
    console.print(", ".join(parts) + f" in {report.elapsed_s:.1f} s ({rate:.1f} files/s)")
    for path, why in report.scan_errors[:10]:
        console.print(f"[yellow]skipped[/] {path}: {why}")
    if len(report.scan_errors) > 10:
        console.print(f"[yellow]... and {len(report.scan_errors) - 10} more scan problems[/]")
    if report.interrupted:
        console.print("[yellow]Interrupted.[/] Run the same command again to resume.")


def hits_table(
    hits: Sequence[Hit], *, title: str | None = None, dates: bool = False, duplicates: bool = False
) -> Table:
    """A results table; ``dates`` adds when each was taken, ``duplicates`` how many
    near-duplicates each result stands for."""
    from rich.table import Table

    table = Table(title=title, show_lines=False, expand=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("score", justify="right")
    table.add_column("kind")
    if dates:
        table.add_column("taken")
    table.add_column("moment")
    if duplicates:
        table.add_column("copies", justify="right")
    reranked = any(h.clip_score is not None for h in hits)
    if reranked:
        table.add_column("itm", justify="right")
        table.add_column("clip", justify="right")
    table.add_column("path", overflow="fold")
    sources = {h.text_match.source for h in hits if h.text_match is not None}
    texts = bool(sources)
    if texts:
        header = "text in picture" if sources == {"ocr"} else "matched text"
        table.add_column(header, overflow="fold")
    captioned = any(h.caption is not None for h in hits)
    if captioned:
        table.add_column("caption", overflow="fold")
    for h in hits:
        moment = ", ".join(f"{fmt_time(m.start)}–{fmt_time(m.end)}" for m in h.moments)
        row: list[str | Text] = [str(h.rank), f"{h.score:.4f}", h.kind]
        if dates:
            row.append(h.taken.to_datetime().strftime("%Y-%m-%d %H:%M") if h.taken else "")
        row.append(moment)
        if duplicates:
            row.append(f"+{len(h.members)}" if h.members else "")
        if reranked:
            row.append("—" if h.itm_score is None else f"{h.itm_score:.3f}")
            row.append("—" if h.clip_score is None else f"{h.clip_score:.4f}")
        row.append(h.path)
        if texts:
            row.append(matched_text(h))
        if captioned:
            row.append(h.caption or "")
        table.add_row(*row)
    return table


def matched_text(hit: Hit, limit: int = 80) -> Text:
    """The text a hit matched, its matched parts in bold, on one line (cut at ``limit``)."""
    from rich.text import Text

    m = hit.text_match
    if m is None:
        return Text("")
    from clipsearch.search.textmatch import match_spans

    line = m.text.replace("\n", " ")  # one character for one: the spans stay valid
    out = Text(line[:limit] + ("…" if len(line) > limit else ""))
    for start, end in match_spans(m.text, m.terms):
        if start < limit:
            out.stylize("bold yellow", start, min(end, limit))
    if m.t is not None:
        out.append(f" @{fmt_time(m.t)}", style="dim")
    return out


def runtime_line(runtime: dict[str, Any]) -> str:
    """The runtime settings and each built image encoder's accuracy-gate verdict, e.g.
    "openvino, quantize int8; openvino int8 passed the accuracy gate: min cosine 0.9954
    (≥ 0.99), top-10 overlap text 0.906 / image 0.983 (≥ 0.9) on 128 images, 64 calibration,
    1.34× torch"."""
    from clipsearch.models.agreement import AgreementReport

    line = f"{runtime.get('runtime')}, quantize {runtime.get('quantize')}"
    for build in runtime.get("builds") or []:
        name = f"{build.get('runtime')} {build.get('precision')}"
        if not build.get("gate"):
            line += f"; {name} built, accuracy not yet checked"
            continue
        try:
            gate = AgreementReport.from_dict(build["gate"])
        except TypeError:  # a record from another version: show what is there
            line += f"; {name}: gate {build['gate']}"
            continue
        calib = f", {gate.calibration_images} calibration" if gate.calibration_images else ""
        speed = f", {gate.speedup:.2f}× torch" if gate.speedup else ""
        if gate.passed:
            line += f"; {name} passed the accuracy gate: {gate.summary()}{calib}{speed}"
        else:
            line += (
                f"; {name} FAILED the accuracy gate ({gate.reason}), torch indexes instead: "
                f"{gate.summary()}{calib}"
            )
    return line


def search_results(
    hits: SearchResults,
    *,
    dates: bool = False,
    duplicates: bool = False,
    out: Console | None = None,
    err: Console | None = None,
) -> None:
    """The relevant hits as a table on stdout, and on stderr how many fell below the cut
    (on the ``out`` and ``err`` consoles, by default this process's)."""
    shown = hits.relevant
    below = len(hits) - len(shown)
    err = err or console("err")
    if shown:
        (out or console("out")).print(hits_table(shown, dates=dates, duplicates=duplicates))
    if not hits:
        err.print("no results")
    elif below:
        cut = f" (score below {hits.min_score:.4f})" if hits.min_score is not None else ""
        lead = "no close matches: " if not shown else ""
        err.print(
            f"{lead}{below} more on this page below the relevance cut{cut}; "
            "--min-score none shows them"
        )


CAPTURE_SOURCES = (  # status: where capture dates came from
    ("exif", "from EXIF"),
    ("container", "from video containers"),
    ("mtime", "file times"),
    ("unread", "not read yet (next index run)"),
)


def status_tables(status: dict[str, Any]) -> list[Table]:
    from rich.table import Table

    head = Table(show_header=False, box=None)
    head.add_column(style="bold")
    head.add_column()
    for key in ("library", "model", "dim", "fingerprint"):
        head.add_row(key, str(status.get(key) or "—"))
    runtime = status.get("runtime") or {}
    if runtime:
        head.add_row("runtime", runtime_line(runtime))
    tables = [head]
    items = status.get("items") or {}
    counts = items.get("by_kind") or {}
    if items:
        head.add_row("items", f"{items.get('total', 0)} ({items.get('failed', 0)} failed)")
        head.add_row(
            "vectors", f"{status.get('vectors', 0)} ({status.get('frames', 0)} video frames)"
        )
        head.add_row("roots", ", ".join(status.get("roots") or []) or "—")
        dates = status.get("capture_times") or {}
        if any(dates.values()):
            parts = [f"{dates.get(s, 0)} {label}" for s, label in CAPTURE_SOURCES if dates.get(s)]
            head.add_row("capture dates", ", ".join(parts))
    if counts:
        t = Table(title="items")
        t.add_column("kind")
        for col in ("ok", "failed"):
            t.add_column(col, justify="right")
        for kind, by_status in sorted(counts.items()):
            t.add_row(kind, *(str(by_status.get(c, 0)) for c in ("ok", "failed")))
        tables.append(t)
    ocr = status.get("ocr") or {}
    if ocr.get("enabled") or (ocr.get("by_kind") and ocr.get("texts")):
        t = Table(title="text in pictures (OCR)" + ("" if ocr.get("enabled") else ": off"))
        t.add_column("kind")
        for col in ("indexed", "read", "with text"):
            t.add_column(col, justify="right")
        for kind, c in sorted((ocr.get("by_kind") or {}).items()):
            if kind == "video" and not ocr.get("frames") and not c.get("read"):
                continue  # video frames are read only with --ocr-frames
            t.add_row(kind, str(c["items"]), str(c["read"]), str(c["with_text"]))
        tables.append(t)
    captions = status.get("captions") or {}
    if captions.get("texts"):
        t = Table(title="BLIP captions")
        t.add_column("kind")
        for col in ("indexed", "captioned"):
            t.add_column(col, justify="right")
        for kind, c in sorted((captions.get("by_kind") or {}).items()):
            t.add_row(kind, str(c["items"]), str(c["with_text"]))
        tables.append(t)
    fails = status.get("failures") or []
    if fails:
        t = Table(title=f"failures (first {len(fails)})")
        t.add_column("path", overflow="fold")
        t.add_column("reason", overflow="fold")
        for f in fails:
            t.add_row(f["path"], f["error"])
        tables.append(t)
    return tables
