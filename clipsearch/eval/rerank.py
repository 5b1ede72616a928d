"""The reranker hook of the evaluation harness.

A reranker rewrites a query×gallery similarity matrix before ranks are taken:

    rerank(S, context) -> S'        S, S': (Q, G) float, higher = better

It is applied to each direction on its own (text→media with texts as queries, and
media→text with media as queries), because hubness normalisations such as QB-Norm
(Bogolin et al. 2022) or DBNorm (Wang et al. 2023) normalise over the *gallery* side of
the direction being searched. ``RerankContext`` carries the embeddings a reranker may need.

``none`` (identity) is defined here; the hubness rerankers of ``clipsearch.search.rerank``
(``is``, ``qbnorm``, ``dbnorm``, ``dbnorm-dynamic``, from its ``eval_rerankers()``) are
registered on first use, and anything else plugs in with ``register_reranker(name, fn)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from clipsearch.errors import UsageError

Direction = Literal["text_to_media", "media_to_text"]


@dataclass(frozen=True)
class RerankContext:
    """What a reranker may use besides the similarity matrix.

    queries: (Q, D) query embeddings of this direction (texts for text→media).
    gallery: (G, D) gallery embeddings (media for text→media; for videos the meanP vectors).
    direction: which direction S belongs to.
    query_bank: (B, D) embeddings of other queries of the same modality (e.g. training
        captions) for query-bank normalisation, or None when the evaluation has none.
    texts / media: the dataset's captions and media paths (the column/row order of S), for
        rerankers that read the raw inputs (a cross-encoder such as BLIP ITM).
    frame_time: (caption index, media index) -> the video frame time (s) to show for that
        pair, or None for images.
    """

    queries: np.ndarray
    gallery: np.ndarray
    direction: Direction
    query_bank: np.ndarray | None = None
    texts: list[str] | None = None
    media: list[str] | None = None
    frame_time: Callable[[int, int], float | None] | None = None


Reranker = Callable[[np.ndarray, RerankContext], np.ndarray]


def _identity(S: np.ndarray, context: RerankContext) -> np.ndarray:
    return S


_RERANKERS: dict[str, Reranker] = {"none": _identity}
_builtins_loaded = False


def _load_builtin_rerankers() -> None:
    """Register ``clipsearch.search.rerank.eval_rerankers()`` once (never overriding)."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    try:
        from clipsearch.search.rerank import eval_rerankers
    except ImportError:  # pragma: no cover - the search layer always ships it
        return
    for name, fn in eval_rerankers().items():
        _RERANKERS.setdefault(name, fn)


def register_reranker(name: str, fn: Reranker) -> None:
    """Make ``fn`` available as ``--rerank NAME`` in evaluations."""
    _RERANKERS[name.strip().lower()] = fn


def available_rerankers() -> list[str]:
    _load_builtin_rerankers()
    return sorted(_RERANKERS)


def get_reranker(name: str) -> Reranker:
    """The reranker registered under ``name``; UsageError listing the known ones otherwise."""
    _load_builtin_rerankers()
    try:
        return _RERANKERS[name.strip().lower()]
    except KeyError:
        raise UsageError(
            f"unknown reranker {name!r}; available: {', '.join(available_rerankers())}"
        ) from None


def apply_reranker(name: str, S: np.ndarray, context: RerankContext) -> np.ndarray:
    """Run reranker ``name`` and check it kept the shape and produced finite scores."""
    out = np.asarray(get_reranker(name)(S, context))
    if out.shape != S.shape:
        raise UsageError(f"reranker {name!r} changed the matrix shape {S.shape} -> {out.shape}")
    return out
