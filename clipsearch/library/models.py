"""The models of one library, each loaded on first use, once: the CLIP encoder (checked
against the library's model binding), the encoder of search queries, and the BLIP matcher
and captioner.

`LibraryModels` owns them. The other collaborators reach them through a `ModelSource`,
which the `Library` itself is: a subclass of `Library` that overrides ``encoder`` (a test
that makes the model fail, say) is then what indexing, search and import see."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from clipsearch.errors import ModelMismatchError
from clipsearch.models.base import Encoder
from clipsearch.store import Catalog

if TYPE_CHECKING:
    from clipsearch.models.blip import Captioner, ImageTextMatcher


class ModelSource(Protocol):
    """The models as the rest of the library uses them (`Library` is one)."""

    @property
    def model_spec(self) -> str: ...

    @property
    def encoder(self) -> Encoder: ...

    @property
    def query_encoder(self) -> Encoder: ...

    @property
    def matcher(self) -> ImageTextMatcher: ...

    @property
    def captioner(self) -> Captioner: ...


class LibraryModels:
    """The models a `Library` uses (its constructor's model arguments, as documented there).

    lock: the library's lock; every model is loaded under it, so two threads asking at
    once load it once.
    """

    def __init__(
        self,
        path: Path,
        catalog: Catalog,
        *,
        model: str | None,
        precision: str,
        encoder: Encoder | None,
        itm_model: str | None,
        caption_model: str | None,
        matcher: ImageTextMatcher | None,
        captioner: Captioner | None,
        lock: threading.RLock,
    ) -> None:
        self.path = path
        self.catalog = catalog
        self.model = model  # the spec asked for, or None: the library's own
        self.precision = precision
        self.injected = encoder is not None  # given an encoder object (Ray cannot rebuild it)
        self._encoder = encoder
        self._query_encoder: Encoder | None = None
        self._encoder_checked = False  # the binding's fingerprint is checked once, on first use
        self._lock = lock
        self._itm_model, self._caption_model = itm_model, caption_model
        self._matcher, self._captioner = matcher, captioner

    @property
    def model_spec(self) -> str:
        """The spec of the model this library uses (without loading it)."""
        if self._encoder is not None:
            return self._encoder.spec
        binding = self.catalog.model_binding()
        if self.model is not None:
            return self.model
        if binding is not None:
            return binding.spec
        chosen = self.catalog.chosen_model()  # a first index interrupted while loading
        if chosen is not None:
            return chosen
        from clipsearch.models import DEFAULT_MODEL

        return DEFAULT_MODEL

    @property
    def named(self) -> bool:
        """Whether the library was opened with a model (named, or given as an object)."""
        return self.model is not None or self.injected

    @property
    def loaded(self) -> bool:
        """True once the model (or the text tower queries use) is in memory."""
        return self._encoder is not None or self._query_encoder is not None

    def query_encoder(self, encoder: Callable[[], Encoder]) -> Encoder:
        """The encoder of search queries (`Library.query_encoder`): the text tower's ready
        copy, whose images go to ``encoder()``, else ``encoder()`` itself."""
        with self._lock:
            if self._query_encoder is None:  # asked again until it exists (a first index
                self._query_encoder = self._text_tower(encoder)  # binds the model, writes the copy)
            return self._query_encoder or encoder()

    def _text_tower(self, encoder: Callable[[], Encoder]) -> Encoder | None:
        if self.injected or self.precision not in ("auto", "fp32"):
            return None
        binding = self.catalog.model_binding()
        if binding is None or self.model not in (None, binding.spec):
            return None
        from clipsearch.models.text_tower import load_ready_copy

        return load_ready_copy(binding.fingerprint, images=encoder, spec=binding.spec)

    @property
    def encoder(self) -> Encoder:
        """The model, loaded on first use (thread-safe); ModelMismatchError when the library
        is bound to another model."""
        with self._lock:
            if not self._encoder_checked:
                if self._encoder is None:
                    from clipsearch.models import load_encoder

                    self._encoder = load_encoder(self.model_spec, precision=self.precision)
                self._encoder_checked = True
                binding = self.catalog.model_binding()
                if binding is not None and binding.fingerprint != self._encoder.fingerprint:
                    enc, self._encoder_checked = self._encoder, False  # raise on every use
                    raise ModelMismatchError(
                        f"library {self.path} is bound to model {binding.spec} "
                        f"(fingerprint {binding.fingerprint}), not {enc.spec} (fingerprint "
                        f"{enc.fingerprint}). Leave out --model to use the library's model, "
                        "or pick another --library."
                    )
            return self._encoder

    def for_indexing(self, encoder: Callable[[], Encoder]) -> Encoder:
        """The model for an index run: ``encoder()``, or for a library already bound to the
        requested model a `DeferredEncoder` that calls it only when a file needs encoding
        (a run over unchanged files never loads, or imports, the model)."""
        binding = self.catalog.model_binding()
        if self._encoder is not None or binding is None or self.model not in (None, binding.spec):
            return encoder()
        from clipsearch.models.deferred import DeferredEncoder

        return DeferredEncoder(
            spec=binding.spec,
            fingerprint=binding.fingerprint,
            dim=binding.dim,
            load=encoder,
        )

    @property
    def matcher(self) -> ImageTextMatcher:
        """The BLIP ITM model, loaded on first use (thread-safe). Raises as
        `clipsearch.models.blip.load_matcher`."""
        with self._lock:
            if self._matcher is None:
                from clipsearch.models.blip import load_matcher

                self._matcher = load_matcher(self._itm_model, precision=self.precision)
            return self._matcher

    @property
    def captioner(self) -> Captioner:
        """The BLIP captioning model, loaded on first use (thread-safe)."""
        with self._lock:
            if self._captioner is None:
                from clipsearch.models.blip import load_captioner

                self._captioner = load_captioner(self._caption_model, precision=self.precision)
            return self._captioner
