"""Text×video similarity matrices from cached frame vectors, one per pooling method.

The pooling itself is the search engine's (``clipsearch.search.video.pool_scores``), so
the evaluation measures exactly what ``clipsearch search --pooling`` ranks with
(docs/video.md: ``peak`` = frame scores averaged under a softmax at CLIP's temperature,
``mean`` = CLIP4Clip meanP, ``max``, ``softmax`` = text-conditioned X-Pool/CLIP-Hitchhiker
style with temperature τ). Frame vectors come from the cache, so
comparing poolings costs one pass of small matrix products.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clipsearch.errors import UsageError
from clipsearch.eval.embed import FrameEmbeddings
from clipsearch.search.engine import POOLINGS  # the search engine's poolings, measured here

_TEXT_CHUNK = 256  # texts scored at once: bounds the (texts, all frames) temporaries


def parse_poolings(spec: str | Sequence[str]) -> list[str]:
    """``"mean,softmax"`` → ["mean", "softmax"]; UsageError for an unknown name or none."""
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    if not names:
        raise UsageError(f"no pooling given; choose from {', '.join(POOLINGS)}")
    bad = [n for n in names if n not in POOLINGS]
    if bad:
        raise UsageError(f"unknown pooling {bad[0]!r}; choose from {', '.join(POOLINGS)}")
    return list(dict.fromkeys(names))


def video_vectors(frames: FrameEmbeddings) -> np.ndarray:
    """(V, D) meanP video vectors v = normalise(mean normalise(fᵢ)) (CLIP4Clip)."""
    from clipsearch.search.video import meanp

    n = len(frames.offsets) - 1
    out = np.zeros((n, frames.frames.shape[1]), dtype=np.float32)
    for i in range(n):
        f = frames.of(i)
        if len(f):
            out[i] = meanp(f)
    return out


def pooled_similarity(
    texts: np.ndarray, frames: FrameEmbeddings, method: str, *, tau: float = 0.1
) -> np.ndarray:
    """(T, V) scores of every text for every video under ``method``.

    texts: (T, D) L2-normalised. Every video must have at least one frame (drop failed
    videos first). ``tau`` is the ``softmax`` temperature; ``peak`` uses its own (1/100). Raises UsageError for an unknown method, tau <= 0, or a video without
    frames.
    """
    from clipsearch.search.video import FrameSets, pool_scores_batch

    parse_poolings([method])
    videos = FrameSets.from_counts(frames.frames, np.diff(frames.offsets))
    S = np.empty((texts.shape[0], len(videos)), dtype=np.float32)
    for lo in range(0, texts.shape[0], _TEXT_CHUNK):
        S[lo : lo + _TEXT_CHUNK] = pool_scores_batch(
            texts[lo : lo + _TEXT_CHUNK], videos, method, tau=tau if method == "softmax" else None
        )  # (chunk, V)
    return S
