"""Search results as small frozen dataclasses (usearch `Matches` style)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from clipsearch.media.scan import MediaKind

if TYPE_CHECKING:
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
        return out


def _moment_dict(m: Moment) -> dict[str, float]:
    return {
        "start": round(float(m.start), 3),
        "end": round(float(m.end), 3),
        "best_t": round(float(m.best_t), 3),
        "score": round(float(m.score), 6),
    }
