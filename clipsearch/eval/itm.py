"""ITM re-ranking in the evaluation harness: BLIP's two-stage protocol on a similarity matrix.

For each query row of S (text→media: a caption against every medium; media→text: a medium
against every caption), the top ``k`` columns by S are re-scored by the BLIP ITM
cross-encoder and fused with the first-stage score (`clipsearch.search.itm.fuse`); those
k columns are lifted above every other column in fused order, the rest keep S. This is
BLIP's ``evaluation()`` in ``train_retrieval.py`` (k = 128/256 there; 32 by default here,
as in search), so R@K before and after measure what re-ranking buys.

Registered as evaluation rerankers by `register_itm_rerankers`:

- ``itm``       final score = fusion (ITM log-odds + first-stage score), the search default;
- ``itm-prob``  final score = ITM P(match) alone (ties broken by the first-stage score).

They need the raw texts and media paths, which the runner passes in ``RerankContext``;
for a video the ITM model sees the frame whose embedding is nearest the caption.
Cost: (queries × k) ITM pairs per direction; image states are cached per medium, so the
ViT runs once per medium while the cache holds them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from clipsearch.errors import DatasetError, MediaError, UsageError
from clipsearch.eval.choices import ITM_RERANKERS

if TYPE_CHECKING:
    from PIL import Image

    from clipsearch.eval.rerank import RerankContext
    from clipsearch.models.blip import ImageTextMatcher


def register_itm_rerankers(matcher: ImageTextMatcher, *, k: int = 32) -> None:
    """Make ``itm`` and ``itm-prob`` available to `evaluate_retrieval` with ``matcher``."""
    from clipsearch.eval.rerank import register_reranker

    if k < 1:
        raise UsageError(f"--rerank-k must be >= 1, got {k}")
    for name, rule in ITM_RERANKERS.items():
        register_reranker(name, itm_reranker(matcher, k=k, rule=rule))


def itm_reranker(
    matcher: ImageTextMatcher, *, k: int, rule: str
) -> Callable[[np.ndarray, RerankContext], np.ndarray]:
    """An evaluation reranker (S, context) -> S' (see the module docstring)."""

    def rerank(S: np.ndarray, context: RerankContext) -> np.ndarray:
        if context.texts is None or context.media is None:
            raise UsageError("the ITM reranker needs the dataset's texts and media paths")
        return itm_rerank_matrix(
            S,
            texts=context.texts,
            media=context.media,
            matcher=matcher,
            text_rows=context.direction == "text_to_media",
            k=k,
            rule=rule,
            frame_time=context.frame_time,
        )

    return rerank


def itm_rerank_matrix(
    S: np.ndarray,
    *,
    texts: list[str],
    media: list[str],
    matcher: ImageTextMatcher,
    text_rows: bool,
    k: int,
    rule: str,
    frame_time: Callable[[int, int], float | None] | None = None,
) -> np.ndarray:
    """S (Q, G) with each row's top k re-scored by ITM and moved above the rest.

    text_rows: rows are texts and columns media (text→media), else the transpose.
    frame_time(text, medium) -> seconds of the video frame to show, or None for an image.
    """
    from clipsearch.search.itm import fuse

    out = np.array(S, dtype=np.float64)  # (Q, G)
    kk = min(k, S.shape[1])
    images: dict[tuple[int, float | None], Image.Image] = {}
    side = matcher.image_size
    for row in range(S.shape[0]):
        top = np.argpartition(-S[row], kk - 1)[:kk]  # (kk,)
        pairs = [(row, int(c)) if text_rows else (int(c), row) for c in top]
        keys, pixels = [], []
        for t, m in pairs:
            when = frame_time(t, m) if frame_time is not None else None
            key = (media[m], when)
            keys.append(key)
            if key in images or key in matcher.cached_keys([key]):
                pixels.append(images.get(key))
                continue
            images[key] = _load(media[m], when, side)
            pixels.append(images[key])
        p = matcher.score_pairs([texts[t] for t, _ in pairs], pixels, keys=keys).probability
        fused = fuse(p, S[row, top], rule)
        if rule == "itm":  # P(match) ties: the first-stage score decides
            fused = fused + 1e-9 * (S[row, top] - S[row, top].min())
        lift = float(np.max(S[row])) + 1.0 - float(np.min(fused))
        out[row, top] = fused + lift
        if len(images) > 4 * kk:  # decoded pixels are only needed until their states cache
            images.clear()
    return out


def _load(path: str, when: float | None, side: int) -> Image.Image:
    try:
        if when is None:
            from clipsearch.media import load_image

            return load_image(path, min_side=side).image
        from clipsearch.media.frame_at import grab_video_frame

        return grab_video_frame(path, when, size=side)
    except (MediaError, OSError) as e:
        raise DatasetError(f"{path}: cannot be read for ITM re-ranking ({e})") from e
