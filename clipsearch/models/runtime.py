"""Which runtime runs the image encoder when indexing, and whether it is quantized.

A library remembers one `RuntimeSettings` (``<library>/runtime.json``):

- ``runtime``: ``torch`` (open_clip in PyTorch, the reference), ``openvino`` (the image tower
  exported to OpenVINO IR), or ``auto``: OpenVINO when it is installed, the indexing run is
  large enough to pay for the one-time export, it passes the accuracy gate and it measured
  faster than torch on the library's own images; torch otherwise.
- ``quantize``: ``none`` or ``int8`` (NNCF post-training quantization of the image tower,
  calibrated on the library's own images; needs OpenVINO).

Text queries always run on the torch encoder at the library's precision (fp32 or bf16):
a single query's latency matters there, not throughput. Whatever runs the image tower, the
vectors stay in the model's space: the library's binding is the model fingerprint, and an
accelerated encoder is only used after `clipsearch.models.agreement` measured it against
fp32 on the library's own media.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from clipsearch.errors import UsageError

Runtime = Literal["auto", "torch", "openvino"]
Quantize = Literal["none", "int8"]
RUNTIMES: tuple[str, ...] = ("auto", "torch", "openvino")
QUANTIZE_MODES: tuple[str, ...] = ("none", "int8")

# "auto" tries OpenVINO only for runs that encode at least this many images: below it the
# one-time export, calibration and accuracy check cost more than they save.
AUTO_MIN_IMAGES = 1000


@dataclass(frozen=True)
class RuntimeSettings:
    """The image-encoder runtime a library indexes with (see the module docstring)."""

    runtime: Runtime = "auto"  # auto | torch | openvino
    quantize: Quantize = "none"  # none | int8 (int8 needs the OpenVINO runtime)

    FILE = "runtime.json"

    def __post_init__(self) -> None:
        runtime = str(self.runtime).strip().lower()
        quantize = str(self.quantize).strip().lower()
        if runtime not in RUNTIMES:
            raise UsageError(
                f"Unknown runtime {self.runtime!r}: choose one of {', '.join(RUNTIMES)}."
            )
        if quantize not in QUANTIZE_MODES:
            raise UsageError(
                f"Unknown quantization {self.quantize!r}: choose one of {', '.join(QUANTIZE_MODES)}."
            )
        if runtime == "torch" and quantize == "int8":
            raise UsageError(
                "int8 quantization runs on the OpenVINO runtime: use --runtime openvino "
                "(or auto) with --quantize int8, or --quantize none with --runtime torch."
            )
        object.__setattr__(self, "runtime", runtime)
        object.__setattr__(self, "quantize", quantize)

    @property
    def is_plain_torch(self) -> bool:
        """True when indexing always uses the torch encoder (nothing to build or check)."""
        return self.runtime == "torch"

    def replace(
        self, *, runtime: str | None = None, quantize: str | None = None
    ) -> RuntimeSettings:
        """A copy with the given fields changed (None keeps a field). Raises UsageError."""
        return RuntimeSettings(
            runtime=self.runtime if runtime is None else runtime,  # type: ignore[arg-type]
            quantize=self.quantize if quantize is None else quantize,  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def load(cls, library: Path) -> RuntimeSettings:
        """The settings saved in ``library``; the defaults when the file is missing or damaged
        (it only holds a preference)."""
        try:
            data = json.loads((Path(library) / cls.FILE).read_text(encoding="utf-8"))
            return cls(runtime=str(data["runtime"]), quantize=str(data["quantize"]))  # type: ignore[arg-type]
        except (OSError, ValueError, KeyError, TypeError, UsageError):
            return cls()

    def save(self, library: Path) -> None:
        from clipsearch.atomic import atomic_write_text

        atomic_write_text(Path(library) / self.FILE, json.dumps(self.to_dict()) + "\n")


def openvino_available() -> bool:
    """True when the ``openvino`` package imports (the ``openvino`` extra is installed)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None
