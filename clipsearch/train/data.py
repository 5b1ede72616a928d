"""Training pairs: read (media, caption) pairs from the formats users have, split them.

Sources (:func:`read_pairs`):
- a pairs file: CSV/TSV/JSONL of (image path, caption) with configurable column names,
  a Karpathy-split JSON (its ``train`` split) or an MSR-VTT csv; read by
  ``clipsearch.eval.datasets.load_retrieval`` so training and evaluation agree on
  formats and on skip rules (missing media, empty captions, duplicate pairs);
- a folder of images with ``.txt`` sidecar captions (``cat.jpg`` + ``cat.txt``; each
  non-empty line of the sidecar is one caption);
- webdataset shards (``.tar`` files as img2dataset writes them: ``KEY.jpg`` +
  ``KEY.txt`` members). Read with the standard-library ``tarfile``; only member headers
  are scanned up front, pixels are read by seeking into the shard when needed;
- video-caption pairs: a folder of videos plus a captions file, either pairs
  (CSV/JSONL with a video column) or an MSR-VTT-style JSON
  (``{"videos": [{"video_id", "split"}], "sentences": [{"video_id", "caption"}]}``,
  filtered to ``split``).

The train/validation split (:func:`split_pairs`) is by *media*, so no image has captions
on both sides, and deterministic given the seed.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipsearch.errors import DatasetError
from clipsearch.media.scan import MediaKind

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")
_TAR_IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "webp"})
_TAR_CAPTION_EXTS = ("txt", "caption")


@dataclass(frozen=True)
class TarMember:
    """An image stored inside a tar shard, read by seeking to its data (no extraction)."""

    shard: str
    offset: int  # byte offset of the member's data in the shard
    size: int
    name: str

    def read(self) -> bytes:
        with open(self.shard, "rb") as f:
            f.seek(self.offset)
            data = f.read(self.size)
        if len(data) != self.size:
            raise OSError(f"{self.shard}: member {self.name} is truncated")
        return data

    def __str__(self) -> str:
        return f"{self.shard}:{self.name}"


MediaSource = str | TarMember
"""An absolute file path, or an image inside a tar shard."""


@dataclass
class SkipCounts:
    """What reading the pairs left out (reported before training starts)."""

    missing_media: int = 0  # media named by the annotations but absent on disk
    missing_examples: list[str] = field(default_factory=list)
    empty_captions: int = 0
    duplicate_pairs: int = 0
    media_without_captions: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "missing_media": self.missing_media,
            "missing_examples": self.missing_examples[:5],
            "empty_captions": self.empty_captions,
            "duplicate_pairs": self.duplicate_pairs,
            "media_without_captions": self.media_without_captions,
        }


@dataclass
class PairData:
    """Media and their captions.

    media: one source per media item. captions: every caption. caption_media: (T,)
    int64, the media index of each caption (a media may have several captions).
    """

    kind: MediaKind
    media: list[MediaSource]
    captions: list[str]
    caption_media: np.ndarray
    skipped: SkipCounts = field(default_factory=SkipCounts)

    @property
    def n_media(self) -> int:
        return len(self.media)

    def subset(self, media_indices: Sequence[int]) -> PairData:
        """The given media (in that order) with all their captions, re-indexed."""
        media_indices = np.asarray(media_indices, dtype=np.int64)
        new_index = np.full(len(self.media), -1, dtype=np.int64)
        new_index[media_indices] = np.arange(media_indices.size)
        keep = new_index[self.caption_media] >= 0
        return PairData(
            kind=self.kind,
            media=[self.media[i] for i in media_indices],
            captions=[c for c, k in zip(self.captions, keep, strict=True) if k],
            caption_media=new_index[self.caption_media[keep]],
            skipped=self.skipped,
        )


class _Collector:
    """Groups (media, caption) rows; drops empty captions and exact duplicates."""

    def __init__(self, kind: MediaKind) -> None:
        self.kind = kind
        self.index: dict[str, int] = {}
        self.media: list[MediaSource] = []
        self.captions: list[str] = []
        self.owner: list[int] = []
        self.seen: set[tuple[int, str]] = set()
        self.skipped = SkipCounts()

    def missing(self, name: str) -> None:
        self.skipped.missing_media += 1
        if len(self.skipped.missing_examples) < 5:
            self.skipped.missing_examples.append(name)

    def add(self, key: str, source: MediaSource, captions: Sequence[str]) -> None:
        texts = [c.strip() for c in captions if isinstance(c, str)]
        self.skipped.empty_captions += sum(1 for t in texts if not t) + (len(captions) - len(texts))
        texts = [t for t in texts if t]
        if key not in self.index:
            if not texts:
                self.skipped.media_without_captions += 1
                return
            self.index[key] = len(self.media)
            self.media.append(source)
        m = self.index[key]
        for t in texts:
            if (m, t) in self.seen:
                self.skipped.duplicate_pairs += 1
                continue
            self.seen.add((m, t))
            self.captions.append(t)
            self.owner.append(m)

    def build(self, what: str) -> PairData:
        if not self.captions:
            hint = (
                f" ({self.skipped.missing_media} media missing, e.g. "
                f"{self.skipped.missing_examples[0]!r})"
                if self.skipped.missing_media
                else ""
            )
            raise DatasetError(f"{what}: no (media, caption) pair to train on{hint}")
        return PairData(
            kind=self.kind,
            media=self.media,
            captions=self.captions,
            caption_media=np.asarray(self.owner, dtype=np.int64),
            skipped=self.skipped,
        )


def read_pairs_file(
    path: str | Path,
    *,
    media_root: str | Path | None = None,
    kind: MediaKind = "image",
    split: str = "train",
    media_column: str | None = None,
    caption_column: str | None = None,
) -> PairData:
    """CSV/TSV/JSONL pairs, Karpathy JSON (``split``) or MSR-VTT csv -> :class:`PairData`.

    media_root: folder the media paths are relative to (default: the file's folder).
    Raises DatasetError (missing file, unknown format or column, nothing left).
    """
    from clipsearch.eval.datasets import load_retrieval

    ds = load_retrieval(
        path,
        media_root,
        kind=kind,
        split=split,
        media_column=media_column,
        caption_column=caption_column,
    )
    s = ds.skipped
    return PairData(
        kind=ds.kind,
        media=list(ds.media),
        captions=list(ds.captions),
        caption_media=np.asarray(ds.text_to_media, dtype=np.int64),
        skipped=SkipCounts(
            missing_media=len(s.missing_media),
            missing_examples=list(s.missing_media[:5]),
            empty_captions=s.empty_captions,
            duplicate_pairs=s.duplicate_pairs,
            media_without_captions=s.media_without_captions,
        ),
    )


def read_sidecar_folder(root: str | Path) -> PairData:
    """Images under ``root`` (recursively) with ``.txt`` sidecars -> :class:`PairData`.

    An image without a sidecar, or with an empty one, is counted in
    ``media_without_captions``. Raises DatasetError if the folder is missing or empty.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    collector = _Collector("image")
    for image in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
        sidecar = image.with_suffix(".txt")
        try:
            lines = sidecar.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            lines = []
        collector.add(str(image.resolve()), str(image.resolve()), lines)
    return collector.build(str(root))


def read_shards(shards: Sequence[str | Path]) -> PairData:
    """Webdataset ``.tar`` shards (``KEY.jpg`` + ``KEY.txt``) -> :class:`PairData`.

    A sample without an image is counted as missing media; one without a caption in
    ``media_without_captions``. Raises DatasetError on a missing or unreadable shard.
    """
    if not shards:
        raise DatasetError("no shard given")
    collector = _Collector("image")
    for shard in shards:
        shard = Path(shard)
        images: dict[str, TarMember] = {}
        texts: dict[str, str] = {}
        try:
            with tarfile.open(shard) as tar:
                for member in tar:
                    if not member.isfile() or "." not in member.name.rpartition("/")[2]:
                        continue
                    key, ext = _split_key(member.name)
                    ext = ext.lower()
                    if ext in _TAR_IMAGE_EXTS:
                        images[key] = TarMember(
                            str(shard.resolve()), member.offset_data, member.size, member.name
                        )
                    elif ext in _TAR_CAPTION_EXTS:
                        f = tar.extractfile(member)
                        if f is not None:
                            texts[key] = f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            raise DatasetError(f"{shard}: shard does not exist") from None
        except (tarfile.TarError, OSError) as e:
            raise DatasetError(f"{shard}: unreadable tar shard ({e})") from e
        for key in sorted(images.keys() | texts.keys()):
            if key not in images:
                collector.missing(f"{shard.name}:{key}")
                continue
            collector.add(f"{shard}:{key}", images[key], texts.get(key, "").splitlines())
    return collector.build(", ".join(str(s) for s in shards[:3]))


def _split_key(name: str) -> tuple[str, str]:
    """``dir/00001.jpg`` -> (``dir/00001``, ``jpg``): the key ends at the base name's first dot."""
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext


def read_video_pairs(
    videos: str | Path,
    captions: str | Path,
    *,
    split: str = "train",
    media_column: str | None = None,
    caption_column: str | None = None,
) -> PairData:
    """Video-caption pairs: a folder of videos plus a captions file -> :class:`PairData`.

    captions: CSV/JSONL pairs (video path or id column), or an MSR-VTT-style JSON with
    ``sentences`` (and optionally ``videos`` with a ``split`` field, filtered to
    ``split``). A video id without extension resolves to ``<videos>/<id>.mp4`` (or
    .webm/.mkv/.avi/.mov/.m4v). Raises DatasetError on a malformed file.
    """
    videos, captions = Path(videos), Path(captions)
    if not videos.is_dir():
        raise DatasetError(f"{videos}: not a folder of videos")
    if captions.suffix.lower() != ".json":
        return read_pairs_file(
            captions,
            media_root=videos,
            kind="video",
            split=split,
            media_column=media_column,
            caption_column=caption_column,
        )
    try:
        data = json.loads(captions.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{captions}: file does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{captions}: not valid JSON ({e})") from e
    sentences = data.get("sentences") if isinstance(data, dict) else None
    if not isinstance(sentences, list):
        raise DatasetError(
            f"{captions}: expected an MSR-VTT-style JSON with a 'sentences' list "
            "(or give a CSV/JSONL of video,caption pairs)"
        )
    wanted: set[str] | None = None
    listed = data.get("videos")
    if isinstance(listed, list) and any(isinstance(v, dict) and "split" in v for v in listed):
        wanted = {str(v.get("video_id")) for v in listed if v.get("split") == split}
        if not wanted:
            splits = sorted({str(v.get("split")) for v in listed if isinstance(v, dict)})
            raise DatasetError(
                f"{captions}: split {split!r} does not exist; available: {', '.join(splits)}"
            )
    grouped: dict[str, list[str]] = {}
    for s in sentences:
        if not isinstance(s, dict) or "video_id" not in s:
            raise DatasetError(f"{captions}: a sentence entry has no 'video_id'")
        vid = str(s["video_id"])
        if wanted is None or vid in wanted:
            grouped.setdefault(vid, []).append(s.get("caption", ""))
    collector = _Collector("video")
    for vid, caps in grouped.items():
        path = _resolve_video(videos, vid)
        if path is None:
            collector.missing(vid)
            continue
        collector.add(vid, path, caps)
    return collector.build(str(captions))


def _resolve_video(root: Path, video_id: str) -> str | None:
    p = root / video_id
    candidates = [p] if p.suffix else [p.with_name(p.name + ext) for ext in VIDEO_EXTENSIONS]
    for c in candidates:
        if c.is_file():
            return str(c.resolve())
    return None


def split_pairs(
    data: PairData, *, val_fraction: float, seed: int, max_val: int | None = None
) -> tuple[PairData, PairData | None]:
    """Split by media into (train, validation), deterministically for a seed.

    val_fraction: share of the media held out (0 disables validation -> (data, None)).
    max_val: cap on validation media (evaluation cost grows as n²).
    Raises DatasetError if fewer than 2 media would remain for training.
    """
    if not 0 <= val_fraction < 1:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = data.n_media
    n_val = round(val_fraction * n)
    if val_fraction > 0:
        n_val = max(n_val, 2)
    if max_val is not None:
        n_val = min(n_val, max_val)
    if n - n_val < 2:
        raise DatasetError(
            f"only {n} media with captions: too few to train on after holding out {n_val} "
            "for validation (add pairs or lower --val-fraction)"
        )
    if n_val == 0:
        return data, None
    order = np.random.default_rng(seed).permutation(n)
    val_idx = np.sort(order[:n_val])
    train_idx = np.sort(order[n_val:])
    return data.subset(train_idx), data.subset(val_idx)
