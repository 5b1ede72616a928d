"""`clipsearch caption` and `clipsearch make-pairs`: BLIP captions for the library, and
CapFilt training pairs from a folder of unlabelled images. Thin faces over the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from clipsearch.cli import options, render

MaxTokensOpt = Annotated[
    int, typer.Option("--max-tokens", help="Longest caption, in tokens.", min=1)
]
BeamsOpt = Annotated[int, typer.Option("--beams", help="Beam search width.", min=1)]
PromptOpt = Annotated[
    str | None,
    typer.Option("--prompt", help='Start every caption with this text, e.g. "a photograph of".'),
]


class CountProgress:
    """A bar over ``done``/``total`` events with a text field (captions, kept/dropped)."""

    def __init__(self, description: str, *, quiet: bool) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.description = description
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}", style="dim"),
            console=render.err,
            disable=quiet,
        )
        self.task: Any = None

    def __enter__(self) -> CountProgress:
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=None, note="")
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, event: Any) -> None:
        note = ""
        if hasattr(event, "kept"):
            note = f"kept {event.kept}, dropped {event.dropped}"
        elif getattr(event, "last", None):
            note = event.last[:60]
        self.progress.update(self.task, total=event.total, completed=event.done, note=note)


def caption(
    caption_model: options.CaptionModelOpt = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Images per batch (and per commit).", min=1)
    ] = 8,
    video_moments: Annotated[
        int,
        typer.Option("--video-moments", help="Captions per video, spread over its frames.", min=1),
    ] = 4,
    max_tokens: MaxTokensOpt = 30,
    beams: BeamsOpt = 3,
    prompt: PromptOpt = None,
    redo: Annotated[
        bool, typer.Option("--redo", help="Caption again items that already have a caption.")
    ] = False,
    library: options.LibraryOpt = None,
    precision: options.PrecisionOpt = None,
    quiet: options.QuietOpt = False,
    json_out: options.JsonOpt = False,
) -> None:
    """Write a BLIP caption for every indexed image and video moment.

    Captions are searchable with --where text:WORDS and shown by search --captions.
    Resumable: items already captioned by the same model are skipped."""
    from clipsearch.cli.index_run import StopFlag
    from clipsearch.ingest.captioning import CaptionOptions

    caption_options = CaptionOptions(
        batch_size=batch_size,
        video_moments=video_moments,
        max_new_tokens=max_tokens,
        num_beams=beams,
        prompt=prompt,
        redo=redo,
    )
    with (
        options.open_library(
            library, None, precision, create=False, caption_model=caption_model
        ) as lib,
        StopFlag() as stop,
        CountProgress("captioning", quiet=quiet or json_out) as progress,
    ):
        report = lib.caption(caption_options, on_event=progress, should_stop=stop.event.is_set)
    if json_out:
        render.print_json(report.to_dict())
    else:
        render.out.print(
            f"captioned {report.items} items ({report.captions} captions) with {report.model} "
            f"in {report.seconds:.1f} s; {report.skipped} already captioned, "
            f"{report.failed} unreadable"
        )
        for e in report.errors[:10]:
            render.err.print(f"[red]{e['path']}[/]: {e['error']}")
    if report.interrupted:
        raise typer.Exit(130)


def make_pairs(
    folder: Annotated[Path, typer.Argument(help="Folder of unlabelled images.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The pairs CSV to write.")],
    threshold: Annotated[
        float,
        typer.Option("--threshold", help="Keep a caption when BLIP ITM P(match) >= this."),
    ] = 0.5,
    captions_per_image: Annotated[
        int,
        typer.Option(
            "--captions-per-image",
            help="1: one beam-search caption; more: nucleus-sampled captions, as BLIP's CapFilt.",
            min=1,
        ),
    ] = 1,
    caption_model: options.CaptionModelOpt = None,
    itm_model: options.ItmModelOpt = None,
    max_tokens: MaxTokensOpt = 30,
    beams: BeamsOpt = 3,
    prompt: PromptOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
    precision: options.PrecisionOpt = None,
    quiet: options.QuietOpt = False,
    json_out: options.JsonOpt = False,
) -> None:
    """Make training pairs from unlabelled images: BLIP captions filtered by BLIP ITM.

    CapFilt (BLIP): caption each image, keep the captions the ITM head accepts, and write
    the (image, caption) CSV that `clipsearch train --pairs` reads."""
    from clipsearch.cli.index_run import StopFlag
    from clipsearch.models.blip import load_captioner, load_matcher
    from clipsearch.train.capfilt import CapFiltOptions, find_images
    from clipsearch.train.capfilt import make_pairs as run_capfilt

    capfilt = CapFiltOptions(
        threshold=threshold,
        captions_per_image=captions_per_image,
        max_new_tokens=max_tokens,
        num_beams=beams,
        prompt=prompt,
        seed=seed,
    )
    capfilt.validate()
    find_images(folder)  # a bad folder fails before the models load
    precision = options.precision_of(precision)
    captioner = load_captioner(caption_model, precision=precision)
    matcher = load_matcher(itm_model, precision=precision)
    with StopFlag() as stop, CountProgress("CapFilt", quiet=quiet or json_out) as progress:
        report = run_capfilt(
            folder, out, captioner, matcher, capfilt, on_event=progress,
            should_stop=stop.event.is_set,
        )  # fmt: skip
    if json_out:
        render.print_json(report.to_dict())
    else:
        render.out.print(
            f"{report.images} images, {report.captioned} captions: kept {report.kept}, dropped "
            f"{report.dropped} (ITM P(match) < {report.threshold}); {report.failed} unreadable. "
            f"Pairs: {report.out}"
        )
    if report.interrupted:
        raise typer.Exit(130)
