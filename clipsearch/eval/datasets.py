"""Evaluation datasets: the standard annotation formats read into one shape.

Retrieval formats (docs/eval.md#datasets):
- Karpathy-split JSON (Flickr30k, COCO): ``{"images": [{"filename", "filepath"?, "split",
  "sentences": [{"raw"}]}]}``; media path = root/filepath/filename (or root/filename).
- CSV or JSONL pairs: one (media, caption) per row, several rows per media grouped; in
  JSONL the caption may also be a list of captions.
- MSR-VTT 1k-A (``MSRVTT_JSFUSION_test.csv``: key,vid_key,video_id,sentence), one caption
  per video; videos are ``<root>/<video_id>.mp4`` (or .webm/.mkv/.avi/.mov).
- CLIP_benchmark's webdataset layout (``<root>/<split>/nshards.txt``, ``{0..n-1}.tar``,
  ``dataset_type.txt``, ``classnames.txt``, ``zeroshot_classification_templates.txt``),
  read with the standard-library ``tarfile`` (no dependency on the ``webdataset``
  package); image members are extracted once into ``extract_dir`` so every dataset is a
  list of file paths.
Classification formats: folder-per-class (class name = folder name, ``_`` → space) and
the webdataset layout.

Bad input, decided once for all formats:
- a media file that does not exist: skipped with its captions, counted and named in
  ``Skipped.missing_media``; evaluation continues on the rest;
- an empty (blank) caption: skipped and counted; a media left with no caption is dropped
  and counted;
- an exact duplicate (media, caption) pair: skipped and counted (it would count twice);
- the same media listed twice in a Karpathy split, a duplicate MSR-VTT ``key``, a split
  that does not exist, a file in no known format, or nothing left to evaluate:
  ``DatasetError`` naming the problem (the split error lists the available splits).
"""

from __future__ import annotations

import csv
import json
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clipsearch.errors import DatasetError
from clipsearch.eval.choices import DatasetFormat
from clipsearch.media.scan import MediaKind

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")
_MEDIA_COLUMNS = ("image", "media", "video", "filepath", "filename", "file", "path", "video_id")
_CAPTION_COLUMNS = ("caption", "text", "sentence", "title", "raw")
_MSRVTT_COLUMNS = {"key", "video_id", "sentence"}


@dataclass
class Skipped:
    """What a loader left out, and why (shown in the report)."""

    missing_media: list[str] = field(default_factory=list)  # ids as written in the annotations
    empty_captions: int = 0
    duplicate_pairs: int = 0
    media_without_captions: int = 0
    undecodable_media: list[str] = field(default_factory=list)  # filled by the embedder

    def to_dict(self) -> dict[str, object]:
        return {
            "missing_media": len(self.missing_media),
            "missing_media_examples": self.missing_media[:5],
            "empty_captions": self.empty_captions,
            "duplicate_pairs": self.duplicate_pairs,
            "media_without_captions": self.media_without_captions,
            "undecodable_media": len(self.undecodable_media),
            "undecodable_media_examples": self.undecodable_media[:5],
        }


@dataclass
class RetrievalDataset:
    """Media with their captions, ready to embed.

    media: absolute paths, one per media item. media_ids: the ids the annotation used.
    captions: every caption; text_to_media: (T,) int64, the media index of each caption.
    """

    name: str
    kind: MediaKind
    media: list[str]
    media_ids: list[str]
    captions: list[str]
    text_to_media: np.ndarray
    skipped: Skipped = field(default_factory=Skipped)

    def without_media(self, drop: Iterable[int]) -> RetrievalDataset:
        """A copy without the given media indices and their captions (re-indexed)."""
        drop_set = set(drop)
        if not drop_set:
            return self
        keep = [i for i in range(len(self.media)) if i not in drop_set]
        new_index = np.full(len(self.media), -1, dtype=np.int64)
        new_index[keep] = np.arange(len(keep))
        mask = new_index[self.text_to_media] >= 0
        return RetrievalDataset(
            name=self.name,
            kind=self.kind,
            media=[self.media[i] for i in keep],
            media_ids=[self.media_ids[i] for i in keep],
            captions=[c for c, m in zip(self.captions, mask, strict=True) if m],
            text_to_media=new_index[self.text_to_media[mask]],
            skipped=self.skipped,
        )


@dataclass
class ClassificationDataset:
    """Images with integer labels and the class names (and templates if the data has them)."""

    name: str
    media: list[str]
    labels: np.ndarray  # (N,) int64
    classnames: list[str]
    templates: list[str] | None = None
    empty_classes: list[str] = field(default_factory=list)
    skipped: Skipped = field(default_factory=Skipped)


# --- assembling --------------------------------------------------------------------------
class _PairCollector:
    """Groups (media id, caption) rows into a RetrievalDataset, applying the skip rules."""

    def __init__(self, resolve) -> None:
        self._resolve = resolve  # media id -> absolute path or None when missing
        self._index: dict[str, int] = {}
        self._missing: dict[str, None] = {}
        self.media: list[str] = []
        self.media_ids: list[str] = []
        self.captions: list[str] = []
        self.owner: list[int] = []
        self._seen: set[tuple[int, str]] = set()
        self.skipped = Skipped()
        self._empty_only: set[str] = set()

    def add(self, media_id: str, caption: object) -> None:
        media_id = str(media_id).strip()
        if not media_id:
            raise DatasetError("a row has an empty media id; every caption must name its media")
        text = caption.strip() if isinstance(caption, str) else ""
        if media_id in self._missing:
            return
        if media_id not in self._index:
            path = self._resolve(media_id)
            if path is None:
                self._missing[media_id] = None
                return
            if not text:
                self.skipped.empty_captions += 1
                self._empty_only.add(media_id)
                return
            self._index[media_id] = len(self.media)
            self.media.append(path)
            self.media_ids.append(media_id)
            self._empty_only.discard(media_id)
        if not text:
            self.skipped.empty_captions += 1
            return
        m = self._index[media_id]
        if (m, text) in self._seen:
            self.skipped.duplicate_pairs += 1
            return
        self._seen.add((m, text))
        self.captions.append(text)
        self.owner.append(m)

    def build(self, name: str, kind: MediaKind, source: Path) -> RetrievalDataset:
        self.skipped.missing_media = list(self._missing)
        self.skipped.media_without_captions = len(self._empty_only)
        if not self.captions:
            why = (
                f" ({len(self._missing)} media files missing, e.g. {next(iter(self._missing))!r}:"
                " check the media folder)"
                if self._missing
                else ""
            )
            raise DatasetError(f"{source}: no (media, caption) pair left to evaluate{why}")
        return RetrievalDataset(
            name=name,
            kind=kind,
            media=self.media,
            media_ids=self.media_ids,
            captions=self.captions,
            text_to_media=np.asarray(self.owner, dtype=np.int64),
            skipped=self.skipped,
        )


def _file_resolver(root: Path, *, kind: MediaKind):
    def resolve(media_id: str) -> str | None:
        p = Path(media_id)
        candidates = [p] if p.is_absolute() else [root / p]
        if kind == "video" and not p.suffix:
            candidates = [c.with_name(c.name + ext) for c in candidates for ext in VIDEO_EXTENSIONS]
        for c in candidates:
            if c.is_file():
                return str(c.resolve())
        return None

    return resolve


# --- retrieval loaders -------------------------------------------------------------------
def load_karpathy(
    annotations: str | Path, media_root: str | Path, *, split: str = "test"
) -> RetrievalDataset:
    """Karpathy-split JSON (Flickr30k, COCO) → RetrievalDataset for one split.

    Raises DatasetError if the JSON is not in that format, the split does not exist (the
    message lists the available ones) or a filename appears twice in the split.
    """
    path = Path(annotations)
    data = _read_json(path)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise DatasetError(f"{path}: not a Karpathy-split JSON (no top-level 'images' list)")
    splits = sorted({str(im.get("split")) for im in images if isinstance(im, dict)})
    chosen = [im for im in images if isinstance(im, dict) and im.get("split") == split]
    if not chosen:
        raise DatasetError(
            f"{path}: split {split!r} does not exist; available splits: {', '.join(splits)}"
        )
    root = Path(media_root)

    def resolve(media_id: str) -> str | None:
        for c in (root / media_id, root / Path(media_id).name):
            if c.is_file():
                return str(c.resolve())
        return None

    collector = _PairCollector(resolve)
    seen: set[str] = set()
    for im in chosen:
        if "filename" not in im:
            raise DatasetError(f"{path}: an image entry has no 'filename'")
        media_id = str(Path(str(im.get("filepath") or "")) / str(im["filename"]))
        if media_id in seen:
            raise DatasetError(f"{path}: {media_id!r} is listed twice in split {split!r}")
        seen.add(media_id)
        sentences = im.get("sentences") or []
        if not sentences:
            collector.add(media_id, "")
        for s in sentences:
            collector.add(media_id, s.get("raw", "") if isinstance(s, dict) else s)
    return collector.build(f"{path.stem}:{split}", "image", path)


def load_pairs(
    annotations: str | Path,
    media_root: str | Path | None = None,
    *,
    kind: MediaKind = "image",
    media_column: str | None = None,
    caption_column: str | None = None,
) -> RetrievalDataset:
    """CSV (with a header) or JSONL of (media, caption) rows → RetrievalDataset.

    media_root: folder the media column is relative to (default: the file's folder).
    media_column / caption_column: column names; by default the first of
    image/media/video/filepath/filename/file/path/video_id and caption/text/sentence/title/raw.
    Raises DatasetError on a missing column or an unreadable file.
    """
    path = Path(annotations)
    root = Path(media_root) if media_root is not None else path.parent
    rows = _read_rows(path)
    first = next(iter(rows), None)
    if first is None:
        raise DatasetError(f"{path}: no rows")
    mcol = _pick_column(path, first.keys(), media_column, _MEDIA_COLUMNS, "media")
    ccol = _pick_column(path, first.keys(), caption_column, _CAPTION_COLUMNS, "caption")
    collector = _PairCollector(_file_resolver(root, kind=kind))
    for row in rows:
        caption = row.get(ccol)
        for c in caption if isinstance(caption, list) else [caption]:
            collector.add(row.get(mcol) or "", c)
    return collector.build(path.stem, kind, path)


def load_msrvtt(annotations: str | Path, media_root: str | Path) -> RetrievalDataset:
    """MSR-VTT 1k-A test csv (``key,vid_key,video_id,sentence``) → video RetrievalDataset.

    Raises DatasetError if a column is missing or a ``key`` repeats. Rows of the same
    video_id are grouped as several captions of one video (the 1k-A file has one each).
    """
    path = Path(annotations)
    rows = _read_rows(path)
    if rows and not set(rows[0]) >= _MSRVTT_COLUMNS:
        raise DatasetError(
            f"{path}: an MSR-VTT csv needs the columns {sorted(_MSRVTT_COLUMNS)}, "
            f"found {sorted(rows[0])}"
        )
    collector = _PairCollector(_file_resolver(Path(media_root), kind="video"))
    keys: set[str] = set()
    for row in rows:
        key = row["key"]
        if key in keys:
            raise DatasetError(f"{path}: key {key!r} appears twice")
        keys.add(key)
        collector.add(row["video_id"] or "", row["sentence"])
    return collector.build(path.stem, "video", path)


def load_retrieval(
    annotations: str | Path,
    media_root: str | Path | None = None,
    *,
    kind: MediaKind = "image",
    fmt: DatasetFormat = "auto",
    split: str = "test",
    media_column: str | None = None,
    caption_column: str | None = None,
    extract_dir: str | Path | None = None,
) -> RetrievalDataset:
    """Load a retrieval dataset in any supported format (``fmt="auto"`` guesses it).

    Guessing: a folder is the webdataset layout; ``.json`` Karpathy; ``.jsonl`` pairs; a
    ``.csv`` with key,video_id,sentence columns MSR-VTT, any other ``.csv`` pairs.
    Raises DatasetError (file missing, unknown format, and the per-format errors).
    """
    path = Path(annotations)
    if not path.exists():
        raise DatasetError(f"{path}: annotation file does not exist")
    fmt = _guess_format(path) if fmt == "auto" else fmt
    root = Path(media_root) if media_root is not None else path.parent
    if fmt == "karpathy":
        return load_karpathy(path, root, split=split)
    if fmt == "msrvtt":
        return load_msrvtt(path, root)
    if fmt == "pairs":
        return load_pairs(
            path, root, kind=kind, media_column=media_column, caption_column=caption_column
        )
    if fmt == "wds":
        ds = load_webdataset(path, split=split, extract_dir=extract_dir)
        if not isinstance(ds, RetrievalDataset):
            raise DatasetError(f"{path}: a classification webdataset; use `eval classify`")
        return ds
    raise DatasetError(f"unknown dataset format {fmt!r}")


def _guess_format(path: Path) -> DatasetFormat:
    if path.is_dir():
        return "wds"
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "karpathy"
    if suffix == ".jsonl":
        return "pairs"
    if suffix in {".csv", ".tsv"}:
        rows = _read_rows(path, limit=1)
        return "msrvtt" if rows and set(rows[0]) >= _MSRVTT_COLUMNS else "pairs"
    raise DatasetError(
        f"{path}: cannot tell the format from the name; expected .json (Karpathy), .csv or "
        ".jsonl (pairs, MSR-VTT) or a webdataset folder"
    )


# --- classification loaders --------------------------------------------------------------
def load_class_folders(root: str | Path) -> ClassificationDataset:
    """Folder-per-class images (``root/<class>/<image>``) → ClassificationDataset.

    Class names are the folder names sorted, with ``_`` → space. Files whose extension is
    not an image's are ignored; a class folder with no image stays a class (a candidate
    label) and is listed in ``empty_classes``. Raises DatasetError if there is no class
    folder or no image at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (expected one sub-folder per class)")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DatasetError(f"{root}: no class sub-folders (expected root/<class>/<image>)")
    media: list[str] = []
    labels: list[int] = []
    empty: list[str] = []
    classnames = [f.name.replace("_", " ") for f in folders]
    for label, folder in enumerate(folders):
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        if not files:
            empty.append(classnames[label])
        media.extend(str(p.resolve()) for p in files)
        labels.extend([label] * len(files))
    if not media:
        raise DatasetError(f"{root}: the class folders hold no image files")
    return ClassificationDataset(
        name=root.name,
        media=media,
        labels=np.asarray(labels, dtype=np.int64),
        classnames=classnames,
        empty_classes=empty,
    )


def load_webdataset(
    root: str | Path, *, split: str = "test", extract_dir: str | Path | None = None
) -> RetrievalDataset | ClassificationDataset:
    """CLIP_benchmark's webdataset layout → a retrieval or classification dataset.

    ``dataset_type.txt`` says which ("retrieval"; absent or "classification" otherwise;
    "multilabel" is not supported). Samples are the tar members grouped by key (the path
    up to the first dot of the base name); images (webp/png/jpg/jpeg) are extracted into
    ``extract_dir`` (default ``<root>/.extracted/<split>``) once and reused.
    Raises DatasetError for a missing split (listing the available ones), a missing
    shard, a bad ``.cls`` label, or a multilabel dataset.
    """
    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        available = sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob("*.tar")))
        raise DatasetError(
            f"{root}: split {split!r} does not exist; available splits: "
            f"{', '.join(available) or '(none)'}"
        )
    dataset_type = _read_text(root / "dataset_type.txt", default="classification").strip().lower()
    if dataset_type == "multilabel":
        raise DatasetError(f"{root}: multilabel webdatasets are not supported")
    shards = _shards(split_dir)
    out_dir = Path(extract_dir) if extract_dir is not None else root / ".extracted" / split
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = _read_tar_samples(shards, out_dir)
    name = f"{root.name}:{split}"
    if dataset_type == "retrieval":
        collector = _PairCollector(lambda key: samples[key].get("image"))
        for key, sample in samples.items():
            lines = (sample.get("txt") or "").splitlines() or [""]
            for line in lines:
                collector.add(key, line)
        return collector.build(name, "image", root)
    classnames = [ln.strip() for ln in _read_text(root / "classnames.txt").splitlines()]
    templates_text = _read_text(root / "zeroshot_classification_templates.txt", default="")
    templates = [t.strip() for t in templates_text.splitlines() if t.strip()] or None
    media, labels = [], []
    skipped = Skipped()
    for key, sample in samples.items():
        if "image" not in sample:
            skipped.missing_media.append(key)
            continue
        try:
            label = int((sample.get("cls") or "").strip())
        except ValueError:
            raise DatasetError(f"{root}: sample {key!r} has no integer .cls label") from None
        if not 0 <= label < len(classnames):
            raise DatasetError(
                f"{root}: sample {key!r} has label {label}, but classnames.txt lists "
                f"{len(classnames)} classes"
            )
        media.append(sample["image"])
        labels.append(label)
    if not media:
        raise DatasetError(f"{root}: split {split!r} holds no images")
    return ClassificationDataset(
        name=name,
        media=media,
        labels=np.asarray(labels, dtype=np.int64),
        classnames=classnames,
        templates=templates,
        skipped=skipped,
    )


def _shards(split_dir: Path) -> list[Path]:
    n_file = split_dir / "nshards.txt"
    if n_file.is_file():
        try:
            n = int(n_file.read_text().strip())
        except ValueError:
            raise DatasetError(f"{n_file}: not a number") from None
        shards = [split_dir / f"{i}.tar" for i in range(n)]
    else:
        shards = sorted(split_dir.glob("*.tar"), key=lambda p: (len(p.stem), p.stem))
    missing = [str(s) for s in shards if not s.is_file()]
    if missing or not shards:
        raise DatasetError(f"{split_dir}: missing shards: {', '.join(missing) or 'no .tar files'}")
    return shards


def _read_tar_samples(shards: Sequence[Path], out_dir: Path) -> dict[str, dict[str, str]]:
    samples: dict[str, dict[str, str]] = {}
    image_exts = {"webp", "png", "jpg", "jpeg"}
    for shard_no, shard in enumerate(shards):
        try:
            with tarfile.open(shard) as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    base = member.name.rsplit("/", 1)[-1]
                    if "." not in base:
                        continue
                    stem, ext = base.split(".", 1)
                    prefix = member.name[: len(member.name) - len(base)]
                    key = f"{shard_no}/{prefix}{stem}"
                    sample = samples.setdefault(key, {})
                    ext = ext.lower()
                    f = tar.extractfile(member)
                    if f is None:
                        continue
                    if ext in image_exts:
                        dest = out_dir / f"{shard_no}-{prefix.replace('/', '_')}{stem}.{ext}"
                        if not dest.is_file() or dest.stat().st_size != member.size:
                            dest.write_bytes(f.read())
                        sample["image"] = str(dest.resolve())
                    elif ext in {"txt", "cls"}:
                        sample[ext] = f.read().decode("utf-8", errors="replace")
        except (tarfile.TarError, OSError) as e:
            raise DatasetError(f"{shard}: unreadable tar shard ({e})") from e
    return samples


# --- small readers -----------------------------------------------------------------------
def _read_json(path: Path) -> object:
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{path}: file does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from e


def _read_rows(path: Path, *, limit: int | None = None) -> list[dict]:
    """Rows of a CSV/TSV (header required) or JSONL file as dicts."""
    rows: list[dict] = []
    try:
        with path.open(encoding="utf-8", newline="") as f:
            if path.suffix.lower() == ".jsonl":
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise DatasetError(f"{path}:{lineno}: not valid JSON ({e})") from e
                    if not isinstance(row, dict):
                        raise DatasetError(f"{path}:{lineno}: expected a JSON object per line")
                    rows.append(row)
                    if limit and len(rows) >= limit:
                        break
            else:
                delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
                for row in csv.DictReader(f, delimiter=delimiter):
                    rows.append(row)
                    if limit and len(rows) >= limit:
                        break
    except FileNotFoundError:
        raise DatasetError(f"{path}: file does not exist") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e})") from e
    except csv.Error as e:
        raise DatasetError(f"{path}: malformed CSV ({e})") from e
    return rows


def _pick_column(path: Path, columns, wanted: str | None, defaults, what: str) -> str:
    columns = [c for c in columns if c is not None]
    if wanted is not None:
        if wanted not in columns:
            raise DatasetError(f"{path}: no column {wanted!r}; columns are {columns}")
        return wanted
    for name in defaults:
        if name in columns:
            return name
    raise DatasetError(
        f"{path}: cannot find the {what} column among {columns}; name it with "
        f"--{what}-column (tried {', '.join(defaults)})"
    )


def _read_text(path: Path, default: str | None = None) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if default is not None:
            return default
        raise DatasetError(f"{path}: file does not exist") from None
