"""The image tower on OpenVINO: export from open_clip, optional int8 quantization, inference.

- Export: ``openvino.convert_model`` traces ``model.encode_image`` (unnormalised) of the fp32
  torch model with a dynamic batch dimension; weights stay fp32 in the IR (no fp16
  compression), so "openvino fp32" computes what torch fp32 computes.
- int8: NNCF post-training quantization (``nncf.quantize``, transformer preset: SmoothQuant +
  fast bias correction) calibrated on images from the user's own library.
- Inference: the ``LATENCY`` hint, one request over every core. ``streams > 1`` keeps that
  many requests in flight over slices of a batch of at least `MIN_SLICE` images each
  (the ``THROUGHPUT`` hint alone makes one stream per core, which halves a single
  synchronous request). One request stays the default: benchmarks/runtime.py measured
  1 vs 2 in flight for fp32 and int8 on 2 cores, and neither won on both (the same CPU
  time per image within 3 %, wall times within the machine's noise;
  docs/performance.md). The inference precision is set explicitly (f32, or bf16 on CPUs
  with native bf16) so OpenVINO never lowers it on its own.

`OpenVinoImageEncoder` wraps the torch encoder it was built from: preprocessing and text
encoding are the torch encoder's, only `encode_pixels` runs on OpenVINO. spec, fingerprint
and dim are the torch encoder's: the vectors live in the same space.

openvino and nncf are imported here only, lazily; without them
`MissingDependencyError` names the ``openvino`` extra.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from clipsearch.errors import MissingDependencyError, ModelError
from clipsearch.models.base import Encoder, l2_normalize

if TYPE_CHECKING:
    from clipsearch.models.openclip import OpenClipEncoder

Progress = Callable[[float], None]

_OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def import_openvino() -> Any:
    """The ``openvino`` module, or MissingDependencyError naming the extra."""
    try:
        import openvino
    except ImportError:
        raise MissingDependencyError("openvino", "openvino") from None
    return openvino


def openvino_version() -> str:
    return str(import_openvino().__version__)


class OpenVinoImageEncoder(Encoder):
    """Images through an OpenVINO model; preprocessing and texts through ``base``.

    base: the torch encoder the model was exported from (its spec, fingerprint, dim,
        preprocessing and text tower are used as they are).
    model: an ``openvino.Model`` of the image tower (input (N, 3, H, W) float32).
    precision: what the weights are, for display: "fp32" | "bf16" | "int8".
    inference_precision: "fp32" | "bf16" | "fp16": precision of the ops that are not int8.
    streams: 1 (default) = the LATENCY hint, one request over every core; n > 1 = n
        requests in flight over slices of each batch (the THROUGHPUT hint, n streams).
    num_threads: CPU threads for OpenVINO (default: all it may use).
    """

    runtime = "openvino"
    image_batch_size = 64

    def __init__(
        self,
        base: Encoder,
        model: Any,
        *,
        precision: str,
        inference_precision: str = "fp32",
        streams: int = 1,
        num_threads: int | None = None,
    ) -> None:
        ov = import_openvino()
        self.base = base
        self.spec = base.spec
        self.dim = base.dim
        self.fingerprint = base.fingerprint
        self.logit_scale = base.logit_scale
        self.context_length = base.context_length
        self.image_size = getattr(base, "image_size", (224, 224))
        self.precision = precision
        self.inference_precision = inference_precision
        self.streams = max(1, int(streams))
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY" if self.streams == 1 else "THROUGHPUT",
            "INFERENCE_PRECISION_HINT": _OV_PRECISION[inference_precision],
        }
        if self.streams > 1:
            config["NUM_STREAMS"] = self.streams
        if num_threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(num_threads)
        try:
            self._compiled = ov.Core().compile_model(model, "CPU", config)
        except RuntimeError as e:
            raise ModelError(
                f"OpenVINO cannot compile the image encoder: {_first_line(e)}"
            ) from None
        self._requests = [self._compiled.create_infer_request() for _ in range(self.streams)]
        self._lock = threading.Lock()  # infer requests are not re-entrant

    def __repr__(self) -> str:
        return f"OpenVinoImageEncoder({self.spec!r}, {self.precision}, streams={self.streams})"

    @property
    def label(self) -> str:
        """How images are encoded, for people: e.g. "openvino int8"."""
        return f"openvino {self.precision}"

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.base.preprocess(image)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.base.encode_texts(texts)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 from `preprocess` -> (N, dim) float32, L2-normalised."""
        x = np.ascontiguousarray(pixels, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, *self.image_size):
            raise ValueError(
                f"expected pixels of shape (N, 3, {self.image_size[0]}, {self.image_size[1]}), "
                f"got {tuple(x.shape)}"
            )
        if len(x) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        with self._lock:
            for start in range(0, len(x), self.image_batch_size):
                out.append(self._infer(x[start : start + self.image_batch_size]))
        return l2_normalize(np.concatenate(out))

    def _infer(self, x: np.ndarray) -> np.ndarray:
        if self.streams == 1 or len(x) < MIN_SLICE * self.streams:
            return np.array(self._requests[0].infer({0: x})[0], dtype=np.float32)
        parts = np.array_split(x, self.streams)
        for req, part in zip(self._requests, parts, strict=True):
            req.start_async({0: part})
        for req in self._requests:
            req.wait()
        return np.concatenate(
            [np.array(req.get_output_tensor(0).data, dtype=np.float32) for req in self._requests]
        )


# A request in flight gets at least this many images of a batch: below it, one request over
# every core (the LATENCY hint) answers sooner than slices too small to fill a core.
MIN_SLICE = 4


def export_image_tower(encoder: OpenClipEncoder) -> Any:
    """The fp32 image tower of an open_clip encoder as an ``openvino.Model``.

    Raises ModelError when the encoder is not fp32 or the tower cannot be converted.
    """
    ov = import_openvino()
    import torch

    if getattr(encoder, "model", None) is None or not hasattr(encoder.model, "encode_image"):
        raise ModelError(f"{type(encoder).__name__} has no open_clip model to export")
    if encoder.precision != "fp32":
        raise ModelError(f"export needs the fp32 model, got {encoder.precision}")
    h, w = encoder.image_size

    class ImageTower(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model.encode_image(x)  # (N, dim), not normalised

    tower = ImageTower(encoder.model).eval()
    example = torch.zeros(2, 3, h, w)
    try:
        with torch.no_grad(), _quiet():
            return ov.convert_model(tower, example_input=example, input=[(-1, 3, h, w)])
    except Exception as e:
        raise ModelError(
            f"Cannot export {encoder.spec} to OpenVINO ({type(e).__name__}: {_first_line(e)}). "
            "Use --runtime torch."
        ) from None


def quantize_int8(model: Any, calibration: np.ndarray, *, progress: Progress | None = None) -> Any:
    """NNCF post-training int8 quantization of an image-tower ``openvino.Model``.

    calibration: (N, 3, H, W) float32 preprocessed images (the user's own).
    progress: called with the fraction done (statistics passes over the images).
    Raises MissingDependencyError without nncf, ModelError when quantization fails.
    """
    try:
        import nncf
    except ImportError:
        raise MissingDependencyError("nncf", "openvino") from None
    items = [
        np.ascontiguousarray(calibration[i : i + 1], dtype=np.float32)
        for i in range(len(calibration))
    ]
    # NNCF walks the set once for SmoothQuant statistics and once for min/max + bias.
    expected = 2 * len(items)
    seen = [0]

    def feed(item: np.ndarray) -> np.ndarray:
        seen[0] += 1
        if progress is not None:
            progress(min(1.0, seen[0] / expected))
        return item

    try:
        with _quiet(nncf=True):
            return nncf.quantize(
                model,
                nncf.Dataset(items, feed),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(items),
            )
    except Exception as e:
        raise ModelError(
            f"int8 quantization failed ({type(e).__name__}: {_first_line(e)})."
        ) from None


def save_model(model: Any, xml_path: Path) -> None:
    """Write ``model`` as OpenVINO IR: ``xml_path`` and the same name with ``.bin``
    (weights kept as they are: no fp16 compression)."""
    import_openvino().save_model(model, str(xml_path), compress_to_fp16=False)


def read_model(xml_path: Path, bin_path: Path) -> Any:
    """Read an OpenVINO IR written by `save_model`. Raises ModelError when it is unreadable."""
    ov = import_openvino()
    try:
        return ov.Core().read_model(str(xml_path), str(bin_path))
    except RuntimeError as e:
        raise ModelError(f"Cannot read the OpenVINO model {xml_path}: {_first_line(e)}") from None


@contextlib.contextmanager
def _quiet(*, nncf: bool = False) -> Iterator[None]:
    """The library never prints: silence tracer warnings, NNCF's log and its progress bars,
    and torch's extension-loader notices that NNCF triggers, for the duration."""
    loggers = [logging.getLogger(n) for n in ("nncf", "torch.utils.cpp_extension", "openvino")]
    levels = [(lg, lg.level, [(h, h.level) for h in lg.handlers]) for lg in loggers]
    track_cls, track_init = _nncf_track() if nncf else (None, None)
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
            for h in lg.handlers:
                h.setLevel(logging.ERROR)
        if track_cls is not None:

            def silent_init(self: Any, *args: Any, **kwargs: Any) -> None:
                kwargs["disable"] = True
                track_init(self, *args, **kwargs)

            track_cls.__init__ = silent_init
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        if track_cls is not None:
            track_cls.__init__ = track_init
        for lg, level, handlers in levels:
            lg.setLevel(level)
            for h, hl in handlers:
                h.setLevel(hl)


def _nncf_track() -> tuple[Any, Any]:
    """NNCF's rich progress-bar class and its original ``__init__`` (None when absent)."""
    try:
        from nncf.common.logging.track_progress import track
    except ImportError:
        return None, None
    return track, track.__init__


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]
