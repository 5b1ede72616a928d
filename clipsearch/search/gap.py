"""Modality-gap correction for image→image search (Liang et al., NeurIPS 2022, "Mind the
Gap: Understanding the Modality Gap in Multi-modal Contrastive Representation Learning").

CLIP's image and text embeddings occupy two separate narrow cones; the gap vector is the
difference of their centres (DESIGN.md §5)::

    Δ = mean(image embeddings) − mean(text embeddings)

Within one modality the shared cone direction dominates every cosine, compressing the
range of image↔image similarities. The correction rescores an example-image query q
against gallery images g after moving both by a centre c and re-normalising::

    s'(q, g) = normalise(q − c) · normalise(g − c)

with ``mode="shift"``: c = Δ (both vectors moved onto the text cloud's centre, Liang et
al. §4.2's shift along the gap) or ``mode="center"``: c = mean(image) (plain centring,
removing the image cone's direction entirely). For a library, mean(image) is the mean of
its item vectors and mean(text) the mean of the caption bank (search/data/captions.txt);
both are cached under ``<library>/rerank/``. Which mode helps, if any, is measured in
docs/rerank.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import numpy as np

from clipsearch.errors import LibraryError, UsageError
from clipsearch.models.base import l2_normalize

if TYPE_CHECKING:
    from clipsearch.library import Library
    from clipsearch.search.engine import SearchOptions
    from clipsearch.search.hits import Hit

GapMode = Literal["shift", "center"]
MODES: tuple[str, ...] = ("shift", "center")


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

    def centre(self, mode: str) -> np.ndarray:
        check_mode(mode)
        return self.delta if mode == "shift" else self.image_mean.astype(np.float32)

    def correct(self, vectors: np.ndarray, *, mode: str = "shift") -> np.ndarray:
        """(N, D) or (D,) image vectors -> normalise(x − c), same shape, float32."""
        return l2_normalize(np.asarray(vectors, dtype=np.float32) - self.centre(mode))


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise UsageError(f"unknown gap-correction mode {mode!r}; choose one of {', '.join(MODES)}")


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
    queries: np.ndarray, gallery: np.ndarray, gap: ModalityGap, *, mode: str = "shift"
) -> np.ndarray:
    """s'(q, g) for (Q, D) image queries and a (G, D) image gallery -> (Q, G) float32."""
    return gap.correct(np.atleast_2d(queries), mode=mode) @ gap.correct(gallery, mode=mode).T


def library_gap(library: Library, *, captions: Sequence[str] | None = None) -> ModalityGap:
    """The library's gap: item vectors vs the caption bank, cached per catalog state.

    Raises UsageError for a library without indexed items.
    """
    from clipsearch.search.rerank import (
        _digest,
        _prune,
        _save_atomic,
        caption_vectors,
        default_captions,
        library_gallery,
        remember,
        remembered,
        state_key,
    )

    captions = list(captions) if captions is not None else default_captions()
    name = f"gap-{_digest(*captions)}"
    memo = remembered(library, name)
    if memo is not None:
        return memo
    state = state_key(library)
    folder = library.path / "rerank"
    path = folder / f"gap-{state}-{_digest(*captions)}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return remember(library, name, ModalityGap(z["image_mean"], z["text_mean"]))
        except (OSError, ValueError, KeyError):
            pass  # damaged: rebuild
    _, vectors = library_gallery(library)
    if len(vectors) == 0:
        raise UsageError(f"library {library.path} has no indexed items: no image cloud to correct")
    gap = estimate_gap(vectors, caption_vectors(library.encoder, captions, cache_dir=folder))
    try:
        _save_atomic(
            path, lambda f: np.savez(f, image_mean=gap.image_mean, text_mean=gap.text_mean)
        )
        _prune(folder, "gap-", keep=f"gap-{state}-")
    except LibraryError:
        pass  # read-only library
    return remember(library, name, gap)


def gap_corrected_search(
    library: Library,
    q: np.ndarray,
    options: SearchOptions,
    *,
    gap: ModalityGap | None = None,
    mode: str = "shift",
    widen: int = 3,
) -> list[Hit]:
    """Image→image search with the gap correction applied to the engine's candidates.

    q: the (D,) vector of an example-image (or video) query. The engine returns
    max(widen·(k + offset), 50) raw candidates (`candidate_count`); each is rescored by s'(q, g) on its
    item vector (a video's meanP vector) and the page is cut from the new order.
    """
    from clipsearch.search.rerank import candidate_count

    check_mode(mode)
    gap = gap if gap is not None else library_gap(library)
    need = options.k + options.offset
    hits = library.searcher().search(
        q, replace(options, k=candidate_count(options, widen=widen), offset=0)
    )
    if not hits:
        return []
    vecs = library.catalog.item_vectors([h.item_id for h in hits])
    qc = gap.correct(np.asarray(q, dtype=np.float32), mode=mode)  # (D,)
    scores = [
        float(gap.correct(vecs[h.item_id], mode=mode) @ qc) if h.item_id in vecs else h.score
        for h in hits
    ]
    order = sorted(range(len(hits)), key=lambda i: (-scores[i], hits[i].item_id))
    page = order[options.offset : need]
    return [
        replace(hits[i], score=scores[i], rank=r)
        for r, i in enumerate(page, start=options.offset + 1)
    ]
