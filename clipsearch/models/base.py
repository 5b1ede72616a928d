"""The `Encoder` protocol: what every model backend gives the rest of clipsearch.

An encoder maps images and texts into one space. Vectors are float32 numpy arrays,
L2-normalised, shape (N, dim). Pixel preprocessing is separate from encoding so the
indexing pipeline can run it in decode workers while the model encodes the previous
batch (docs/architecture.md#threads-and-processes).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

# numpy is imported where vectors are made: code that only names the model (its binding,
# a run over unchanged files) imports neither numpy nor Pillow.
if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """Return ``x`` scaled to unit L2 norm along ``axis`` as float32 (zero rows stay zero)."""
    import numpy as np

    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, eps)


class Encoder(ABC):
    """A dual encoder. Subclasses implement the four abstract members; the rest is derived.

    Attributes a subclass sets:
        spec: the model spec string that names this model everywhere (see models.spec).
        dim: embedding dimension.
        fingerprint: stable id of spec + weights + dim; a library is bound to it.
        logit_scale: the model's learned temperature (exp'd), for zero-shot probabilities.
        context_length: the text encoder's token limit.
    """

    spec: str
    dim: int
    fingerprint: str
    logit_scale: float = 100.0
    context_length: int = 77

    @abstractmethod
    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One RGB PIL image -> (3, H, W) float32 model input. Thread-safe, no model needed."""

    @abstractmethod
    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 preprocessed batch -> (N, dim) float32, L2-normalised."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """N strings -> (N, dim) float32, L2-normalised. Over-long texts are truncated."""

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """N RGB PIL images -> (N, dim) float32, L2-normalised."""
        import numpy as np

        if len(images) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_pixels(np.stack([self.preprocess(im) for im in images]))
