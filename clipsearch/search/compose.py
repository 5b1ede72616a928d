"""Query composition: how the parts of a query become one vector (docs/rerank.md).

Every way of putting a query together ends in one rule (`weighted_sum`)::

    q = normalise(Σᵢ wᵢ · normalise(eᵢ))

refused when the terms cancel out (‖Σ‖ ≈ 0). The parts eᵢ are the query grammar's terms
(texts, example image/video files, `encode_plan`), decoded example images, and stored
vectors of catalog items ("more like this"); `QueryParts` gathers them with a weight per
group (text, images, items), as the HTTP API and `Library.compose_query` take them::

    q = normalise(w_t · Σⱼ aⱼ·normalise(tⱼ) + w_i · Σ normalise(uᵢ) + w_l · Σ normalise(vₖ))

with aⱼ the grammar's per-term weights.

Composed image+text queries, "this shirt, but in red": two ways to combine an image
vector v and a text vector t (both L2-normalised), with the text weight λ ∈ [0, 1]:

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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipsearch.errors import MediaError, QueryError, UsageError
from clipsearch.models.base import l2_normalize
from clipsearch.search.choices import COMPOSITIONS, DEFAULT_TEXT_WEIGHT, Composition
from clipsearch.search.engine import decode_side
from clipsearch.search.query import QueryPlan, plan_from_parts

if TYPE_CHECKING:
    from PIL import Image

    from clipsearch.models.base import Encoder

METHODS = COMPOSITIONS
EMPTY_QUERY = "the query is empty: type some text, drop an image, or pick an item"


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
    """q = normalise(Σ wᵢ · normalise(vᵢ)) -> (D,) float32: the one way query parts combine.

    Raises QueryError when a vector is zero or not finite, or the terms cancel out;
    UsageError when there is no vector or the weights do not match the vectors.
    """
    if len(vectors) == 0 or len(vectors) != len(weights):
        raise UsageError("give one weight per vector, and at least one vector")
    q = np.sum([w * _unit(v, "query") for v, w in zip(vectors, weights, strict=True)], axis=0)
    if float(np.linalg.norm(q)) < 1e-6:
        raise QueryError("the query's terms cancel out: nothing is left to search for")
    return l2_normalize(q)


# --- the query grammar's terms ---------------------------------------------------------------
def embed_terms(
    plan: QueryPlan, encoder: Encoder, *, video_sampler: str = "uniform:12"
) -> np.ndarray:
    """One embedding per term of ``plan``, in its order -> (T, D) float32: the texts in one
    encoder call, an example image by its vector, an example video by its meanP vector.

    Raises QueryError when a query file is not readable media.
    """
    texts = [t.value for t in plan.terms if t.kind == "text"]
    text_vectors = iter(encoder.encode_texts(texts) if texts else ())
    rows = []
    for term in plan.terms:
        if term.kind == "text":
            rows.append(next(text_vectors))
        elif term.kind == "image":
            rows.append(_embed_image(term.value, encoder))
        else:
            rows.append(_embed_video(term.value, encoder, video_sampler))
    return np.stack(rows).astype(np.float32, copy=False)


def encode_plan(
    plan: QueryPlan, encoder: Encoder, *, video_sampler: str = "uniform:12"
) -> np.ndarray:
    """Embed a query plan: q = normalise(Σ wᵢ eᵢ), shape (D,), float32.

    Raises QueryError when a query file is not readable media, or the terms cancel out.
    """
    vectors = embed_terms(plan, encoder, video_sampler=video_sampler)
    return weighted_sum(list(vectors), [t.weight for t in plan.terms])


def _embed_image(path: str, encoder: Encoder) -> np.ndarray:
    from clipsearch.media import load_image

    try:
        image = load_image(path, min_side=decode_side(encoder)).image
    except MediaError as e:
        raise QueryError(f"query image {path} cannot be used: {e}") from e
    return encoder.encode_images([image])[0]


def _embed_video(path: str, encoder: Encoder, sampler: str) -> np.ndarray:
    from clipsearch.media.sampling import FrameSampler
    from clipsearch.media.video import decode_frames
    from clipsearch.search.video import meanp

    try:
        decoded = decode_frames(path, FrameSampler.parse(sampler))
    except MediaError as e:
        raise QueryError(f"query video {path} cannot be used: {e}") from e
    frames = encoder.encode_images([f.image for f in decoded.frames])  # (F, D)
    return meanp(frames)


# --- text, images and items together -----------------------------------------------------------
@dataclass(frozen=True)
class QueryParts:
    """The parts of one query before they are encoded and combined (module docstring).

    plan: the parsed text (grammar terms, maybe example files), or None.
    images: decoded example images (e.g. uploads).
    liked: stored (D,) vectors of catalog items to search like (videos: meanP).
    text_weight, image_weight, like_weight: w_t, w_i, w_l.

    Encoding can happen elsewhere (the server batches texts on its model thread): pass the
    vectors to `combine`; or let `encode` do it all with one encoder.
    """

    plan: QueryPlan | None = None
    images: tuple[Image.Image, ...] = ()
    liked: tuple[np.ndarray, ...] = ()
    text_weight: float = 1.0
    image_weight: float = 1.0
    like_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.plan is None and not self.images and not self.liked:
            raise QueryError(EMPTY_QUERY)

    def combine(
        self, term_vectors: np.ndarray | None = None, image_vectors: np.ndarray | None = None
    ) -> np.ndarray:
        """q (D,) from the plan's term vectors (T, D) (`embed_terms` order) and the images'
        vectors (U, D). Raises QueryError when the parts cancel out."""
        vectors: list[np.ndarray] = []
        weights: list[float] = []
        if self.plan is not None:
            vectors.extend(_rows(term_vectors, len(self.plan.terms), "term"))
            weights.extend(self.text_weight * t.weight for t in self.plan.terms)
        if self.images:
            vectors.extend(_rows(image_vectors, len(self.images), "image"))
            weights.extend([self.image_weight] * len(self.images))
        vectors.extend(self.liked)
        weights.extend([self.like_weight] * len(self.liked))
        return weighted_sum(vectors, weights)

    def encode(self, encoder: Encoder, *, video_sampler: str = "uniform:12") -> np.ndarray:
        """Encode the plan and the images with ``encoder``, then `combine` -> (D,)."""
        terms = None
        if self.plan is not None:
            terms = embed_terms(self.plan, encoder, video_sampler=video_sampler)
        images = encoder.encode_images(list(self.images)) if self.images else None
        return self.combine(terms, images)


def _rows(vectors: np.ndarray | None, n: int, what: str) -> list[np.ndarray]:
    if vectors is None or len(vectors) != n:
        got = "none" if vectors is None else len(vectors)
        raise UsageError(f"give one vector per query {what}: {n} expected, got {got}")
    return list(vectors)


# --- composed image + text ---------------------------------------------------------------------
def compose(
    image_vector: np.ndarray,
    text_vector: np.ndarray,
    *,
    method: Composition = "slerp",
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
    method: Composition = "slerp",
    text_weight: float = DEFAULT_TEXT_WEIGHT,
) -> np.ndarray:
    """Encode an example image file and a modifying text, then `compose` them -> (D,).

    Raises QueryError for an empty text or an image that cannot be read.
    """
    if not text or not text.strip():
        raise QueryError("the text of a composed query is empty")
    image_vec = encode_plan(plan_from_parts(images=(str(image),)), encoder)
    text_vec = encoder.encode_texts([text.strip()])[0]
    return compose(image_vec, text_vec, method=method, text_weight=text_weight)
