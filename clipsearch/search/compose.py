"""Composed image+text queries: "this shirt, but in red" (DESIGN.md §5).

Two ways to combine an image vector v and a text vector t (both L2-normalised), with the
text weight λ ∈ [0, 1]:

- ``sum`` — the weighted sum used by zero-shot composed-image-retrieval baselines
  (e.g. the "image + text" baseline of Saito et al., CVPR 2023, Pic2Word)::

      q = normalise((1 − λ)·v + λ·t)

- ``slerp`` — spherical linear interpolation (Shoemake 1985), as in Jang et al., ECCV 2024
  ("Spherical Linear Interpolation and Text-Anchoring for Zero-shot Composed Image
  Retrieval"); it walks along the unit sphere, so λ moves the query at a constant angular
  rate from the image (λ=0) to the text (λ=1)::

      Ω = arccos(v·t),  q = sin((1 − λ)Ω)/sin Ω · v + sin(λΩ)/sin Ω · t

  Nearly parallel inputs fall back to the normalised linear blend; exactly opposite inputs
  have no unique great circle and raise QueryError.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipsearch.errors import QueryError, UsageError
from clipsearch.models.base import l2_normalize

if TYPE_CHECKING:
    from clipsearch.models.base import Encoder

METHODS: tuple[str, ...] = ("slerp", "sum")
DEFAULT_TEXT_WEIGHT = 0.5


def _unit(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(x))
    if not np.isfinite(n) or n < 1e-6:
        raise QueryError(f"the {what} vector is zero or not finite: nothing to compose")
    return x / n


def _check_weight(weight: float) -> float:
    if not 0.0 <= float(weight) <= 1.0:
        raise UsageError(f"the text weight must be between 0 and 1, got {weight}")
    return float(weight)


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation from ``a`` (t=0) to ``b`` (t=1) of two (D,) vectors -> (D,) unit.

    Raises QueryError for zero or opposite vectors, UsageError for t outside [0, 1].
    """
    t = _check_weight(t)
    a, b = _unit(a, "first"), _unit(b, "second")
    cos = float(np.clip(a @ b, -1.0, 1.0))
    if cos < -1.0 + 1e-6:
        raise QueryError(
            "the image and text vectors point in opposite directions: slerp is undefined"
        )
    omega = float(np.arccos(cos))
    if omega < 1e-4:  # nearly parallel: sin Ω ≈ 0, the linear blend is exact to first order
        return l2_normalize((1.0 - t) * a + t * b)
    s = np.sin(omega)
    return l2_normalize(np.sin((1.0 - t) * omega) / s * a + np.sin(t * omega) / s * b)


def weighted_sum(vectors: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """normalise(Σ wᵢ · normalise(vᵢ)) -> (D,). Raises QueryError if the terms cancel out."""
    if len(vectors) == 0 or len(vectors) != len(weights):
        raise UsageError("give one weight per vector, and at least one vector")
    q = np.sum([w * _unit(v, "query") for v, w in zip(vectors, weights, strict=True)], axis=0)
    if float(np.linalg.norm(q)) < 1e-6:
        raise QueryError("the composed query's terms cancel out: nothing is left to search for")
    return l2_normalize(q)


def compose(
    image_vector: np.ndarray,
    text_vector: np.ndarray,
    *,
    method: str = "slerp",
    text_weight: float = DEFAULT_TEXT_WEIGHT,
) -> np.ndarray:
    """Combine an image and a text vector (D,) into one query vector (D,) (module docstring)."""
    if method not in METHODS:
        raise UsageError(f"unknown composition {method!r}; choose one of {', '.join(METHODS)}")
    w = _check_weight(text_weight)
    if method == "slerp":
        return slerp(image_vector, text_vector, w)
    return weighted_sum([image_vector, text_vector], [1.0 - w, w])


def composed_query(
    encoder: Encoder,
    image: str | Path,
    text: str,
    *,
    method: str = "slerp",
    text_weight: float = DEFAULT_TEXT_WEIGHT,
) -> np.ndarray:
    """Encode an example image file and a modifying text, then `compose` them -> (D,).

    Raises QueryError for an empty text or an image that cannot be read.
    """
    from clipsearch.search.engine import encode_plan
    from clipsearch.search.query import plan_from_parts

    if not text or not text.strip():
        raise QueryError("the text of a composed query is empty")
    image_vec = encode_plan(plan_from_parts(images=(str(image),)), encoder)
    text_vec = encoder.encode_texts([text.strip()])[0]
    return compose(image_vec, text_vec, method=method, text_weight=text_weight)
