"""Moment retrieval: find the moment a query describes, measured as the field measures it.

Datasets (``load_moments``):

- **Charades-STA** (Gao et al. 2017): lines ``VIDEO START END##sentence``.
- **QVHighlights** (Lei et al. 2021): JSONL rows with ``qid``, ``query``, ``vid`` and
  ``relevant_windows`` ``[[start, end], ...]`` (the test split hides its windows).
- **Picture queries**: a TSV with columns ``video, start, end, image`` (a header row is
  optional; image paths are relative to the TSV's folder), e.g. the synthetic moment sets.

Video ids name files in the videos folder: ``ID`` itself or ``ID`` plus a video extension.

Metrics: R1@IoU m — the percentage of queries whose first predicted moment overlaps a
ground-truth window with temporal IoU ≥ m (m = 0.3, 0.5, 0.7; with several ground-truth
windows, as QVHighlights has, the best-overlapping one counts, as in Moment-DETR's
evaluation) — and mIoU, the mean of that IoU.

Two settings, both reported:

- **given the video** (the Charades-STA / QVHighlights protocol): the query's own video is
  known; only the moment is predicted.
- **corpus**: the query is searched among all the dataset's videos, as ``clipsearch
  search --kind video`` does; the first video's first moment is the prediction, worth 0 if
  the video is wrong. One row per pooling method, with the right-video-first rate.

Baselines, computed in the same run from the same frame scores: the **whole video**, and a
**fixed window around the best frame** (as long as the dataset's median ground-truth
window, centred on the best-scoring frame, shifted to fit inside the video).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from clipsearch.errors import DatasetError, UsageError
from clipsearch.eval.choices import MomentFormat

if TYPE_CHECKING:
    from clipsearch.library import Library

MOMENT_FORMATS: tuple[MomentFormat, ...] = ("auto", "charades", "qvhighlights", "pictures")
IOU_THRESHOLDS = (0.3, 0.5, 0.7)
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")
Window = tuple[float, float]
ProgressCallback = Callable[[str, int, int], None]


@dataclass(frozen=True)
class MomentQuery:
    """One query and where its moment is. Exactly one of ``text`` / ``image`` is set."""

    qid: str
    video: str  # the video id as the annotations write it
    windows: tuple[Window, ...]  # ground truth, seconds (at least one)
    text: str | None = None
    image: str | None = None  # absolute path of a picture query


@dataclass
class MomentSkips:
    """What the loader left out, and why."""

    missing_videos: list[str] = field(default_factory=list)  # video ids with no file
    missing_images: list[str] = field(default_factory=list)
    bad_windows: int = 0  # end <= start, negative times
    without_windows: int = 0  # rows with no ground truth (e.g. a hidden test split)

    def to_dict(self) -> dict[str, object]:
        return {
            "missing_videos": len(self.missing_videos),
            "missing_videos_examples": self.missing_videos[:5],
            "missing_images": len(self.missing_images),
            "missing_images_examples": self.missing_images[:5],
            "bad_windows": self.bad_windows,
            "without_windows": self.without_windows,
        }


@dataclass
class MomentDataset:
    name: str
    queries: list[MomentQuery]
    videos: dict[str, str]  # video id -> absolute path of its file
    skipped: MomentSkips


# --- loading --------------------------------------------------------------------------------
def load_moments(
    annotations: str | Path, videos_dir: str | Path, *, fmt: MomentFormat = "auto"
) -> MomentDataset:
    """Read moment annotations and find their videos.

    fmt: ``charades``, ``qvhighlights``, ``pictures``, or ``auto`` (by suffix: .jsonl/.json
    QVHighlights, .tsv pictures, else Charades-STA).
    Raises:
        DatasetError: unreadable or malformed annotations, or no usable query at all.
        UsageError: unknown format.
    """
    path, root = Path(annotations), Path(videos_dir)
    if fmt not in MOMENT_FORMATS:
        raise UsageError(f"unknown moment format {fmt!r}; use one of {', '.join(MOMENT_FORMATS)}")
    if not path.is_file():
        raise DatasetError(f"annotations not found: {path}")
    if not root.is_dir():
        raise DatasetError(f"videos folder not found: {root}")
    if fmt == "auto":
        suffix = path.suffix.lower()
        fmt = {".jsonl": "qvhighlights", ".json": "qvhighlights", ".tsv": "pictures"}.get(
            suffix, "charades"
        )
    skipped = MomentSkips()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read {path}: {e}") from e
    reader = {"charades": _charades, "qvhighlights": _qvhighlights, "pictures": _pictures}[fmt]
    rows = reader(text, path, skipped)
    videos: dict[str, str] = {}
    queries = []
    for q in rows:
        if q.video not in videos:
            found = _video_file(root, q.video)
            if found is None:
                if q.video not in skipped.missing_videos:
                    skipped.missing_videos.append(q.video)
                continue
            videos[q.video] = found
        queries.append(q)
    if not queries:
        why = (
            f"; e.g. no video file for {skipped.missing_videos[0]!r}"
            if skipped.missing_videos
            else ""
        )
        raise DatasetError(f"no usable query in {path} (format {fmt}){why}")
    return MomentDataset(f"{path.stem} ({fmt})", queries, videos, skipped)


def _video_file(root: Path, video_id: str) -> str | None:
    candidates = [root / video_id, *(root / (video_id + ext) for ext in VIDEO_EXTENSIONS)]
    for c in candidates:
        if c.is_file():
            return str(c.resolve())
    return None


def _window(start: object, end: object, where: str, skipped: MomentSkips) -> Window | None:
    try:
        a, b = float(start), float(end)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: start and end must be numbers (seconds)") from None
    if not (np.isfinite(a) and np.isfinite(b)) or a < 0 or b <= a:
        skipped.bad_windows += 1
        return None
    return (a, b)


def _charades(text: str, path: Path, skipped: MomentSkips) -> list[MomentQuery]:
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        head, sep, sentence = line.partition("##")
        parts = head.split()
        if not sep or len(parts) != 3 or not sentence.strip():
            raise DatasetError(
                f"{path}:{n}: expected 'VIDEO START END##sentence' (Charades-STA), got {line!r}"
            )
        w = _window(parts[1], parts[2], f"{path}:{n}", skipped)
        if w is not None:
            out.append(MomentQuery(f"{n}", parts[0], (w,), text=sentence.strip()))
    return out


def _qvhighlights(text: str, path: Path, skipped: MomentSkips) -> list[MomentQuery]:
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            vid, query = str(row["vid"]), str(row["query"])
        except (ValueError, KeyError, TypeError) as e:
            raise DatasetError(
                f"{path}:{n}: expected a QVHighlights JSON row with vid, query and "
                f"relevant_windows ({e})"
            ) from None
        raw = row.get("relevant_windows")
        if not raw:
            skipped.without_windows += 1
            continue
        try:
            windows = [_window(a, b, f"{path}:{n}", skipped) for a, b in raw]
        except (TypeError, ValueError):
            raise DatasetError(
                f"{path}:{n}: relevant_windows must be [[start, end], ...]"
            ) from None
        windows = [w for w in windows if w is not None]
        if windows:
            out.append(MomentQuery(str(row.get("qid", n)), vid, tuple(windows), text=query))
    if not out and skipped.without_windows:
        raise DatasetError(
            f"{path}: no row has relevant_windows (QVHighlights hides them in its test split; "
            "use the val split)"
        )
    return out


def _pictures(text: str, path: Path, skipped: MomentSkips) -> list[MomentQuery]:
    rows = [r for r in csv.reader(text.splitlines(), delimiter="\t") if any(c.strip() for c in r)]
    if (
        rows
        and rows[0]
        and [c.strip().lower() for c in rows[0][:4]]
        == [
            "video",
            "start",
            "end",
            "image",
        ]
    ):
        rows = rows[1:]
    out = []
    for n, row in enumerate(rows, start=1):
        if len(row) < 4:
            raise DatasetError(
                f"{path}: row {n}: expected video, start, end, image (tab-separated)"
            )
        video, start, end, image = (c.strip() for c in row[:4])
        w = _window(start, end, f"{path}: row {n}", skipped)
        picture = Path(image) if Path(image).is_absolute() else path.parent / image
        if not picture.is_file():
            skipped.missing_images.append(image)
            continue
        if w is not None:
            out.append(MomentQuery(f"{n}", video, (w,), image=str(picture.resolve())))
    return out


# --- metrics --------------------------------------------------------------------------------
def temporal_iou(pred: Window, windows: Sequence[Window]) -> float:
    """IoU of the predicted [start, end] with the best-overlapping ground-truth window."""
    best = 0.0
    for a, b in windows:
        inter = min(pred[1], b) - max(pred[0], a)
        union = max(pred[1], b) - min(pred[0], a)
        if inter > 0 and union > 0:
            best = max(best, inter / union)
    return best


@dataclass(frozen=True)
class MomentMetrics:
    """R1@IoU (percent) at each threshold, mIoU, and for corpus rows the right-video rate."""

    n: int
    recall: dict[float, float]
    miou: float
    video_r1: float | None = None  # percent of queries whose own video ranked first

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"n": self.n, "mIoU": round(self.miou, 4)}
        out.update({f"R1@{m:g}": round(v, 2) for m, v in self.recall.items()})
        if self.video_r1 is not None:
            out["video_R1"] = round(self.video_r1, 2)
        return out


def moment_metrics(
    ious: Sequence[float], video_hits: Sequence[bool] | None = None
) -> MomentMetrics:
    """Metrics from per-query IoUs (0 for a wrong video) and, optionally, video hits."""
    x = np.asarray(ious, dtype=np.float64)
    if len(x) == 0:
        raise UsageError("no query to score")
    recall = {m: float(100.0 * np.mean(x >= m - 1e-9)) for m in IOU_THRESHOLDS}
    hits = None if video_hits is None else float(100.0 * np.mean(np.asarray(video_hits)))
    return MomentMetrics(len(x), recall, float(x.mean()), hits)


def best_frame_window(
    timestamps: np.ndarray, sims: np.ndarray, *, duration: float, width: float
) -> Window:
    """Baseline: a ``width``-second window centred on the best frame, inside [0, duration]."""
    t = float(np.asarray(timestamps)[int(np.argmax(sims))])
    width = min(width, duration)
    start = min(max(0.0, t - width / 2), duration - width)
    return (start, start + width)


# --- the run --------------------------------------------------------------------------------
@dataclass(frozen=True)
class MomentRun:
    label: str  # a pooling name, or a baseline
    setting: Literal["corpus", "given video"]
    metrics: MomentMetrics


@dataclass
class MomentReport:
    dataset: str
    model: str
    sampler: str
    n_videos: int
    n_queries: int
    window_s: float  # width of the best-frame-window baseline
    runs: list[MomentRun]
    skipped: MomentSkips
    seconds: dict[str, float] = field(default_factory=dict)
    precision: str | None = None  # the weights' precision the numbers were measured in
    runtime: str | None = None  # what ran the model, e.g. "torch 2.14.1 on cpu"

    def run(self, label: str, setting: str) -> MomentRun:
        return next(r for r in self.runs if r.label == label and r.setting == setting)

    def to_dict(self) -> dict[str, object]:
        return {
            "task": "moments",
            "dataset": self.dataset,
            "model": self.model,
            "precision": self.precision,
            "runtime": self.runtime,
            "sampler": self.sampler,
            "n_videos": self.n_videos,
            "n_queries": self.n_queries,
            "window_s": round(self.window_s, 3),
            "skipped": self.skipped.to_dict(),
            "seconds": self.seconds,
            "runs": [
                {"label": r.label, "setting": r.setting, **r.metrics.to_dict()} for r in self.runs
            ],
        }


WHOLE_VIDEO = "whole video"
FRAME_WINDOW = "best-frame window"


@dataclass(frozen=True)
class _Video:
    item_id: int
    times: np.ndarray  # (F,)
    vectors: np.ndarray  # (F, D)
    duration: float
    shots: list[tuple[float, float]] | None

    def moment(self, q: np.ndarray) -> Window:
        from clipsearch.search.moments import localize

        m = localize(self.times, self.vectors @ q, duration=self.duration, shots=self.shots)
        return (float(m.start), float(m.end))

    def frame_window(self, q: np.ndarray, width: float) -> Window:
        sims = self.vectors @ q
        return best_frame_window(self.times, sims, duration=self.duration, width=width)


def evaluate_moments(
    library: Library,
    dataset: MomentDataset,
    *,
    poolings: Sequence[str] = ("peak",),
    sampler: str = "auto",
    progress: ProgressCallback | None = None,
) -> MomentReport:
    """Index the dataset's videos into ``library`` (incrementally) and score every query.

    Videos are ranked with the search engine's pooling (`pool_scores_batch`, at each
    method's default temperature, as `clipsearch search` ranks them) and moments found
    with its localisation, on the vectors and shot boundaries stored in the catalog. The
    right video counts as first when no other video scores strictly higher (the rank
    convention of docs/eval.md). The first pooling is the one whose top video the corpus
    baselines use.
    Raises: as `Library.index`; DatasetError if none of the videos could be indexed.
    """
    from clipsearch.eval.runner import encoder_precision, encoder_runtime
    from clipsearch.ingest import IndexOptions
    from clipsearch.search.video import FrameSets, pool_scores_batch

    report = progress or (lambda stage, done, total: None)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    folders = sorted({str(Path(p).parent) for p in dataset.videos.values()})
    library.index(folders, options=IndexOptions(video_sampler=sampler))
    seconds["index"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    videos = _indexed_videos(library, dataset)
    if not videos:
        raise DatasetError(
            "none of the dataset's videos could be indexed (see `clipsearch status`)"
        )
    names = sorted(videos)
    position = {v: i for i, v in enumerate(names)}
    sets = FrameSets.from_list([videos[v].vectors for v in names])
    queries = [q for q in dataset.queries if q.video in videos]
    vectors = _embed(library, queries, report)
    seconds["embed"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    window = float(np.median([b - a for q in queries for a, b in q.windows]))
    ious: dict[tuple[str, str], list[float]] = {}
    hits: dict[str, list[bool]] = {p: [] for p in poolings}
    for i, (q, vec) in enumerate(zip(queries, vectors, strict=True)):
        own = videos[q.video]
        found = own.moment(vec)
        given = {
            "moments": found,
            WHOLE_VIDEO: (0.0, own.duration),
            FRAME_WINDOW: own.frame_window(vec, window),
        }
        for label, span in given.items():
            ious.setdefault((label, "given video"), []).append(temporal_iou(span, q.windows))
        for p in poolings:
            scores = pool_scores_batch(vec[None, :], sets, p)[0]  # (V,)
            right = bool(scores[position[q.video]] >= scores.max())
            top = q.video if right else names[int(np.argmax(scores))]
            hits[p].append(right)
            ious.setdefault((p, "corpus"), []).append(
                temporal_iou(found, q.windows) if right else 0.0
            )
            if p == poolings[0]:
                first = videos[top]
                corpus = {
                    WHOLE_VIDEO: (0.0, first.duration),
                    FRAME_WINDOW: first.frame_window(vec, window),
                }
                for label, span in corpus.items():
                    iou = temporal_iou(span, q.windows) if right else 0.0
                    ious.setdefault((label, "corpus"), []).append(iou)
        report("score", i + 1, len(queries))
    seconds["score"] = time.perf_counter() - t0
    runs = []
    for (label, setting), values in ious.items():
        video_hits = None
        if setting == "corpus":
            video_hits = hits.get(label, hits[poolings[0]])
        runs.append(MomentRun(label, setting, moment_metrics(values, video_hits)))
    runs.sort(key=lambda r: (r.setting != "corpus", r.label in (WHOLE_VIDEO, FRAME_WINDOW)))
    binding = library.catalog.model_binding()
    return MomentReport(
        dataset=dataset.name,
        model=binding.spec if binding else "?",
        sampler=sampler,
        n_videos=len(names),
        n_queries=len(queries),
        window_s=window,
        runs=runs,
        skipped=dataset.skipped,
        seconds={k: round(v, 2) for k, v in seconds.items()},
        precision=encoder_precision(library.encoder),
        runtime=encoder_runtime(library.encoder),
    )


def _indexed_videos(library: Library, dataset: MomentDataset) -> dict[str, _Video]:
    """The dataset's videos that are in the catalog with frames, by video id."""
    from clipsearch.search.moments import shots_from_cuts

    catalog = library.catalog
    records = {}
    for vid, path in dataset.videos.items():
        rec = catalog.item_by_path(path)
        if rec is not None and rec.status == "ok" and rec.kind == "video":
            records[vid] = rec
    frames = catalog.frames([r.id for r in records.values()])
    cuts = catalog.cuts([r.id for r in records.values()])
    out = {}
    for vid, rec in records.items():
        if rec.id not in frames or not len(frames[rec.id][0]):
            continue
        ts, vecs = frames[rec.id]
        duration = float(rec.duration) if rec.duration else float(ts[-1])
        shots = shots_from_cuts(cuts[rec.id], duration) if rec.id in cuts else None
        out[vid] = _Video(rec.id, ts, vecs, duration, shots)
    return out


def _embed(
    library: Library, queries: Sequence[MomentQuery], report: ProgressCallback
) -> np.ndarray:
    """(Q, D) query vectors: texts in batches, pictures one by one."""
    encoder = library.encoder
    out = np.zeros((len(queries), encoder.dim), dtype=np.float32)
    texts = [i for i, q in enumerate(queries) if q.text is not None]
    for lo in range(0, len(texts), 256):
        chunk = texts[lo : lo + 256]
        out[chunk] = encoder.encode_texts([queries[i].text for i in chunk])
        report("embed", lo + len(chunk), len(queries))
    for n, i in enumerate([i for i, q in enumerate(queries) if q.image is not None]):
        out[i] = library.embed_query(image=queries[i].image)
        report("embed", len(texts) + n + 1, len(queries))
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def moments_markdown(report: MomentReport) -> str:
    """The report as a Markdown table: corpus rows, then given-the-video rows."""
    lines = [
        f"# Moments: {report.dataset}",
        "",
        f"model `{report.model}` · {report.n_queries} queries · {report.n_videos} videos · "
        f"frames `{report.sampler}` · best-frame window {report.window_s:.1f} s",
        "",
        f"precision {report.precision or 'unknown'} · runtime {report.runtime or 'unknown'}",
        "",
        "| setting | scoring | right video first | "
        + " | ".join(f"R1@{m:g}" for m in IOU_THRESHOLDS)
        + " | mIoU |",
        "|---|---|---|" + "---|" * len(IOU_THRESHOLDS) + "---|",
    ]
    for run in report.runs:
        m = run.metrics
        video = f"{m.video_r1:.1f}" if m.video_r1 is not None else "(given)"
        recall = " | ".join(f"{m.recall[t]:.1f}" for t in IOU_THRESHOLDS)
        lines.append(f"| {run.setting} | {run.label} | {video} | {recall} | {m.miou:.3f} |")
    return "\n".join(lines) + "\n"
