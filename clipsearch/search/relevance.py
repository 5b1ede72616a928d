"""Where the relevant results of one query end: a per-query score cut-off.

A cosine means different things for different queries: with CLIP, one caption's
unrelated images sit around 0.12 and another's around 0.22, so no single threshold
separates "relevant" from "the rest" for every query (ente's 0.175 is such a global
value); and an image query's unrelated images score 0.5–0.95, where copies score 0.99.
The cut-off here is set per query, from that query's own scores over the library:

    b = B·q                        scores of a fixed random sample B (S, D) of the
                                   library's item vectors (S ≤ 4096)
    x = −ln(1 − b)                 the scores on a scale that is ≈ b for text–image
                                   cosines (0.1–0.4) and spreads out the image–image
                                   cosines that crowd below 1 (1 − s is half the squared
                                   distance of unit vectors: nearness is multiplicative)
    μ = median(x),  σ = 1.4826·MAD(x)          robust location and spread of the
                                   background: most of a library is unrelated to any
                                   one query, and relevant items (up to half of the
                                   sample) do not move these
    τ(q) = 1 − exp(−(μ + z(N)·σ)),  z(N) = Φ⁻¹(1 − α/N)

An item is relevant when its score is ≥ τ(q). ``z`` grows with the library's size N
(3.1 for 1,000 items, 3.7 for 10,000, 4.8 for 1M): were the background Gaussian, about
α = 1 unrelated item in the whole library would pass the cut, whatever its size — the
per-test level of a Bonferroni correction over N items. This is the score normalisation
of score-distribution methods (Manmatha, Rath & Feng, SIGIR 2001; Arampatzis, Kamps &
Robertson, SIGIR 2009: model the non-relevant scores, cut where the relevant begin) with
a robust fit and a size-aware z; docs/search.md has the measurements that chose it.

The background comes from the whole library, never from the filtered result set: a
narrow filter (one folder of junk) must not make its best junk "relevant".

A floor ``MIN_SPREAD`` keeps σ away from 0 for libraries where most items score exactly
alike (a fake encoder, a library of one repeated picture).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Literal

import numpy as np

from clipsearch.errors import UsageError

if TYPE_CHECKING:
    from clipsearch.store import Catalog

Cutoff = Literal["auto", "none"]
MinScore = float | Cutoff  # what a user asks for: "auto", "none" or a score
CUTOFFS: tuple[Cutoff, ...] = ("auto", "none")
SAMPLE_SIZE = 4096  # background sample: item vectors scored per query (S)
FALSE_ALARMS = 1.0  # α: unrelated items expected above the cut under a Gaussian background
MIN_SPREAD = 0.01  # σ floor, cosine units
MAD_TO_SIGMA = 1.4826  # σ of a normal distribution = 1.4826·MAD
_NEAR_ONE = 1.0 - 1e-6  # scores are clipped here before −ln(1 − s)


def parse_min_score(value: object) -> MinScore:
    """``"auto"``, ``"none"`` (or None), or a number (a string like ``"0.2"`` is read as
    one) -> the `MinScore` it means. Raises UsageError for anything else."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        raise UsageError(f"min_score must be auto, none or a number, not {value!r}")
    if isinstance(value, int | float):
        score = float(value)
    else:
        text = str(value).strip().lower()
        if text in CUTOFFS:
            return text  # type: ignore[return-value]
        try:
            score = float(text)
        except ValueError:
            raise UsageError(
                f"min_score must be auto, none or a number such as 0.2, not {value!r}"
            ) from None
    if not math.isfinite(score) or not -1.0 <= score <= 1.0:
        raise UsageError(f"a min_score number must be a cosine in [-1, 1], got {value!r}")
    return score


def z_for(library_size: int, false_alarms: float = FALSE_ALARMS) -> float:
    """z(N) = Φ⁻¹(1 − α/N): the standard score that α of N Gaussian draws exceed."""
    n = max(int(library_size), 2)
    tail = min(max(false_alarms / n, 1e-12), 0.5)
    return NormalDist().inv_cdf(1.0 - tail)


@dataclass(frozen=True)
class Background:
    """A fixed sample of a library's item vectors, to read any query's background from.

    vectors: (S, D) float32 unit rows, a uniform random sample of the item-level vectors
        (images, and videos by their meanP vector).
    library_size: N, how many item vectors the sample stands for.
    """

    vectors: np.ndarray
    library_size: int

    def threshold(self, q: np.ndarray, *, z: float | None = None) -> float | None:
        """τ(q) = μ + z·σ (module docstring) for a query vector (D,); ``z`` defaults to
        z(N). None for an empty library (nothing to cut)."""
        if len(self.vectors) == 0:
            return None
        b = self.vectors @ np.asarray(q, dtype=np.float32)  # (S,)
        return background_threshold(b, z=z_for(self.library_size) if z is None else z)

    @classmethod
    def from_catalog(
        cls, catalog: Catalog, *, size: int = SAMPLE_SIZE, seed: int = 0
    ) -> Background:
        """A sample of ``size`` item vectors of ``catalog`` (all of them when fewer), drawn
        with a fixed seed so a query's cut is the same from one search to the next."""
        ids = catalog.item_vector_ids()
        n = len(ids)
        if n > size:
            ids = np.sort(np.random.default_rng(seed).choice(ids, size=size, replace=False))
        vectors = catalog.fetch_vectors(ids).astype(np.float32) if len(ids) else None
        if vectors is None:
            vectors = np.zeros((0, 0), dtype=np.float32)
        return cls(vectors, n)


def background_threshold(scores: np.ndarray, *, z: float) -> float:
    """τ = 1 − exp(−(μ + z·σ)) for background ``scores`` (S,): the median and MAD-based
    spread of x = −ln(1 − s), σ ≥ MIN_SPREAD (module docstring)."""
    x = -np.log1p(-np.minimum(np.asarray(scores, dtype=np.float64), _NEAR_ONE))
    mu = float(np.median(x))
    sigma = max(MAD_TO_SIGMA * float(np.median(np.abs(x - mu))), MIN_SPREAD)
    return float(-np.expm1(-(mu + z * sigma)))


class BackgroundCache:
    """A library's `Background`, drawn once per catalog generation (thread-safe)."""

    def __init__(self, catalog: Catalog, *, size: int = SAMPLE_SIZE) -> None:
        self.catalog = catalog
        self.size = size
        self._value: tuple[int, Background] | None = None
        self._lock = threading.Lock()

    def get(self) -> Background:
        generation = self.catalog.generation()
        with self._lock:
            if self._value is not None and self._value[0] == generation:
                return self._value[1]
        background = Background.from_catalog(self.catalog, size=self.size)
        with self._lock:
            self._value = (generation, background)
        return background


def resolve_min_score(
    min_score: MinScore, q: np.ndarray, background: BackgroundCache | Background
) -> float | None:
    """The score cut for query ``q``: the number itself, τ(q) for "auto", None for "none"."""
    value = parse_min_score(min_score)
    if value == "none":
        return None
    if value == "auto":
        bg = background.get() if isinstance(background, BackgroundCache) else background
        return bg.threshold(q)
    return float(value)
