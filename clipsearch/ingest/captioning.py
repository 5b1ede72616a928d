"""Captioning the library: one BLIP caption per image and per sampled video moment,
stored in the catalog's item texts (source "caption", store/texts.py) beside the text read
by OCR, where the ``text:`` filter and text matching of queries find them.

Which items: every ok item not yet captioned by this captioning model (its ``text_runs``
row, so a run is resumable and incremental: a new file gets its caption on the next run;
a run with another model re-captions everything once). ``redo`` re-captions all items.

Videos: ``video_moments`` frames per video, taken from the frames the index already
sampled (evenly spread over them), so each caption's time matches a stored frame vector
and a caption hit can point at its moment. A file that no longer decodes is counted and
skipped (retried next run); one bad file never stops a run. Each batch is one
transaction: Ctrl-C loses at most the batch in flight.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from clipsearch.errors import MediaError, UsageError
from clipsearch.store.records import TextRead
from clipsearch.store.texts import CAPTION

if TYPE_CHECKING:
    from PIL import Image

    from clipsearch.models.blip import Captioner
    from clipsearch.store import Catalog, ItemRecord

_DECODE_THREADS = 2


@dataclass(frozen=True)
class CaptionOptions:
    """How to caption a library."""

    batch_size: int = 8  # images per captioning batch (and per catalog transaction)
    video_moments: int = 4  # captions per video, spread over its sampled frames
    max_new_tokens: int = 30  # caption length cap, in tokens
    num_beams: int = 3  # beam search width (BLIP's own demo setting)
    prompt: str | None = None  # e.g. "a photograph of": every caption starts with it
    redo: bool = False  # re-caption items that already have a caption from this model

    def validate(self) -> None:
        for name in ("batch_size", "video_moments", "max_new_tokens", "num_beams"):
            if getattr(self, name) < 1:
                raise UsageError(
                    f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )


@dataclass(frozen=True)
class CaptionProgress:
    """``done`` of ``total`` items captioned (or failed) so far; the last caption written."""

    done: int
    total: int
    failed: int
    last: str | None = None


@dataclass
class CaptionReport:
    """What a captioning run did."""

    model: str
    items: int = 0  # items captioned
    captions: int = 0  # captions written (videos have several)
    failed: int = 0  # items none of whose frames could be decoded (retried next run)
    skipped: int = 0  # items that already had a caption from this model
    seconds: float = 0.0
    interrupted: bool = False
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "items": self.items,
            "captions": self.captions,
            "failed": self.failed,
            "skipped": self.skipped,
            "seconds": round(self.seconds, 3),
            "interrupted": self.interrupted,
            "errors": self.errors,
        }


@dataclass(frozen=True)
class _Job:
    item_id: int
    path: str
    kind: str
    t: float | None  # video frame time; None for an image


def caption_library(
    catalog: Catalog,
    captioner: Captioner,
    options: CaptionOptions = CaptionOptions(),
    *,
    on_event: Callable[[CaptionProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> CaptionReport:
    """Caption the items that need it (see the module docstring). Returns a report."""
    options.validate()
    start = time.monotonic()
    report = CaptionReport(model=captioner.name)
    todo, total = catalog.texts.pending(CAPTION, captioner.name, frames=True, redo=options.redo)
    report.skipped = total - len(todo)
    emit = on_event or (lambda e: None)
    stop = should_stop or (lambda: False)
    done = 0
    for lo in range(0, len(todo), options.batch_size):
        if stop():
            report.interrupted = True
            break
        ids = todo[lo : lo + options.batch_size]
        jobs = _jobs(catalog, ids, options.video_moments)
        images = _decode(jobs, captioner.image_size, report)
        ready = [(j, im) for j, im in zip(jobs, images, strict=True) if im is not None]
        texts = captioner.caption(
            [im for _, im in ready],
            max_new_tokens=options.max_new_tokens,
            num_beams=options.num_beams,
            prompt=options.prompt,
        )
        per_item: dict[int, list[tuple[float | None, str]]] = {}
        kinds = {j.item_id: j.kind for j in jobs}
        for (job, _), text in zip(ready, texts, strict=True):
            per_item.setdefault(job.item_id, []).append((job.t, text))
        catalog.texts.write(
            {
                i: TextRead(CAPTION, captioner.name, kinds[i] == "video", tuple(rows))
                for i, rows in per_item.items()
            }
        )
        report.captions += sum(1 for rows in per_item.values() for _, t in rows if t.strip())
        report.items += len(per_item)
        report.failed += len(
            {j.item_id for j, im in zip(jobs, images, strict=True) if im is None} - set(per_item)
        )
        done += len(ids)
        emit(CaptionProgress(done, len(todo), report.failed, texts[-1] if texts else None))
    report.seconds = time.monotonic() - start
    return report


def _jobs(catalog: Catalog, ids: list[int], moments: int) -> list[_Job]:
    records: dict[int, ItemRecord] = catalog.items(ids)
    videos = [i for i in ids if i in records and records[i].kind == "video"]
    frames = catalog.frames(videos) if videos else {}
    jobs: list[_Job] = []
    for i in ids:
        r = records.get(i)
        if r is None:
            continue
        if r.kind == "image":
            jobs.append(_Job(i, r.path, "image", None))
            continue
        ts = frames[i][0] if i in frames else np.array([float(r.duration or 0.0) / 2])
        for t in moment_times(ts, moments):
            jobs.append(_Job(i, r.path, "video", t))
    return jobs


def moment_times(timestamps: np.ndarray, n: int) -> list[float]:
    """``n`` of a video's sampled frame times, evenly spread (all of them when fewer):
    the centres of n equal segments of the frame list."""
    ts = np.asarray(timestamps, dtype=np.float64)
    if len(ts) <= n:
        return [float(t) for t in ts]
    picks = ((np.arange(n) + 0.5) * len(ts) / n).astype(int)  # (n,)
    return [float(ts[p]) for p in picks]


def _decode(jobs: list[_Job], side: int, report: CaptionReport) -> list[Image.Image | None]:
    def one(job: _Job) -> Image.Image | None:
        try:
            if job.kind == "video":
                from clipsearch.media.frame_at import grab_video_frame

                return grab_video_frame(job.path, job.t or 0.0, size=side)
            from clipsearch.media import load_image

            return load_image(job.path, min_side=side).image
        except (MediaError, OSError) as e:
            report.errors.append({"item_id": str(job.item_id), "path": job.path, "error": str(e)})
            return None

    with ThreadPoolExecutor(_DECODE_THREADS) as pool:
        return list(pool.map(one, jobs))
