"""Cross-encoder re-ranking: the top K hits of a text query re-scored by BLIP's ITM head.

The two-stage retrieval recipe of ALBEF and BLIP (Li et al., ICML 2022, §4.4 and its
``train_retrieval.py``): a dual encoder ranks the whole library cheaply, then an
image-text matching cross-encoder, which reads the text and the image together, re-scores
only the first K candidates (K = 32 by default; BLIP used 128 on COCO, 256 on Flickr30k
with a GPU). `ItmRescorer` is a `clipsearch.search.rescore.Rescorer`: its ``depth`` is K,
and the engine sorts, pages and renumbers by the scores it gives.

What the ITM model looks at: an image's own pixels; for a video, the frame at its best
moment (``Hit.moment.best_t``, where the frame curve peaks), or its middle frame when it
has no moment.

Final score (``score=``), with p = P(match) from the ITM head and c the CLIP score:

- ``"itm"``: s = p (ties, where p saturates near 1, are broken by item id).
- ``"fusion"`` (default): s = logit(p) + c, BLIP's own evaluation rule
  (``score = itm_logit + itc_sim``) with the ITM log-odds in place of the raw match
  logit (the two-class head is shift-invariant; only the difference is a calibrated
  quantity) and CLIP's cosine in place of BLIP's own contrastive one. The log-odds do not
  saturate, and the cosine decides between candidates the cross-encoder finds equally
  good. docs/blip.md says what was measured.

Candidates past K, and a candidate among the top K whose file can no longer be decoded,
are not re-scored: they follow the re-scored ones in their first-stage order, scored
c − (c₀ − s_min) − 10⁻⁶ (their CLIP score shifted to sit just below the lowest re-scored
score s_min; c₀ is the best CLIP score among them), so score differences between them are
still CLIP differences. `ItmRescorer.annotate` gives every hit it saw ``itm_score`` (p,
or None when not re-scored) and ``clip_score`` (c).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from clipsearch.errors import MediaError, QueryError, UsageError
from clipsearch.search.choices import ITM_SCORE_RULES, ItmScoreRule

if TYPE_CHECKING:
    from PIL import Image

    from clipsearch.models.blip import ImageTextMatcher
    from clipsearch.search.hits import Hit
    from clipsearch.search.query import QueryPlan
    from clipsearch.search.rescore import Query

DEFAULT_ITM_K = 32
MAX_ITM_K = 1024
_DECODE_THREADS = 4
_NO_TEXT = (
    "--rerank itm re-ranks text queries: this search has no query text. "
    "Search with a text, or leave out --rerank itm."
)


def itm_text(plan: QueryPlan) -> str:
    """The text the cross-encoder reads for a query: its positive text terms, in order.

    Raises QueryError when the query has no positive text term (ITM matches a text with an
    image; an example-image query has nothing to match)."""
    texts = [t.value.strip() for t in plan.terms if t.kind == "text" and t.weight > 0]
    texts = [t for t in texts if t]
    if not texts:
        raise QueryError(
            "--rerank itm re-ranks text queries: this query has no positive text term. "
            "Add a text (e.g. 'a dog on a beach') or leave out --rerank itm."
        )
    return ", ".join(texts)


def fuse(itm_probability: np.ndarray, clip_score: np.ndarray, rule: str) -> np.ndarray:
    """Final scores (N,) float64 from ITM probabilities and first-stage scores (see module)."""
    p = np.asarray(itm_probability, dtype=np.float64)
    c = np.asarray(clip_score, dtype=np.float64)
    if rule == "itm":
        return p
    if rule == "fusion":
        eps = 1e-7
        q = np.clip(p, eps, 1 - eps)
        return np.log(q) - np.log1p(-q) + c
    raise UsageError(f"unknown re-rank score {rule!r}; choose one of {', '.join(ITM_SCORE_RULES)}")


def check_options(k: int, score: str) -> ItmScoreRule:
    """Raise UsageError for a re-rank depth or score rule out of range; return the rule."""
    if not 1 <= k <= MAX_ITM_K:
        raise UsageError(f"the re-rank depth must be between 1 and {MAX_ITM_K}, got {k}")
    if score not in ITM_SCORE_RULES:
        raise UsageError(
            f"unknown re-rank score {score!r}; choose one of {', '.join(ITM_SCORE_RULES)}"
        )
    return score  # type: ignore[return-value]


@dataclass
class ItmRescorer:
    """`Rescorer` that re-scores the top ``k`` candidates with an `ImageTextMatcher`.

    matcher: the BLIP ITM model (kept by the caller; its image-state cache serves later
        queries). k: candidates re-scored. score: "fusion" or "itm" (module docstring).
    text: the text the cross-encoder reads; None: the query's positive text terms
        (`itm_text`).
    """

    matcher: ImageTextMatcher
    k: int = DEFAULT_ITM_K
    score: ItmScoreRule = "fusion"
    text: str | None = None
    _seen: dict[int, tuple[float | None, float]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        check_options(self.k, self.score)

    @classmethod
    def checked(
        cls,
        matcher: Callable[[], ImageTextMatcher],
        plan: QueryPlan | None,
        *,
        k: int = DEFAULT_ITM_K,
        score: str = "fusion",
        text: str | None = None,
    ) -> ItmRescorer:
        """The rescorer for a search of ``plan``: options and query text checked first
        (UsageError, QueryError), then ``matcher()`` called to get (load) the model."""
        rule = check_options(k, score)
        if not (text and text.strip()):
            if plan is None:
                raise QueryError(_NO_TEXT)
            itm_text(plan)
        return cls(matcher(), k=k, score=rule, text=text)

    def depth(self, need: int) -> int:
        return self.k

    def query_text(self, query: Query) -> str:
        """What the cross-encoder reads for ``query`` (QueryError when it has no text)."""
        if self.text is not None and self.text.strip():
            return self.text.strip()
        if query.plan is None:
            raise QueryError(_NO_TEXT)
        return itm_text(query.plan)

    def rescore(self, query: Query, hits: Sequence[Hit]) -> np.ndarray:
        text = self.query_text(query)
        clip = np.array([h.score for h in hits], dtype=np.float64)  # (N,), raw order
        final = np.full(len(hits), np.nan)
        p = np.full(len(hits), np.nan)
        head = list(hits[: self.k])
        if head:
            keys = [_image_key(h) for h in head]
            images = self._load(head, keys)
            ok = [i for i, im in enumerate(images) if im is not None]
            if ok:
                pixels = [None if images[i] is _CACHED else images[i] for i in ok]
                p[ok] = self.matcher.score(text, pixels, keys=[keys[i] for i in ok]).probability
                final[ok] = fuse(p[ok], clip[ok], self.score)
        rest = np.isnan(final)
        if rest.any():
            floor = float(np.min(final[~rest])) if (~rest).any() else float(np.max(clip[rest]))
            final[rest] = clip[rest] - (float(np.max(clip[rest])) - floor) - 1e-6
        self._seen = {
            h.item_id: (None if np.isnan(p[i]) else float(p[i]), float(clip[i]))
            for i, h in enumerate(hits)
        }
        return final

    def annotate(self, hits: Sequence[Hit]) -> list[Hit]:
        """``hits`` (results of the search this rescorer ran in) with ``itm_score`` and
        ``clip_score`` set."""
        out = []
        for h in hits:
            seen = self._seen.get(h.item_id)
            out.append(h if seen is None else replace(h, itm_score=seen[0], clip_score=seen[1]))
        return out

    def _load(self, hits: list[Hit], keys: list[tuple]) -> list[Image.Image | _Cached | None]:
        """Decode what the matcher has not cached: an image, `_CACHED` for a cached key,
        None for a file that fails (re-ranked last, never an error for the whole query)."""
        cached = self.matcher.cached_keys(keys)
        todo = [i for i, k in enumerate(keys) if k not in cached]
        side = self.matcher.image_size
        images: list[Image.Image | None] = [None] * len(hits)
        failed: set[int] = set()

        def one(i: int) -> None:
            try:
                images[i] = _frame_of(hits[i], side)
            except (MediaError, OSError):
                failed.add(i)

        if len(todo) > 1:
            with ThreadPoolExecutor(min(_DECODE_THREADS, len(todo))) as pool:
                list(pool.map(one, todo))
        elif todo:
            one(todo[0])
        out: list[Image.Image | _Cached | None] = []
        for i in range(len(hits)):
            out.append(None if i in failed else images[i] if i in todo else _CACHED)
        return out


class _Cached:
    """Stands for an image whose ITM states are already cached (nothing to decode)."""


_CACHED = _Cached()


def _image_key(hit: Hit) -> tuple:
    """What identifies the pixels ITM sees: path, file size and mtime, frame time."""
    try:
        st = os.stat(hit.path)
        stamp: tuple = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = ("missing",)
    return (hit.path, *stamp, _frame_time(hit))


def _frame_time(hit: Hit) -> float | None:
    if hit.kind != "video":
        return None
    if hit.moment is not None:
        return round(float(hit.moment.best_t), 3)
    return round(float(hit.duration or 0.0) / 2, 3)


def _frame_of(hit: Hit, side: int) -> Image.Image:
    if hit.kind == "video":
        from clipsearch.media.frame_at import grab_video_frame

        return grab_video_frame(hit.path, _frame_time(hit) or 0.0, size=side)
    from clipsearch.media import load_image

    return load_image(hit.path, min_side=side).image
