"""Plain records the catalog reads and writes, and the fp16 vector encoding.

Vectors are stored as little-endian float16 blobs: 2·D bytes per row (1 KiB for D=512,
the memory budget of docs/architecture.md#performance). Encoders hand over float32
L2-normalised rows; fp16 keeps ~3 significant digits, which moves cosines by < 1e-3
(measured in the tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from clipsearch.errors import LibraryError
from clipsearch.media.capture_time import CaptureTime
from clipsearch.media.scan import MediaKind

# numpy is imported by the functions that read or write vectors: opening the catalog and
# comparing files with it (an index run over unchanged files) does not import it.
if TYPE_CHECKING:
    import numpy as np

STATUSES = ("ok", "failed")
# On-disk element type, whatever the host byte order (a numpy dtype spelling).
VECTOR_DTYPE = "<f2"


@dataclass(frozen=True)
class ModelBinding:
    """The one model a library is bound to (docs/architecture.md#model-binding)."""

    spec: str  # the spec string the user gave, e.g. "ViT-B-32:laion2b_s34b_b79k"
    fingerprint: str  # spec + weights hash + dim; equal fingerprints = same vector space
    dim: int  # embedding width D


@dataclass(frozen=True)
class ItemRecord:
    """One row of ``items``: a file the catalog knows, indexed or failed."""

    id: int
    path: str  # absolute path as the indexer saw it
    root_id: int | None  # the root it was found under (None if added outside a root)
    kind: MediaKind
    size: int  # bytes
    mtime_ns: int  # st_mtime_ns at indexing time
    content_hash: str | None  # partial content hash, recognises moves and copies
    status: str  # "ok" | "failed"
    error: str | None  # why it failed (or a warning for an ok item)
    width: int | None
    height: int | None
    duration: float | None  # seconds, videos only
    frame_count: int | None  # number of stored frame vectors (videos), None for images
    indexed_at: float  # unix time of the write

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> ItemRecord:
        """The record of an ``ITEM_COLUMNS`` row. A bulk read builds one per row: this
        skips the frozen ``__init__``'s per-field ``object.__setattr__`` (2-3× faster; the
        same record)."""
        record = object.__new__(cls)
        record.__dict__.update(zip(_ITEM_FIELDS, row, strict=True))
        return record


# Column order of ItemRecord, used by every SELECT that builds one.
ITEM_COLUMNS = (
    "id, path, root_id, kind, size, mtime_ns, content_hash, status, error, "
    "width, height, duration, frame_count, indexed_at"
)
_ITEM_FIELDS = tuple(f.name for f in fields(ItemRecord))  # the same order (tested)


@dataclass(frozen=True)
class TextRead:
    """The text one reader found in one item (``texts`` rows plus its ``text_runs`` row).

    source: what produced the text: "ocr" (read from the picture); other sources (captions)
        use their own name.
    reader: the reader and its settings (`TextReader.name`), so a different one re-reads.
    frames: True when a video's sampled frames were read (``rows`` then carry their times).
    rows: (t, text) pairs; t is None for an image, a frame's time in seconds for a video.
        Empty when the item was read and holds no text.
    """

    source: str
    reader: str
    frames: bool = False
    rows: tuple[tuple[float | None, str], ...] = ()


@dataclass(frozen=True)
class TextWrite:
    """The text read in an already indexed item (nothing encoded); ``text`` None when the
    reader failed on it (it is tried again next run)."""

    item_id: int
    path: str
    kind: str
    text: TextRead | None


@dataclass
class ItemWrite:
    """What ingest hands over for one file (see ``Catalog.write_items``)."""

    path: str
    root_id: int | None
    kind: MediaKind
    size: int
    mtime_ns: int
    content_hash: str | None
    status: str  # "ok" | "failed"
    error: str | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    vectors: np.ndarray | None = None  # (n, D) float32/float16; None for failed items
    # (n,) float64 seconds; NaN marks the item-level vector (image vector or a video's
    # meanP vector); None means ``vectors`` is one item-level vector (images).
    timestamps: np.ndarray | None = None
    # Text read from the file in the same run (OCR), stored with its vectors; None = not read.
    text: TextRead | None = None
    # Videos: shot boundaries found while decoding, the cut times (s) inside the video
    # (empty: one shot); None: not known.
    cuts: np.ndarray | None = None
    taken: CaptureTime | None = None  # when it was taken (clipsearch.media.capture_time)


@dataclass(frozen=True)
class VectorTable:
    """Every vector row of the catalog, loaded in one consistent snapshot."""

    ids: np.ndarray  # (N,) int64 vector-row ids, ascending
    item_ids: np.ndarray  # (N,) int64
    timestamps: np.ndarray  # (N,) float64, NaN for item-level vectors
    vectors: np.ndarray  # (N, D) float16
    generation: int = -1  # catalog generation the snapshot was read at

    def __len__(self) -> int:
        return len(self.ids)


def bad_width(dim: int) -> LibraryError:
    return LibraryError(
        f"the catalog holds vectors that are not {dim}-d float16 rows: it is damaged. "
        "Move catalog.sqlite aside and index your folders again."
    )


def encode_vectors(vectors: np.ndarray) -> list[bytes]:
    """(n, D) float array -> n little-endian float16 blobs of 2·D bytes each."""
    import numpy as np

    a = np.ascontiguousarray(vectors, dtype=VECTOR_DTYPE)  # (n, D)
    raw = a.tobytes()
    step = 2 * a.shape[1]
    return [raw[i : i + step] for i in range(0, len(raw), step)]


def decode_vectors(blobs: list[bytes] | tuple[bytes, ...], dim: int) -> np.ndarray:
    """n blobs -> (n, D) native, writable float16. Raises LibraryError on a wrong blob size."""
    import numpy as np

    raw = b"".join(blobs)
    if len(raw) != 2 * dim * len(blobs):
        raise bad_width(dim)
    a = np.frombuffer(raw, dtype=VECTOR_DTYPE).reshape(len(blobs), dim)  # (n, D)
    return a.astype(np.float16)  # a copy: frombuffer views are read-only
