"""Progress events emitted by the indexing pipeline. The library never prints: the CLI
renders these with Rich, the server forwards them to the web page."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clipsearch.media.scan import MediaKind


@dataclass(frozen=True)
class ScanProgress:
    """The walk is under way: ``found`` media files so far under ``root``."""

    root: str
    found: int


@dataclass(frozen=True)
class ScanDone:
    """The walk finished; ``to_encode`` files need decoding and encoding, and ``to_read``
    files already indexed need only their text read (``index --ocr``)."""

    total: int
    unchanged: int
    reused: int
    to_encode: int
    deleted: int
    to_read: int = 0


@dataclass(frozen=True)
class FileDone:
    """One file finished (written to the catalog). ``error`` is set when it failed."""

    path: str
    kind: MediaKind
    ok: bool
    error: str | None = None
    frames: int = 0


@dataclass(frozen=True)
class BatchWritten:
    """A batch was committed: everything counted so far survives a crash."""

    done: int
    total: int
    failed: int
    frames: int


@dataclass(frozen=True)
class AnnProgress:
    """The nearest-neighbour index is being built or updated: ``stage`` (fetch, train, add,
    tune, save) is ``fraction`` done."""

    stage: str
    fraction: float


@dataclass(frozen=True)
class RuntimeProgress:
    """An accelerated image encoder is being prepared: ``stage`` (export, calibrate, check)
    is ``fraction`` done. Happens once per library and model (the result is cached)."""

    stage: str
    fraction: float


@dataclass(frozen=True)
class RuntimeChosen:
    """The image encoder this run indexes with (``label``, e.g. "openvino int8") and why;
    ``gate`` holds the accuracy gate's figures when one was measured."""

    label: str
    reason: str
    gate: dict | None = None
    fell_back: bool = False  # an accelerated encoder was asked for but could not be used


@dataclass(frozen=True)
class DatesRead:
    """Capture times of files indexed before they were recorded are being read (no
    encoding): ``done`` of ``total``."""

    done: int
    total: int


@dataclass
class IndexReport:
    """What an `index` run did. ``interrupted`` is True when it stopped early (Ctrl-C);
    running it again resumes."""

    roots: list[str] = field(default_factory=list)
    scanned: int = 0
    unchanged: int = 0
    added: int = 0  # newly encoded (new or changed files), including failed ones
    reused: int = 0  # moved or copied files whose vectors were reused (no encoding)
    failed: int = 0
    deleted: int = 0
    frames: int = 0  # video frames encoded
    read: int = 0  # files whose text was read (OCR), encoded in this run or before
    dated: int = 0  # unchanged files whose capture time was read (no encoding)
    scan_errors: list[tuple[str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    encode_s: float = 0.0
    interrupted: bool = False
    captions: Any = None  # a CaptionReport when the run also captioned (index --captions)
    image_encoder: str | None = None  # what encoded images, e.g. "torch fp32", "openvino int8"
    image_encoder_reason: str | None = None  # why that one (e.g. the accuracy gate's verdict)
    image_encoder_fell_back: bool = False  # an accelerated encoder was wanted, torch was used

    @property
    def encoded(self) -> int:
        return self.added - self.failed

    def to_dict(self) -> dict:
        return {
            "roots": self.roots,
            "scanned": self.scanned,
            "unchanged": self.unchanged,
            "added": self.added,
            "encoded": self.encoded,
            "reused": self.reused,
            "failed": self.failed,
            "deleted": self.deleted,
            "frames": self.frames,
            "read": self.read,
            "dated": self.dated,
            "scan_errors": [{"path": p, "error": e} for p, e in self.scan_errors],
            "elapsed_s": round(self.elapsed_s, 3),
            "interrupted": self.interrupted,
            **({"captions": self.captions.to_dict()} if self.captions is not None else {}),
            "image_encoder": self.image_encoder,
            "image_encoder_reason": self.image_encoder_reason,
            "image_encoder_fell_back": self.image_encoder_fell_back,
        }


IndexEvent = (
    ScanProgress
    | ScanDone
    | FileDone
    | BatchWritten
    | AnnProgress
    | DatesRead
    | RuntimeProgress
    | RuntimeChosen
)
