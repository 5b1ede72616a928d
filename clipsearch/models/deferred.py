"""`DeferredEncoder`: a model known by its binding, loaded only when something needs it.

A library bound to a model knows that model's spec, fingerprint and dimension from its
catalog. Work that needs no more than those (binding checks, an index run over unchanged
files, status) should not pay for loading weights: seconds and hundreds of MB on a
laptop, and importing torch. `DeferredEncoder` stands in for the encoder with those three
values and loads the real one on the first call that needs the model (``preprocess``,
``encode_*``, or any other attribute), once, thread-safely.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from clipsearch.models.base import Encoder

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


class DeferredEncoder(Encoder):
    """An `Encoder` whose model is loaded by ``load()`` on first use.

    spec, fingerprint, dim: the model's identity, known without loading it (e.g. from the
        library's binding). ``load`` must return an encoder with this fingerprint (the
        caller checks; `Library.encoder` does).
    """

    def __init__(self, *, spec: str, fingerprint: str, dim: int, load: Callable[[], Encoder]):
        self.spec = spec
        self.fingerprint = fingerprint
        self.dim = int(dim)
        self._load = load
        self._loaded: Encoder | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        state = "loaded" if self._loaded is not None else "not loaded"
        return f"DeferredEncoder({self.spec!r}, {state})"

    @property
    def loaded(self) -> bool:
        """True once the model has been loaded."""
        return self._loaded is not None

    def target(self) -> Encoder:
        """The real encoder, loaded now if it was not yet."""
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    # Encoder declares these as class attributes: forward them, or the defaults would answer.
    @property
    def logit_scale(self) -> float:  # type: ignore[override]
        return self.target().logit_scale

    @property
    def context_length(self) -> int:  # type: ignore[override]
        return self.target().context_length

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.target().preprocess(image)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self.target().encode_pixels(pixels)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.target().encode_texts(texts)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.target().encode_images(images)

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes not set here (image_size, precision, model...).
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.target(), name)
