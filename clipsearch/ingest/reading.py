"""Reading the text inside pictures while indexing (``index --ocr``).

The indexer's decode workers read text from the picture they have just decoded — never a
second decode of the file — and hand it to the catalog with the file's vectors:

- images are decoded a little larger when text is read: the shorter side kept ≥
  ``DECODE_SIDE`` (512) pixels instead of the model's input size, i.e. a 12 MP photo at a
  quarter of its size and a 1080p one at half, so text a few percent of the picture's
  height still has pixels to be read; the encoder's own preprocessing shrinks the same
  image for the model;
- video frames, when asked (``--ocr-frames``), are sampled with the long side at
  ``FRAME_SIDE`` pixels, and each sampled frame is read; a text equal to the previous
  frame's is stored once, at the time it appeared;
- detection runs first on a reduced copy and recognition only where it found text
  (`clipsearch.models.ocr`), so photos without text cost one small forward pass.

Items indexed before text reading was turned on (or by another reader) are read without
being encoded again: `TextReading.pending` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from clipsearch.store.records import TextRead
from clipsearch.store.texts import OCR, ReadingSettings, squash

if TYPE_CHECKING:
    from PIL import Image

    from clipsearch.models.ocr import TextReader
    from clipsearch.store import Catalog, ItemRecord

DECODE_SIDE = 512  # shorter side (px) images keep when their text is read
FRAME_SIDE = 1280  # long side (px) of sampled video frames whose text is read


@dataclass
class TextReading:
    """What an indexing run reads and with which reader (shared by the decode threads)."""

    settings: ReadingSettings
    reader: TextReader

    def reads(self, kind: str) -> bool:
        """True when items of ``kind`` ("image" / "video") get their text read."""
        return self.settings.ocr and (kind == "image" or self.settings.ocr_frames)

    def image_side(self, model_side: int) -> int:
        """The shorter side to decode an image at: enough for the model and the reader."""
        return max(model_side, DECODE_SIDE)

    def read_image(self, image: Image.Image) -> TextRead | None:
        """What the reader finds in ``image``; None when the reader failed on it (the file
        is indexed all the same, and its text is tried again on the next run)."""
        try:
            lines = self.reader.read(image)
        except Exception:  # a reader failure must never fail the file's indexing
            return None
        text = "\n".join(line.text for line in lines)
        return TextRead(OCR, self.reader.name, rows=((None, text),) if text else ())

    def frame_texts(self) -> FrameTexts:
        """An accumulator for one video's frames, read as they stream by."""
        return FrameTexts(self.reader)

    def pending(self, catalog: Catalog, paths: set[str]) -> list[ItemRecord]:
        """Indexed items among ``paths`` that this reader has not read yet, in path order."""
        ids = catalog.texts.unread(OCR, self.reader.name, frames=self.settings.ocr_frames)
        records = catalog.items(sorted(ids)) if ids else {}
        return sorted((r for r in records.values() if r.path in paths), key=lambda r: r.path)


class FrameTexts:
    """The text of one video's sampled frames. A frame whose text equals the previous
    frame's adds nothing: the text is kept at the time it first appeared."""

    def __init__(self, reader: TextReader) -> None:
        self._reader = reader
        self._rows: list[tuple[float | None, str]] = []
        self._previous = ""
        self._failed = False

    def add(self, t: float, image: Image.Image) -> None:
        if self._failed:
            return
        try:
            text = "\n".join(line.text for line in self._reader.read(image))
        except Exception:  # as in read_image: the video is indexed, its text read next run
            self._failed = True
            return
        key = squash(text)
        if key and key != self._previous:
            self._rows.append((float(t), text))
        self._previous = key

    def result(self) -> TextRead | None:
        """The frames' text, or None when the reader failed on one of them."""
        if self._failed:
            return None
        return TextRead(OCR, self._reader.name, frames=True, rows=tuple(self._rows))


def resolve_settings(
    remembered: ReadingSettings, *, ocr: bool | None, ocr_frames: bool | None
) -> ReadingSettings:
    """The settings of this run: the library's, changed by what the run asks for. Reading
    frames implies reading images; turning text reading off turns both off."""
    use_ocr = remembered.ocr if ocr is None else ocr
    frames = remembered.ocr_frames if ocr_frames is None else ocr_frames
    if ocr_frames:
        use_ocr = True
    if not use_ocr:
        frames = False
    return ReadingSettings(ocr=use_ocr, ocr_frames=frames)
