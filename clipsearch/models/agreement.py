"""The accuracy gate: does an accelerated image encoder agree with fp32 on the user's media?

A reduced-precision or int8 image encoder is used for indexing only after it was measured
against the fp32 torch encoder on a sample of the library's own images that played no part
in its calibration. Two things must hold:

- per-image agreement: ``min_i cos(e_fp32(x_i), e_cand(x_i)) >= MIN_COSINE`` (0.99);
- ranking agreement: for sample text queries and for image queries, the top-10 neighbours
  among the check images ranked by candidate vectors overlap those ranked by fp32 vectors:
  ``mean_q |top10_fp32(q) ∩ top10_cand(q)| / 10 >= MIN_OVERLAP`` (0.9), for text and image
  queries separately. Queries are encoded the way search encodes them (text on the torch
  text tower; an image query by the fp32 image tower); an image query's own image is left
  out of its neighbours.

Published context: int8 ViT-B/32 lost 1.7 ImageNet zero-shot points (Neural Magic), and a
dynamically quantized ViT-B/32 image encoder gave "noticeably worse" results
(openai-clip-js #3), so quantization is measured, not assumed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from clipsearch.models.base import l2_normalize

MIN_COSINE = 0.99
MIN_OVERLAP = 0.9
TOP_K = 10


@dataclass(frozen=True)
class AgreementReport:
    """The gate's figures for one candidate encoder (stored with the built model)."""

    check_images: int  # images compared (disjoint from calibration)
    calibration_images: int  # images the candidate was calibrated on (0: none)
    min_cosine: float  # worst per-image cosine to fp32
    mean_cosine: float
    text_queries: int
    text_overlap: float  # mean top-k overlap over the text queries
    image_queries: int
    image_overlap: float  # mean top-k overlap over the image queries
    k: int  # neighbours compared per query
    passed: bool
    reason: str  # why it failed ("" when it passed)
    reference_img_s: float | None = None  # torch encoder on the check images (same run)
    candidate_img_s: float | None = None

    @property
    def speedup(self) -> float | None:
        """Candidate over torch image throughput measured during the check (None: not timed)."""
        if not self.reference_img_s or not self.candidate_img_s:
            return None
        return self.candidate_img_s / self.reference_img_s

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["speedup"] = self.speedup
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgreementReport:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**fields)

    def summary(self) -> str:
        """One line for people: the figures against their thresholds."""
        return (
            f"min cosine {self.min_cosine:.4f} (≥ {MIN_COSINE}), top-{self.k} overlap "
            f"text {self.text_overlap:.3f} / image {self.image_overlap:.3f} (≥ {MIN_OVERLAP}) "
            f"on {self.check_images} images"
        )


def top_k_overlap(
    queries: np.ndarray,
    gallery_ref: np.ndarray,
    gallery_cand: np.ndarray,
    k: int,
    *,
    exclude_diagonal: bool = False,
) -> np.ndarray:
    """Per-query overlap |top-k(ref) ∩ top-k(cand)| / k, shape (Q,).

    queries (Q, D), galleries (N, D), rows L2-normalised. With ``exclude_diagonal``
    query i is gallery item i and is left out of its own neighbours (Q == N).
    """
    s_ref = queries @ gallery_ref.T  # (Q, N)
    s_cand = queries @ gallery_cand.T  # (Q, N)
    if exclude_diagonal:
        np.fill_diagonal(s_ref, -np.inf)
        np.fill_diagonal(s_cand, -np.inf)
    n = s_ref.shape[1] - (1 if exclude_diagonal else 0)
    k = max(1, min(k, n))
    top_ref = np.argpartition(-s_ref, k - 1, axis=1)[:, :k]
    top_cand = np.argpartition(-s_cand, k - 1, axis=1)[:, :k]
    return np.array(
        [
            len(np.intersect1d(a, b, assume_unique=True)) / k
            for a, b in zip(top_ref, top_cand, strict=True)
        ],
        dtype=np.float64,
    )


def measure_agreement(
    reference: np.ndarray,
    candidate: np.ndarray,
    text_queries: np.ndarray,
    *,
    calibration_images: int = 0,
    k: int = TOP_K,
    min_cosine: float = MIN_COSINE,
    min_overlap: float = MIN_OVERLAP,
    reference_img_s: float | None = None,
    candidate_img_s: float | None = None,
) -> AgreementReport:
    """Compare candidate image vectors with fp32 ones for the same check images.

    reference, candidate: (N, D) vectors of the same N images (fp32 torch, candidate);
    text_queries: (T, D) text vectors from the search text encoder (T may be 0).
    Raises ValueError when the shapes disagree or fewer than 2 images are given.
    """
    ref = l2_normalize(reference)
    cand = l2_normalize(candidate)
    if ref.shape != cand.shape or ref.ndim != 2:
        raise ValueError(f"reference {ref.shape} and candidate {cand.shape} must be equal (N, D)")
    if len(ref) < 2:
        raise ValueError("the accuracy check needs at least 2 images")
    cos = np.sum(ref * cand, axis=1)  # (N,)
    texts = (
        l2_normalize(text_queries) if len(text_queries) else np.zeros((0, ref.shape[1]), np.float32)
    )
    text_ov = top_k_overlap(texts, ref, cand, k) if len(texts) else np.ones(0)
    image_ov = top_k_overlap(ref, ref, cand, k, exclude_diagonal=True)
    k_used = max(1, min(k, len(ref) - 1))
    report = dict(
        check_images=len(ref),
        calibration_images=int(calibration_images),
        min_cosine=float(cos.min()),
        mean_cosine=float(cos.mean()),
        text_queries=len(texts),
        text_overlap=float(text_ov.mean()) if len(text_ov) else 1.0,
        image_queries=len(ref),
        image_overlap=float(image_ov.mean()),
        k=k_used,
        reference_img_s=reference_img_s,
        candidate_img_s=candidate_img_s,
    )
    failures = []
    if report["min_cosine"] < min_cosine:
        failures.append(f"min cosine {report['min_cosine']:.4f} < {min_cosine}")
    if report["text_overlap"] < min_overlap:
        failures.append(f"text top-{k_used} overlap {report['text_overlap']:.3f} < {min_overlap}")
    if report["image_overlap"] < min_overlap:
        failures.append(f"image top-{k_used} overlap {report['image_overlap']:.3f} < {min_overlap}")
    return AgreementReport(**report, passed=not failures, reason="; ".join(failures))
