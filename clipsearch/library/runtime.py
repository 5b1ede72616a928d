"""The image-encoder runtime a library indexes with: the settings it remembers in
``<library>/runtime.json`` (or was given), the per-run choice, and the encoders built
under ``<library>/runtime/`` (`clipsearch.models.runtime`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from clipsearch.ingest import IndexEvent
from clipsearch.models.base import Encoder
from clipsearch.models.runtime import RuntimeSettings
from clipsearch.store import Catalog


class LibraryRuntime:
    """The runtime settings of the library at ``path``: the remembered ones with the given
    ``runtime`` / ``quantize`` over them (UsageError for unknown names). Given ones are
    remembered by the next index run (`remember_given`)."""

    def __init__(self, path: Path, *, runtime: str | None, quantize: str | None) -> None:
        self.path = path
        self.settings = RuntimeSettings.load(path).replace(runtime=runtime, quantize=quantize)
        self._given = runtime is not None or quantize is not None

    def remember_given(self) -> None:
        """Save the settings this object was given, if they differ from the saved ones."""
        if self._given and self.settings != RuntimeSettings.load(self.path):
            self.settings.save(self.path)

    def set(self, *, runtime: str | None = None, quantize: str | None = None) -> RuntimeSettings:
        """Choose and remember the runtime and quantization (`Library.set_runtime`)."""
        from clipsearch.errors import MissingDependencyError
        from clipsearch.models.runtime import openvino_available

        settings = self.settings.replace(runtime=runtime, quantize=quantize)
        if settings.runtime == "openvino" and not openvino_available():
            raise MissingDependencyError("openvino", "openvino")
        self.path.mkdir(parents=True, exist_ok=True)
        settings.save(self.path)
        self.settings, self._given = settings, False
        return settings

    def chooser(
        self, encoder: Encoder, catalog: Catalog, on_event: Callable[[IndexEvent], None] | None
    ):
        """The `ImageRuntimeChooser` of an index run that encodes with ``encoder``."""
        from clipsearch.ingest.runtime_choice import ImageRuntimeChooser
        from clipsearch.search.banks import default_captions

        def reference() -> Encoder:
            if getattr(encoder, "precision", None) == "fp32" or not hasattr(encoder, "model"):
                return encoder
            from clipsearch.models import load_encoder

            return load_encoder(encoder.spec, precision="fp32")

        return ImageRuntimeChooser(
            base=encoder,
            settings=self.settings,
            folder=self.path / "runtime",
            catalog=catalog,
            load_reference=reference,
            captions=default_captions(),
            emit=on_event,
        )

    def info(self, catalog: Catalog) -> dict[str, Any]:
        """The settings and the image encoders built for the library's model, with their
        accuracy-gate figures (`Library.runtime_info`)."""
        from clipsearch.models.runtime_cache import RuntimeCache

        binding = catalog.model_binding()
        builds = [
            {
                "runtime": e.key.runtime,
                "precision": e.key.precision,
                "built_at": e.built_at,
                "versions": e.versions,
                **e.info,
                "gate": e.gate,
            }
            for e in RuntimeCache(self.path / "runtime").entries()
            if binding is None or e.key.fingerprint == binding.fingerprint
        ]
        return {**self.settings.to_dict(), "builds": builds}
