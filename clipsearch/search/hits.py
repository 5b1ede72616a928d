"""Search results as small frozen dataclasses (usearch `Matches` style)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from clipsearch.media.scan import MediaKind

if TYPE_CHECKING:
    import numpy as np

    from clipsearch.media.capture_time import CaptureTime
    from clipsearch.search.moments import Moment
    from clipsearch.store.texts import TextMatch


@dataclass(frozen=True)
class FrameCurve:
    """A video's per-frame similarity to the query: timestamps (F,) s and scores (F,)."""

    timestamps: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class Hit:
    """One ranked result.

    score: cosine similarity (images) or the pooled video score (videos), in [-1, 1]
        before reranking.
    moments: for videos, up to ``SearchOptions.moments`` non-overlapping moments, best
        first: [start, end] (seconds), the best frame's time and the moment's score (mean
        frame similarity). ``moment`` is the first.
    curve: for videos when requested (``with_curve=True``), the frame score curve.
    text_match: the text read in the picture (or the video frame) that matched the query's
        words, when the search matched text (`clipsearch.search.textmatch`).
    relevant: above the query's relevance cut (``min_score``: clipsearch.search.relevance);
        the relevant hits of a search come first.
    taken: when it was taken (EXIF, the video container, else the file's mtime).
    members: with ``collapse``, the near-duplicates folded into this hit (best first);
        None when the search did not collapse.
    itm_score: after ``rerank="itm"``, BLIP's P(match) for the query and this item (None
        for hits past the re-ranked top K); ``score`` is then the re-ranked score.
    clip_score: after a cross-encoder re-rank, the first-stage (CLIP) score.
    caption: the item's stored caption (an image's, a video's nearest its best moment),
        when captions were asked for.
    """

    item_id: int
    path: str
    kind: MediaKind
    score: float
    rank: int
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    moments: tuple[Moment, ...] = ()
    curve: FrameCurve | None = field(default=None, repr=False)
    text_match: TextMatch | None = None
    relevant: bool = True
    taken: CaptureTime | None = None
    members: tuple[Duplicate, ...] | None = None
    itm_score: float | None = None
    clip_score: float | None = None
    caption: str | None = None

    @property
    def moment(self) -> Moment | None:
        """The video's best moment (None for images)."""
        return self.moments[0] if self.moments else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (what `clipsearch search --json` and the HTTP API return)."""
        out: dict[str, Any] = {
            "rank": self.rank,
            "item_id": self.item_id,
            "path": self.path,
            "kind": self.kind,
            "score": round(float(self.score), 6),
            "width": self.width,
            "height": self.height,
        }
        if self.kind == "video":
            out["duration"] = self.duration
            if self.moments:
                out["moment"] = _moment_dict(self.moments[0])
                out["moments"] = [_moment_dict(m) for m in self.moments]
        if self.clip_score is not None:
            out["clip_score"] = round(float(self.clip_score), 6)
            out["itm_score"] = None if self.itm_score is None else round(float(self.itm_score), 6)
        if self.caption is not None:
            out["caption"] = self.caption
        if self.text_match is not None:
            from clipsearch.search.textmatch import match_spans

            m = self.text_match
            out["text_match"] = {
                "text": m.text,  # as read (lines joined by newlines)
                "terms": list(m.terms),  # the query terms found, squashed
                "spans": [list(s) for s in match_spans(m.text, m.terms)],  # [start, end) in text
                "coverage": round(m.coverage, 4),
                "t": None if m.t is None else round(float(m.t), 3),  # video frame time (s)
                "source": m.source,
            }
        if self.curve is not None:
            out["curve"] = {
                "t": [round(float(t), 3) for t in self.curve.timestamps],
                "score": [round(float(s), 5) for s in self.curve.scores],
            }
        out["relevant"] = self.relevant
        out["taken"] = self.taken.isoformat() if self.taken is not None else None
        out["taken_source"] = self.taken.source if self.taken is not None else None
        if self.members is not None:
            out["members"] = [m.to_dict() for m in self.members]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Hit:
        """The hit `to_dict` described; ``to_dict`` of the result gives ``d`` back."""
        described = d.get("moments") or ([d["moment"]] if d.get("moment") else [])
        moments: tuple[Moment, ...] = ()
        if described:  # video hits only: image hits load without numpy
            from clipsearch.search.moments import Moment

            moments = tuple(
                Moment(
                    float(m["start"]),
                    float(m["end"]),
                    float(m["best_t"]),
                    float(m.get("score", float("nan"))),
                )
                for m in described
            )
        text_match = None
        if d.get("text_match") is not None:
            from clipsearch.store.texts import TextMatch

            tm = d["text_match"]
            text_match = TextMatch(
                item_id=int(d["item_id"]),
                coverage=float(tm["coverage"]),
                terms=tuple(tm["terms"]),
                text=str(tm["text"]),
                t=None if tm.get("t") is None else float(tm["t"]),
                source=str(tm["source"]),
            )
        curve = None
        if d.get("curve") is not None:
            import numpy as np  # only a video hit's curve: plain hits load without numpy

            curve = FrameCurve(
                np.asarray(d["curve"]["t"], dtype=np.float64),
                np.asarray(d["curve"]["score"], dtype=np.float32),
            )
        return cls(
            item_id=int(d["item_id"]),
            path=str(d["path"]),
            kind=d["kind"],
            score=float(d["score"]),
            rank=int(d["rank"]),
            width=d.get("width"),
            height=d.get("height"),
            duration=d.get("duration"),
            moments=moments,
            text_match=text_match,
            curve=curve,
            relevant=bool(d.get("relevant", True)),
            taken=_taken_from_dict(d),
            members=None
            if d.get("members") is None
            else tuple(
                Duplicate(cls.from_dict({**m, "rank": d["rank"]}), float(m["similarity"]))
                for m in d["members"]
            ),
        )


def _taken_from_dict(d: dict[str, Any]) -> CaptureTime | None:
    """The `CaptureTime` whose ``isoformat`` and source `Hit.to_dict` wrote (to the second:
    the precision the rendering shows)."""
    if d.get("taken") is None:
        return None
    from datetime import datetime

    from clipsearch.media.capture_time import CaptureTime

    when = datetime.fromisoformat(d["taken"])
    offset = when.utcoffset()
    offset_min = None if offset is None else int(offset.total_seconds() // 60)
    return CaptureTime(int(when.timestamp()) * 1_000_000_000, offset_min, d["taken_source"])


def _moment_dict(m: Moment) -> dict[str, float]:
    return {
        "start": round(float(m.start), 3),
        "end": round(float(m.end), 3),
        "best_t": round(float(m.best_t), 3),
        "score": round(float(m.score), 6),
    }


@dataclass(frozen=True)
class Duplicate:
    """A near-duplicate folded into a result (``Hit.members``).

    hit: the folded item as a result of the same search (its own score, path, moment...;
        its rank is the rank of the result it is folded into).
    similarity: the cosine of its stored vector to the result's (≥ the collapse threshold,
        or joined through a chain of such pairs).
    """

    hit: Hit
    similarity: float

    def to_dict(self) -> dict[str, Any]:
        out = self.hit.to_dict()
        for key in ("rank", "relevant", "members"):
            out.pop(key, None)
        out["similarity"] = round(float(self.similarity), 6)
        return out


class SearchResults(list[Hit]):
    """The hits of one search page (a plain list of `Hit`) and what the search decided.

    min_score: the relevance cut the search used (a cosine), None without a cut.
    """

    def __init__(self, hits: Iterable[Hit] = (), *, min_score: float | None = None) -> None:
        super().__init__(hits)
        self.min_score = min_score

    @property
    def relevant(self) -> list[Hit]:
        """The hits above the relevance cut."""
        return [h for h in self if h.relevant]
