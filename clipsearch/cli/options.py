"""Options several commands share, declared once, and the root options they fall back to.

A command names a shared option by its alias (``library: LibraryOpt = None``); the flags,
help and choices live here. Where a command needs its own help text or help panel for
the same option, it calls the factory (``json_option(rich_help_panel=...)``), so the
flags stay the same everywhere.

Fixed value sets are the ``Literal`` types of the layers that own the concepts
(``clipsearch.search.choices.Pooling``, ``clipsearch.search.choices.RerankMethod``...):
click validates them, ``--help`` lists them, commands never re-check.
Lists of them (``--pooling mean,softmax``) go through :func:`choice_list`.

Options given before the command name (``clipsearch --library L search ...``) are kept
in :data:`root`; a command's own option of the same name wins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from clipsearch.errors import UsageError
from clipsearch.media.scan import MediaKind
from clipsearch.models.precision import PRECISIONS
from clipsearch.search.choices import Composition, ItmScoreRule, Pooling, Reranker, SortOrder

if TYPE_CHECKING:
    from clipsearch.library import Library
    from clipsearch.models.base import Encoder

# -- value sets (the owning modules' Literal types) ------------------------------------------
# The models layer keeps the weights' precision as a Literal without "auto" and the names a
# user may ask for (with "auto") as a tuple; the choice is built from that tuple.
PrecisionChoice = Literal[PRECISIONS]  # auto | fp32 | bf16 | fp16
PoolingChoice = Pooling  # peak | mean | max | softmax
RerankChoice = Reranker  # none | is | qbnorm | dbnorm | dbnorm-dynamic | itm
ItmScoreChoice = ItmScoreRule  # fusion | itm
ComposeChoice = Composition  # slerp | sum
KindChoice = MediaKind  # image | video
SortChoice = SortOrder  # relevance | date | -date

DEFAULT_LIBRARY_HELP = (
    "Library directory (default: $CLIPSEARCH_HOME or ~/.local/share/clipsearch/default)."
)


# -- the root command's options ---------------------------------------------------------------
@dataclass
class RootOptions:
    """``clipsearch --library L --model M --precision P COMMAND``: what every command falls
    back to when it is not given the option itself."""

    library: Path | None = None
    model: str | None = None
    precision: str = "auto"


root = RootOptions()


def library_path(library: Path | None) -> Path | None:
    """The command's ``--library``, else the root one (None: the default library)."""
    return library if library is not None else root.library


def model_spec(model: str | None) -> str | None:
    """The command's ``--model``, else the root one (None: the library's or the default)."""
    return model if model is not None else root.model


def precision_of(precision: str | None) -> str:
    """The command's ``--precision``, else the root one (default ``auto``)."""
    return precision if precision is not None else root.precision


def open_library(
    library: Path | None,
    model: str | None = None,
    precision: str | None = None,
    **kw: Any,
) -> Library:
    """A Library from a command's options (the root options fill what the command lacks)."""
    from clipsearch.library import Library

    return Library(
        library_path(library), model=model_spec(model), precision=precision_of(precision), **kw
    )


def load_encoder(
    model: str | None, precision: str | None, *, library: Path | None = None
) -> Encoder:
    """The model for a command that encodes files rather than a library's items: ``--model``,
    else the root ``--model``, else the model of ``library`` when one is named, else the
    default model."""
    from clipsearch.models import DEFAULT_MODEL
    from clipsearch.models import load_encoder as load

    spec = model_spec(model)
    if spec is None and library is not None:
        with open_library(library, create=False) as lib:
            spec = lib.model_spec
    return load(spec or DEFAULT_MODEL, precision=precision_of(precision))


# -- option factories and aliases -------------------------------------------------------------
def library_option(help: str = DEFAULT_LIBRARY_HELP, **kw: Any) -> Any:
    return typer.Option("--library", "-L", help=help, **{"show_default": False, **kw})


def model_option(
    help: str = "Model spec: ARCH:TAG (open_clip), hf-hub:org/repo, ARCH@/weights.safetensors, "
    "or a clipsearch checkpoint path (default: the library's model, else "
    "ViT-B-32:laion2b_s34b_b79k).",
    **kw: Any,
) -> Any:
    return typer.Option("--model", "-m", help=help, **{"show_default": False, **kw})


def precision_option(
    help: str = "Model precision (default: the --precision given before the command, else auto).",
    **kw: Any,
) -> Any:
    return typer.Option("--precision", help=help, **{"show_default": False, **kw})


def json_option(help: str = "Print JSON for scripts.", **kw: Any) -> Any:
    return typer.Option("--json", help=help, **kw)


def quiet_option(help: str = "No progress display.", **kw: Any) -> Any:
    return typer.Option("--quiet", "-q", help=help, **kw)


def top_option(help: str = "Number of results.", *aliases: str, **kw: Any) -> Any:
    """``-k/--top``: how many results a command returns (``aliases``: older long names)."""
    return typer.Option("-k", "--top", *aliases, help=help, min=1, **kw)


def where_option(
    help: str = 'Only items matching this filter, e.g. "path:/photos/2023/*", '
    '"after:2023-01-01", "size>1MB" (repeatable).',
    **kw: Any,
) -> Any:
    return typer.Option("--where", help=help, **kw)


def batch_size_option(help: str = "Images per encoder batch.", **kw: Any) -> Any:
    return typer.Option("--batch-size", help=help, min=1, **kw)


def workers_option(help: str = "Decode threads.", **kw: Any) -> Any:
    return typer.Option("--workers", help=help, min=1, **kw)


LibraryOpt = Annotated[Path | None, library_option()]
ModelOpt = Annotated[str | None, model_option()]
PrecisionOpt = Annotated[PrecisionChoice | None, precision_option()]
JsonOpt = Annotated[bool, json_option()]
QuietOpt = Annotated[bool, quiet_option()]
TopOpt = Annotated[int, top_option()]
WhereOpt = Annotated[list[str], where_option()]
BatchSizeOpt = Annotated[int, batch_size_option()]
WorkersOpt = Annotated[int, workers_option()]
TauOpt = Annotated[float, typer.Option("--tau", help="Softmax pooling temperature.")]

# -- text in pictures (OCR: docs/ocr.md) -----------------------------------------------------
OcrOpt = Annotated[
    bool | None,
    typer.Option(
        "--ocr/--no-ocr",
        help="Read the text in images (OCR; the ocr extra) so searches match it. "
        "Remembered by the library: default, as its last index run.",
        show_default=False,
    ),
]
OcrFramesOpt = Annotated[
    bool | None,
    typer.Option(
        "--ocr-frames/--no-ocr-frames",
        help="Also read the text in every sampled video frame (implies --ocr; remembered).",
        show_default=False,
    ),
]
TextMatchOpt = Annotated[
    bool | None,
    typer.Option(
        "--text-match/--no-text-match",
        help="Also rank by the text read in pictures (default: when the library has read text).",
        show_default=False,
    ),
]
PhrasesOpt = Annotated[
    bool | None,
    typer.Option(
        "--phrases/--no-phrases",
        help='"Quoted words" must appear in the picture\'s text (default: when the library '
        "has read text; --no-phrases: quotes only delimit terms).",
        show_default=False,
    ),
]


# -- where results end, their order, duplicates, capture dates (docs/search.md) ---------------
def _checked_min_score(value: str) -> str:
    from clipsearch.search.relevance import parse_min_score

    try:
        parse_min_score(value)
    except UsageError as e:
        raise typer.BadParameter(str(e)) from None
    return value


MinScoreOpt = Annotated[
    str,
    typer.Option(
        "--min-score",
        help="Where the relevant results end: auto (per query, from its scores over the "
        "library), a cosine such as 0.25, or none. The table shows the relevant ones; --json "
        "marks each hit relevant: true/false.",
        callback=_checked_min_score,
    ),
]
SortOpt = Annotated[
    SortChoice,
    typer.Option(
        "--sort", help="Order of the relevant results: relevance, date (oldest first), -date."
    ),
]
CollapseOpt = Annotated[
    bool,
    typer.Option(
        "--collapse/--no-collapse",
        help="Show each group of near-duplicates as one result, with the others as members.",
    ),
]
TakenAfterOpt = Annotated[
    str | None,
    typer.Option(
        "--taken-after",
        help="Only items taken at or after DATE (2023, 2023-06, 2023-06-30...; EXIF or video "
        "date, else the file's mtime).",
        show_default=False,
    ),
]
TakenBeforeOpt = Annotated[
    str | None,
    typer.Option("--taken-before", help="Only items taken before DATE.", show_default=False),
]


# -- BLIP: re-ranking, captions, CapFilt (docs/blip.md) ----------------------------------------
ItmModelOpt = Annotated[
    str | None,
    typer.Option(
        "--itm-model",
        help="BLIP image-text matching model: Hugging Face Hub id or local folder "
        "(default Salesforce/blip-itm-base-coco).",
        show_default=False,
    ),
]
CaptionModelOpt = Annotated[
    str | None,
    typer.Option(
        "--caption-model",
        help="BLIP captioning model: Hugging Face Hub id or local folder "
        "(default Salesforce/blip-image-captioning-base).",
        show_default=False,
    ),
]
RerankKOpt = Annotated[
    int, typer.Option("--rerank-k", help="--rerank itm: candidates re-scored.", min=1)
]
RerankScoreOpt = Annotated[
    ItmScoreChoice,
    typer.Option(
        "--rerank-score",
        help="--rerank itm: final score, fusion (ITM log-odds + CLIP score) | itm (P(match)).",
    ),
]


# -- lists of choices -------------------------------------------------------------------------
def choice_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """A Typer ``parser`` for an option taking several of ``choices`` comma-separated
    (``--pooling mean,softmax``; the option may also be repeated). Each value becomes a
    list; :func:`flatten` joins the repeats. Unknown names are a usage error naming the
    choices."""
    allowed = tuple(choices)

    def parse(value: str | list[str]) -> list[str]:
        if isinstance(value, list):  # a default that is already parsed
            return value
        names = [v.strip().lower() for v in value.split(",") if v.strip()]
        if not names:
            raise typer.BadParameter(f"give at least one of {', '.join(allowed)}")
        for name in names:
            if name not in allowed:
                raise typer.BadParameter(
                    f"{name!r} is not one of {', '.join(repr(c) for c in allowed)}."
                )
        return names

    return parse


def choice_list_metavar(choices: Sequence[str]) -> str:
    """How ``--help`` shows a :func:`choice_list` option: ``[mean|max|softmax],...``."""
    return "[" + "|".join(choices) + "],..."


def flatten(values: Sequence[Sequence[str]]) -> list[str]:
    """The values of a repeated :func:`choice_list` option, in order, without repeats."""
    return list(dict.fromkeys(v for group in values for v in group))
