"""Modality-gap correction for image→image search (Liang et al., NeurIPS 2022, "Mind the
Gap: Understanding the Modality Gap in Multi-modal Contrastive Representation Learning").

CLIP's image and text embeddings occupy two separate narrow cones; the gap vector is the
difference of their centres (docs/rerank.md)::

    Δ = mean(image embeddings) − mean(text embeddings)

Within one modality the shared cone direction dominates every cosine, compressing the
range of image↔image similarities. The correction rescores an example-image query q
against gallery images g after moving both by a centre c and re-normalising::

    s'(q, g) = normalise(q − c) · normalise(g − c)

with ``mode="shift"``: c = Δ (both vectors moved onto the text cloud's centre, Liang et
al. §4.2's shift along the gap) or ``mode="center"``: c = mean(image) (plain centring,
removing the image cone's direction entirely). For a library, mean(image) is the mean of
its item vectors and mean(text) the mean of the caption bank (search/data/captions.txt);
both are cached by `clipsearch.search.banks.BankCache.gap`. In a search, `GapRescorer`
applies s' to the engine's candidates. Which mode helps, if any, is measured in
docs/rerank.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast, get_args

import numpy as np

from clipsearch.errors import UsageError
from clipsearch.models.base import l2_normalize
from clipsearch.search.rescore import WidenedDepth

if TYPE_CHECKING:
    from clipsearch.search.hits import Hit
    from clipsearch.search.rescore import Query

GapMode = Literal["shift", "center"]  # the centre c the vectors are moved by (module docstring)
MODES: tuple[GapMode, ...] = get_args(GapMode)


@dataclass(frozen=True)
class ModalityGap:
    """Centres of the two embedding clouds. image_mean, text_mean: (D,) float32 (not unit)."""

    image_mean: np.ndarray
    text_mean: np.ndarray

    @property
    def delta(self) -> np.ndarray:
        """Δ = mean(image) − mean(text), (D,)."""
        return (self.image_mean - self.text_mean).astype(np.float32)

    @property
    def magnitude(self) -> float:
        """‖Δ‖ (Liang et al. report ≈ 0.82 for CLIP ViT-B/32 on MSCOCO)."""
        return float(np.linalg.norm(self.delta))

    def centre(self, mode: GapMode) -> np.ndarray:
        check_mode(mode)
        return self.delta if mode == "shift" else self.image_mean.astype(np.float32)

    def correct(self, vectors: np.ndarray, *, mode: GapMode = "shift") -> np.ndarray:
        """(N, D) or (D,) image vectors -> normalise(x − c), same shape, float32."""
        return l2_normalize(np.asarray(vectors, dtype=np.float32) - self.centre(mode))


def check_mode(mode: str) -> GapMode:
    """``mode`` if it is one of `MODES`, else UsageError naming them."""
    if mode not in MODES:
        raise UsageError(f"unknown gap-correction mode {mode!r}; choose one of {', '.join(MODES)}")
    return cast(GapMode, mode)


def estimate_gap(image_vectors: np.ndarray, text_vectors: np.ndarray) -> ModalityGap:
    """The gap from (N, D) image and (M, D) text embeddings (L2-normalised rows).

    Raises UsageError if either side is empty or their widths differ.
    """
    img = np.asarray(image_vectors, dtype=np.float32)
    txt = np.asarray(text_vectors, dtype=np.float32)
    if img.ndim != 2 or txt.ndim != 2 or len(img) == 0 or len(txt) == 0:
        raise UsageError("the modality gap needs at least one image and one text embedding")
    if img.shape[1] != txt.shape[1]:
        raise UsageError(f"image width {img.shape[1]} != text width {txt.shape[1]}")
    return ModalityGap(img.mean(axis=0), txt.mean(axis=0))


def corrected_similarity(
    queries: np.ndarray, gallery: np.ndarray, gap: ModalityGap, *, mode: GapMode = "shift"
) -> np.ndarray:
    """s'(q, g) for (Q, D) image queries and a (G, D) image gallery -> (Q, G) float32."""
    return gap.correct(np.atleast_2d(queries), mode=mode) @ gap.correct(gallery, mode=mode).T


@dataclass(frozen=True)
class GapRescorer(WidenedDepth):
    """A `clipsearch.search.rescore.Rescorer` for image→image search with the gap corrected.

    The query vector is that of an example image (or video). Each of the
    max(widen·(k + offset), 50) raw candidates is rescored by s'(q, g) on its item vector
    (a video's meanP vector); a candidate without one keeps its raw score.

    gap: the library's `ModalityGap` (`clipsearch.search.banks.BankCache.gap`).
    item_vectors: item ids -> {id: (D,) item-level vector}, e.g. ``Catalog.item_vectors``.
    """

    gap: ModalityGap
    item_vectors: Callable[[list[int]], Mapping[int, np.ndarray]]
    mode: GapMode = "shift"

    def __post_init__(self) -> None:
        check_mode(self.mode)

    def rescore(self, query: Query, hits: Sequence[Hit]) -> np.ndarray:
        vecs = self.item_vectors([h.item_id for h in hits])
        qc = self.gap.correct(np.asarray(query.vector, dtype=np.float32), mode=self.mode)  # (D,)
        return np.array(
            [
                float(self.gap.correct(vecs[h.item_id], mode=self.mode) @ qc)
                if h.item_id in vecs
                else h.score
                for h in hits
            ]
        )
