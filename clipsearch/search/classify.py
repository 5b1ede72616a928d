"""Zero-shot classification of files and library items, and tags.

The classifier is CLIP's prompt ensemble (Radford et al. 2021 §3.1.4; built by
``clipsearch.search.zeroshot.build_classifier``): per label c,
``w_c = normalise(mean_τ normalise(enc_text(τ(c))))``. An image vector x gets cosines
``s_c = x · w_c`` and calibrated probabilities ``p = softmax(logit_scale · s)`` with the
model's own learned logit scale (100 for OpenAI CLIP). Videos are classified by their
pooled (CLIP4Clip meanP) vector, or per moment: each sampled frame is classified and runs of
frames with the same top label become moments.

Tags (``tag_items``): every label is a tag; an item carries tag c when s_c ≥ threshold.
A number is a cosine threshold in [−1, 1]. ``"auto"`` picks one threshold per label from
the library's own scores: Otsu's split (Otsu 1979) of the label's cosines into a low and a
high group, applied only when the scores really form two groups — the separability
η = σ²_between / σ²_total of the split must reach 0.8 (one bell curve gives η ≈ 0.64, a
uniform spread 0.75). A label whose scores are not two groups (it matches nothing, or
everything alike) tags no item and is reported. Auto needs at least 8 items.

Moderation policies (labels with thresholds, flags): clipsearch.search.moderation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipsearch.errors import MediaError, UsageError
from clipsearch.search.choices import AUTO_THRESHOLD
from clipsearch.search.templates import fill_template, resolve_templates
from clipsearch.search.zeroshot import build_classifier as _ensemble
from clipsearch.search.zeroshot import softmax

if TYPE_CHECKING:
    from clipsearch.models.base import Encoder
    from clipsearch.store import Catalog

AUTO = AUTO_THRESHOLD
AUTO_MIN_ITEMS = 8
AUTO_MIN_SEPARABILITY = 0.8
ProgressCallback = Callable[[int, int], None]  # (done, total)


# --- labels and thresholds ----------------------------------------------------------------------
def parse_labels(spec: str | Sequence[str]) -> list[str]:
    """Labels from ``"cat,dog,bird"``, a text file (one per line, ``#`` comments) or a list.

    Raises UsageError for no labels or duplicates (case-insensitive, as tags are stored
    lower-cased), or an unreadable file.
    """
    if isinstance(spec, str):
        path = Path(spec).expanduser()
        if path.is_file():
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as e:
                raise UsageError(f"cannot read labels from {path}: {e}") from e
            items = [ln for ln in lines if not ln.strip().startswith("#")]
            source = str(path)
        else:
            items, source = spec.split(","), "--labels"
    else:
        items, source = list(spec), "labels"
    labels = [" ".join(str(x).split()) for x in items]
    labels = [x for x in labels if x]
    if not labels:
        raise UsageError(
            f"{source}: no labels given (use 'cat,dog,bird' or a file with one per line)"
        )
    seen: dict[str, str] = {}
    dupes = []
    for label in labels:
        key = label.lower()
        if key in seen:
            dupes.append(label)
        seen.setdefault(key, label)
    if dupes:
        raise UsageError(f"{source}: duplicate labels: {', '.join(sorted(set(dupes))[:5])}")
    return labels


def check_threshold(value: object, what: str = "threshold") -> float:
    """A cosine threshold as float; UsageError unless it is a number in [−1, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise UsageError(f"{what} must be a number between -1 and 1, got {value!r}")
    try:
        x = float(value)
    except ValueError:
        raise UsageError(
            f"{what} must be a number between -1 and 1 or 'auto', got {value!r}"
        ) from None
    if not -1.0 <= x <= 1.0:  # also rejects NaN
        raise UsageError(f"{what} must be between -1 and 1 (a cosine similarity), got {value}")
    return x


def token_count(encoder: Encoder, text: str) -> int:
    """Tokens ``text`` takes in the encoder's context, start/end tokens included.

    Uses the encoder's open_clip tokenizer when it has one; otherwise a lower bound
    (one token per word or punctuation mark, plus two).
    """
    tok = getattr(encoder, "tokenizer", None)
    try:
        if tok is not None and hasattr(tok, "encode"):  # open_clip SimpleTokenizer
            return len(tok.encode(text)) + 2
        if tok is not None and hasattr(tok, "tokenizer"):  # HFTokenizer wraps a HF tokenizer
            return len(tok.tokenizer(text)["input_ids"])
    except Exception:  # a tokenizer quirk must not block classification
        pass
    return len(re.findall(r"\w+|[^\w\s]", text)) + 2


# --- the classifier ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prediction:
    """Top-k labels of one vector, best first: probabilities and raw cosines."""

    labels: tuple[str, ...]
    probs: tuple[float, ...]
    scores: tuple[float, ...]

    def to_dict(self) -> list[dict[str, object]]:
        return [
            {"label": lab, "prob": round(p, 6), "score": round(s, 6)}
            for lab, p, s in zip(self.labels, self.probs, self.scores, strict=True)
        ]


@dataclass(frozen=True)
class MomentLabel:
    """A stretch [start, end) seconds of a video whose frames share the top label."""

    start: float
    end: float
    label: str
    prob: float  # mean top-label probability over the stretch's frames

    def to_dict(self) -> dict[str, object]:
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "label": self.label,
            "prob": round(self.prob, 6),
        }


@dataclass(frozen=True)
class Classifier:
    """A zero-shot classifier. weights: (C, D) unit rows; notes: warnings (e.g. truncation)."""

    labels: tuple[str, ...]
    weights: np.ndarray
    logit_scale: float
    templates: tuple[str, ...]
    notes: tuple[str, ...] = ()

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) unit vectors -> (N, C) cosines, float32."""
        return (np.atleast_2d(np.asarray(vectors, dtype=np.float32)) @ self.weights.T).astype(
            np.float32
        )

    def probs(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) -> (N, C) softmax(logit_scale · cosine)."""
        return softmax(self.logit_scale * self.scores(vectors).astype(np.float64), axis=1)

    def predict(self, vectors: np.ndarray, *, top_k: int = 5) -> list[Prediction]:
        """Top-``top_k`` labels per row (k is capped at the number of labels)."""
        if top_k < 1:
            raise UsageError(f"top-k must be at least 1, got {top_k}")
        s = self.scores(vectors)
        p = softmax(self.logit_scale * s.astype(np.float64), axis=1)
        k = min(top_k, len(self.labels))
        out = []
        for srow, prow in zip(s, p, strict=True):
            top = np.argpartition(-prow, k - 1)[:k] if k < len(prow) else np.arange(len(prow))
            top = top[np.lexsort((top, -prow[top]))]
            out.append(
                Prediction(
                    tuple(self.labels[i] for i in top),
                    tuple(float(prow[i]) for i in top),
                    tuple(float(srow[i]) for i in top),
                )
            )
        return out


def build_classifier(
    encoder: Encoder,
    labels: str | Sequence[str],
    *,
    templates: str | Sequence[str] = "default",
    progress: ProgressCallback | None = None,
) -> Classifier:
    """Build a `Classifier` for ``labels`` (see `parse_labels`) with a template set name
    (default | simple | imagenet), a templates file, or a list of templates.

    Prompts longer than the encoder's context are truncated by the tokenizer; each label
    affected gets a note in ``Classifier.notes`` (the CLI shows them as warnings).
    Raises UsageError for bad labels or templates.
    """
    names = parse_labels(labels)
    tpls = resolve_templates(templates) if isinstance(templates, str) else list(templates)
    notes = []
    for name in names:
        longest = max(tpls, key=lambda t: token_count(encoder, fill_template(t, name)))
        n = token_count(encoder, fill_template(longest, name))
        if n > encoder.context_length:
            short = name if len(name) <= 40 else name[:37] + "..."
            notes.append(
                f"label {short!r} needs {n} tokens in the prompt {longest!r} but the model reads "
                f"{encoder.context_length}: the prompt is truncated (shorten the label)"
            )
    W = _ensemble(encoder, names, tpls, progress=progress)  # (C, D)
    return Classifier(tuple(names), W, float(encoder.logit_scale), tuple(tpls), tuple(notes))


# --- classifying files ------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileResult:
    """The classification of one file (``error`` set, ``prediction`` None, if it failed)."""

    path: str
    kind: str
    prediction: Prediction | None
    moments: tuple[MomentLabel, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"path": self.path, "kind": self.kind}
        if self.error is not None:
            out["error"] = self.error
        else:
            out["top"] = self.prediction.to_dict() if self.prediction else []
        if self.moments:
            out["moments"] = [m.to_dict() for m in self.moments]
        return out


def moments_from_frames(
    clf: Classifier, timestamps: np.ndarray, frames: np.ndarray, *, duration: float | None = None
) -> tuple[MomentLabel, ...]:
    """Runs of consecutive frames (F, D) at ``timestamps`` (F,) with the same top label.

    Each frame stands for the time cell around it (halfway to its neighbours); the first
    moment starts at 0 and the last ends at ``duration`` (or the last timestamp)."""
    from clipsearch.search.video import frame_cells

    if len(timestamps) == 0:
        return ()
    p = clf.probs(frames)  # (F, C)
    top = p.argmax(axis=1)
    t = np.asarray(timestamps, dtype=np.float64)
    end = max(float(duration or 0.0), float(t[-1]))
    starts, ends = frame_cells(t, end)
    starts[0], ends[-1] = 0.0, end  # the moments cover the whole video
    out, lo = [], 0
    for i in range(1, len(top) + 1):
        if i == len(top) or top[i] != top[lo]:
            c = int(top[lo])
            out.append(
                MomentLabel(
                    float(starts[lo]), float(ends[i - 1]), clf.labels[c], float(p[lo:i, c].mean())
                )
            )
            lo = i
    return tuple(out)


def classify_files(
    encoder: Encoder,
    clf: Classifier,
    paths: Sequence[str | Path],
    *,
    top_k: int = 5,
    per_moment: bool = False,
    sampler: str = "uniform:12",
    batch_size: int = 32,
    progress: ProgressCallback | None = None,
) -> list[FileResult]:
    """Classify image and video files; folders are walked (clipsearch.media.scan).

    A file that cannot be decoded gets a result with ``error`` and the run goes on.
    Raises NotFoundError for a path that does not exist; UsageError if it holds no media.
    """
    from clipsearch.media import load_image, scan

    errors: list[FileResult] = []
    files = list(
        scan(paths, on_error=lambda p, why: errors.append(FileResult(str(p), "?", None, error=why)))
    )
    if not files and not errors:
        raise UsageError(f"no image or video files in {', '.join(map(str, paths))}")
    results: dict[str, FileResult] = {}
    images = [f for f in files if f.kind == "image"]
    for lo in range(0, len(images), batch_size):
        batch, pics = [], []
        for f in images[lo : lo + batch_size]:
            try:
                pics.append(load_image(f.path).image)
                batch.append(f)
            except MediaError as e:
                results[str(f.path)] = FileResult(str(f.path), "image", None, error=str(e))
        if pics:
            for f, pred in zip(
                batch, clf.predict(encoder.encode_images(pics), top_k=top_k), strict=True
            ):
                results[str(f.path)] = FileResult(str(f.path), "image", pred)
        if progress is not None:
            progress(min(lo + batch_size, len(images)), len(files))
    for n, f in enumerate([f for f in files if f.kind == "video"], start=len(images) + 1):
        results[str(f.path)] = _classify_video(encoder, clf, f.path, top_k, per_moment, sampler)
        if progress is not None:
            progress(n, len(files))
    return [results[str(f.path)] for f in files] + errors


def _classify_video(
    encoder: Encoder, clf: Classifier, path: Path, top_k: int, per_moment: bool, sampler: str
) -> FileResult:
    from clipsearch.media.video import decode_frames
    from clipsearch.search.video import meanp

    try:
        decoded = decode_frames(path, sampler)
    except MediaError as e:
        return FileResult(str(path), "video", None, error=str(e))
    frames = encoder.encode_images([fr.image for fr in decoded.frames])  # (F, D)
    pred = clf.predict(meanp(frames)[None, :], top_k=top_k)[0]
    moments = ()
    if per_moment:
        ts = np.array([fr.t for fr in decoded.frames])
        moments = moments_from_frames(clf, ts, frames, duration=decoded.info.duration)
    return FileResult(str(path), "video", pred, moments)


# --- classifying library items, tags --------------------------------------------------------------
@dataclass(frozen=True)
class LibraryVectors:
    """Item-level vectors of (part of) a catalog, aligned rows: catalog item ids (N,), their
    vector-row ids (N,), kinds, paths, vectors (N, D) float32."""

    item_ids: np.ndarray
    vector_ids: np.ndarray
    kinds: list[str]
    paths: list[str]
    vectors: np.ndarray


def library_vectors(catalog: Catalog, where: Sequence[str] = ()) -> LibraryVectors:
    """Every item-level vector of the catalog matching the ``where`` filter clauses."""
    from clipsearch.store import ItemFilter

    table = catalog.load_vectors()
    keep = np.isnan(table.timestamps)
    if where:
        allowed = catalog.vector_ids_where(ItemFilter.parse(list(where)))
        keep &= np.isin(table.ids, allowed)
    ids = table.item_ids[keep].astype(np.int64)
    records = catalog.items(ids.tolist())
    return LibraryVectors(
        ids,
        table.ids[keep].astype(np.int64),
        [records[i].kind for i in ids.tolist()],
        [records[i].path for i in ids.tolist()],
        table.vectors[keep].astype(np.float32),
    )


@dataclass(frozen=True)
class ItemResult:
    item_id: int
    path: str
    kind: str
    prediction: Prediction
    moments: tuple[MomentLabel, ...] = ()

    def to_dict(self) -> dict[str, object]:
        out = {
            "item_id": self.item_id,
            "path": self.path,
            "kind": self.kind,
            "top": self.prediction.to_dict(),
        }
        if self.moments:
            out["moments"] = [m.to_dict() for m in self.moments]
        return out


def classify_items(
    catalog: Catalog,
    clf: Classifier,
    *,
    where: Sequence[str] = (),
    top_k: int = 5,
    per_moment: bool = False,
) -> list[ItemResult]:
    """Classify indexed items from their stored vectors (no decoding); videos by their meanP
    vector, plus per-moment labels from their stored frame vectors with ``per_moment``."""
    lv = library_vectors(catalog, where)
    preds = clf.predict(lv.vectors, top_k=top_k) if len(lv.item_ids) else []
    frames = {}
    if per_moment:
        frames = catalog.frames(
            [i for i, k in zip(lv.item_ids.tolist(), lv.kinds, strict=True) if k == "video"]
        )
    records = catalog.items(lv.item_ids.tolist()) if per_moment else {}
    out = []
    for i, (item, kind, path) in enumerate(
        zip(lv.item_ids.tolist(), lv.kinds, lv.paths, strict=True)
    ):
        moments = ()
        if item in frames:
            ts, fv = frames[item]
            moments = moments_from_frames(clf, ts, fv, duration=records[item].duration)
        out.append(ItemResult(item, path, kind, preds[i], moments))
    return out


def auto_threshold(scores: np.ndarray) -> tuple[float | None, float]:
    """Otsu's two-group split of ``scores`` (N,): (threshold or None, separability η).

    The threshold lies midway between the groups; None when η < AUTO_MIN_SEPARABILITY.
    """
    x = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(x)
    total_var = float(x.var()) if n else 0.0
    if n < 2 or total_var <= 1e-12:
        return None, 0.0
    c = np.cumsum(x)[:-1]  # sums of the low group for split after position i
    w0 = np.arange(1, n) / n
    mu0 = c / np.arange(1, n)
    mu1 = (x.sum() - c) / np.arange(n - 1, 0, -1)
    between = w0 * (1 - w0) * (mu0 - mu1) ** 2  # (n-1,)
    between[x[1:] == x[:-1]] = -1.0  # a split must fall between distinct values
    i = int(np.argmax(between))
    eta = float(between[i] / total_var)
    if eta < AUTO_MIN_SEPARABILITY:
        return None, eta
    return float((x[i] + x[i + 1]) / 2), eta


@dataclass
class TagReport:
    """What ``tag_items`` did: per label its threshold (None: not applied), item count,
    and for auto the separability η."""

    n_items: int
    thresholds: dict[str, float | None]
    counts: dict[str, int]
    separability: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "n_items": self.n_items,
            "labels": [
                {
                    "label": lab,
                    "threshold": None if t is None else round(t, 6),
                    "tagged": self.counts[lab],
                    **(
                        {"separability": round(self.separability[lab], 4)}
                        if lab in self.separability
                        else {}
                    ),
                }
                for lab, t in self.thresholds.items()
            ],
            "notes": self.notes,
        }


def tag_items(
    catalog: Catalog,
    clf: Classifier,
    *,
    threshold: float | str = AUTO,
    where: Sequence[str] = (),
    source: str = "zeroshot",
    dry_run: bool = False,
) -> TagReport:
    """Tag the catalog's items (module docstring): each label replaces its own earlier tags
    (catalog source ``"{source}:{label}"``), so tagging with other labels keeps these.

    Raises UsageError for a threshold outside [−1, 1], or ``auto`` on fewer than 8 items.
    """
    fixed = None if threshold == AUTO else check_threshold(threshold)
    lv = library_vectors(catalog, where)
    n = len(lv.item_ids)
    if fixed is None and n < AUTO_MIN_ITEMS:
        raise UsageError(
            f"--threshold auto needs at least {AUTO_MIN_ITEMS} items to learn from, the library has {n}; "
            "give a number (a cosine similarity, e.g. 0.25)"
        )
    S = clf.scores(lv.vectors) if n else np.zeros((0, len(clf.labels)), dtype=np.float32)  # (N, C)
    report = TagReport(n, {}, {}, notes=list(clf.notes))
    for c, label in enumerate(clf.labels):
        thr = fixed
        if fixed is None:
            thr, eta = auto_threshold(S[:, c])
            report.separability[label] = eta
            if thr is None:
                report.notes.append(
                    f"{label!r}: scores do not split into two groups (separability {eta:.2f} < "
                    f"{AUTO_MIN_SEPARABILITY}); no item tagged - give a number to force it"
                )
        hit = S[:, c] >= thr if thr is not None else np.zeros(n, dtype=bool)
        report.thresholds[label] = thr
        report.counts[label] = int(hit.sum())
        if not dry_run and n:
            tags = {
                int(i): ({label.lower(): float(s)} if h else {})
                for i, s, h in zip(lv.item_ids, S[:, c], hit, strict=True)
            }
            catalog.set_tags(tags, source=f"{source}:{label.lower()}")
    return report
