"""Choosing the image encoder of an indexing run: torch, or an accelerated one that passed
the accuracy gate on the library's own images.

For a library whose `RuntimeSettings` ask for OpenVINO (or ``auto``), the first run that
has images to encode:

1. samples the library's own images (the files about to be indexed, topped up with indexed
   ones), deterministically, and splits them into a calibration set and a disjoint check set;
2. builds the accelerated image encoder once — export of the fp32 image tower, int8
   quantization calibrated on the calibration set — and caches it in ``<library>/runtime``
   (`RuntimeCache`, keyed by model fingerprint + runtime + precision);
3. measures it against the fp32 torch encoder on the check set (`measure_agreement`), timing
   both in the same interleaved loop, and stores the figures with the cached model;
4. uses it only when the gate passed (and, for ``auto``, when it was faster than torch);
   otherwise indexes with the torch encoder and says why.

Later runs reuse the cached model and its stored verdict: the check runs once per build.
Progress is reported through `RuntimeProgress` events; the choice through `RuntimeChosen`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import socket
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipsearch.errors import ClipsearchError, MissingDependencyError, ModelError
from clipsearch.ingest.events import IndexEvent, RuntimeChosen, RuntimeProgress
from clipsearch.media import MediaFile, load_image
from clipsearch.models.agreement import AgreementReport, measure_agreement
from clipsearch.models.base import Encoder
from clipsearch.models.runtime import AUTO_MIN_IMAGES, RuntimeSettings, openvino_available
from clipsearch.models.runtime_cache import BuildKey, CacheEntry, RuntimeCache
from clipsearch.search.engine import decode_side
from clipsearch.store import Catalog, ItemFilter

CALIBRATION_IMAGES = 64  # NNCF calibration set (as measured: 64 images reach the fp32 figures)
CHECK_IMAGES = 128  # images the gate compares (disjoint from calibration)
MIN_CHECK_IMAGES = 32
MIN_CALIBRATION_IMAGES = 16
TEXT_QUERIES = 32  # sample captions used as text queries by the gate
AUTO_MIN_SPEEDUP = 1.1  # "auto" keeps an accelerated encoder only this much faster than torch
TIMING_CHUNK = 16


@dataclass(frozen=True)
class RuntimeChoice:
    """The image encoder a run indexes with, and why."""

    encoder: Encoder
    label: str  # e.g. "torch fp32", "openvino int8"
    reason: str  # one sentence for people
    gate: AgreementReport | None = None
    # True when an accelerated encoder was asked for and could not be used (worth telling);
    # False for torch by setting, by "auto"'s size threshold or speed measurement.
    fell_back: bool = False
    # The accelerated build chosen, for processes that load it themselves (Ray workers).
    images: AcceleratedImages | None = None


@dataclass(frozen=True)
class AcceleratedImages:
    """A built accelerated image encoder as another process (a Ray worker) loads it: the
    files of the library's build cache and what they must be. Picklable."""

    runtime: str  # "openvino"
    precision: str  # of the weights: "fp32" | "bf16" | "int8"
    inference_precision: str  # of the ops that are not int8
    xml: str
    bin: str
    sizes: tuple[int, int]  # of xml and bin, as built (another file at the path is refused)

    @classmethod
    def of(cls, entry: CacheEntry, inference_precision: str) -> AcceleratedImages:
        sizes = (entry.xml.stat().st_size, entry.bin.stat().st_size)
        return cls(
            entry.key.runtime,
            entry.key.precision,
            inference_precision,
            str(entry.xml),
            str(entry.bin),
            sizes,
        )

    @property
    def label(self) -> str:
        return f"{self.runtime} {self.precision}"

    def load(self, base: Encoder) -> Encoder:
        """The image encoder over ``base`` (its preprocessing and text tower). Raises
        ModelError when the build is not reachable from this machine (or is another file),
        MissingDependencyError when OpenVINO is not installed here."""
        host = socket.gethostname()
        for path, size in ((self.xml, self.sizes[0]), (self.bin, self.sizes[1])):
            try:
                found = os.stat(path).st_size
            except OSError as e:
                raise ModelError(f"{path} is not reachable on {host} ({e.strerror})") from None
            if found != size:
                raise ModelError(f"{path} on {host} is not the library's build (size differs)")
        if not openvino_available():
            raise MissingDependencyError("openvino", "openvino")
        from clipsearch.models import openvino_encoder as ovx

        return ovx.OpenVinoImageEncoder(
            base,
            ovx.read_model(Path(self.xml), Path(self.bin)),
            precision=self.precision,
            inference_precision=self.inference_precision,
        )


def encoder_label(encoder: Encoder) -> str:
    """How an encoder encodes images, for people: "openvino int8", "torch bf16"..."""
    label = getattr(encoder, "label", None)
    if isinstance(label, str):
        return label
    precision = getattr(encoder, "precision", None)
    return f"torch {precision}" if precision else type(encoder).__name__


class ImageRuntimeChooser:
    """Picks (and builds, and checks) the image encoder for one library.

    base: the library's torch encoder (text queries, fallback image encoder).
    settings: the library's `RuntimeSettings`.
    folder: the library's build cache (``<library>/runtime``).
    catalog: to top up the image sample with already indexed images.
    load_reference: returns the fp32 torch encoder of the same model (``base`` itself when
        it is fp32); used to export and as the gate's reference.
    captions: sample text queries for the gate.
    emit: receives `RuntimeProgress` / `RuntimeChosen` events.
    """

    def __init__(
        self,
        *,
        base: Encoder,
        settings: RuntimeSettings,
        folder: Path,
        catalog: Catalog | None,
        load_reference: Callable[[], Encoder],
        captions: Sequence[str],
        emit: Callable[[IndexEvent], None] | None = None,
    ) -> None:
        self.base = base
        self.settings = settings
        self.cache = RuntimeCache(folder)
        self.catalog = catalog
        self.load_reference = load_reference
        self.captions = list(captions)
        self._emit = emit or (lambda e: None)

    # -- public -----------------------------------------------------------------------------------
    def choose(self, pending: Sequence[MediaFile], *, load: bool = True) -> RuntimeChoice:
        """The encoder for a run about to encode ``pending`` files (never raises for a
        candidate that cannot be built or checked: it falls back to torch and says why).
        load=False: an accelerated choice is not loaded here (its encoder is ``base``; its
        ``images`` are loaded by the processes that encode, e.g. Ray workers)."""
        choice = self._choose(pending, load)
        self._emit(
            RuntimeChosen(
                choice.label,
                choice.reason,
                choice.gate.to_dict() if choice.gate else None,
                choice.fell_back,
            )
        )
        return choice

    def _choose(self, pending: Sequence[MediaFile], load: bool = True) -> RuntimeChoice:
        s = self.settings
        if s.is_plain_torch:
            return self._torch("the library's runtime is torch", expected=True)
        wanted = f"openvino {self._precision()}"
        if not openvino_available():
            return self._torch(
                f"{wanted} was asked for but OpenVINO is not installed "
                "(pip install 'clipsearch[openvino]')"
            )
        images = [m for m in pending if m.kind == "image"]
        key = BuildKey(self.base.fingerprint, "openvino", self._precision())
        entry = self.cache.lookup(key, self._versions())
        if entry is None and s.runtime == "auto" and len(images) < AUTO_MIN_IMAGES:
            return self._torch(
                f"runtime auto tries {wanted} for runs of {AUTO_MIN_IMAGES}+ images "
                f"(this run: {len(images)})",
                expected=True,
            )
        try:
            if entry is None or entry.gate is None:
                entry = self._build_and_check(key, entry, images)
                if entry is None:
                    return self._torch(
                        f"{wanted} needs at least {MIN_CHECK_IMAGES + self._min_calibration()} "
                        "images of this library to check its accuracy; fewer could be decoded"
                    )
            gate = AgreementReport.from_dict(entry.gate)
            if not gate.passed:
                return self._torch(f"{wanted} failed the accuracy gate ({gate.reason})", gate)
            speedup = gate.speedup
            if s.runtime == "auto" and speedup is not None and speedup < AUTO_MIN_SPEEDUP:
                return self._torch(
                    f"{wanted} passed the accuracy gate but measured {speedup:.2f}× torch "
                    "on this machine (runtime auto keeps torch)",
                    gate,
                    expected=True,
                )
            images = AcceleratedImages.of(entry, self._inference_precision())
            encoder = self._load(entry) if load else self.base
        except (ClipsearchError, OSError) as e:
            return self._torch(f"{wanted} is unavailable: {e}")
        speed = f", {speedup:.1f}× torch" if speedup else ""
        return RuntimeChoice(
            encoder,
            encoder_label(encoder) if load else images.label,
            f"passed the accuracy gate ({gate.summary()}{speed})",
            gate,
            images=images,
        )

    # -- building and checking -------------------------------------------------------------------
    def _build_and_check(
        self, key: BuildKey, entry: CacheEntry | None, images: Sequence[MediaFile]
    ) -> CacheEntry | None:
        n_calib = CALIBRATION_IMAGES if self.settings.quantize == "int8" else 0
        pixels = self._sample(images, n_calib + CHECK_IMAGES)
        n_calib = min(n_calib, len(pixels) // 3) if n_calib else 0
        calibration, check = pixels[:n_calib], pixels[n_calib:]
        if len(check) < MIN_CHECK_IMAGES or n_calib < self._min_calibration():
            return None
        reference = self.load_reference()
        if entry is None:
            entry = self._build(key, reference, calibration)
        candidate = self._load(entry)
        gate = self._check(reference, candidate, check, calibration_images=n_calib)
        return self.cache.record_gate(entry, gate.to_dict())

    def _build(self, key: BuildKey, reference: Encoder, calibration: np.ndarray) -> CacheEntry:
        from clipsearch.models import openvino_encoder as ovx

        t0 = time.perf_counter()
        self._emit(RuntimeProgress("export", 0.0))
        model = ovx.export_image_tower(reference)  # type: ignore[arg-type]
        self._emit(RuntimeProgress("export", 1.0))
        if self.settings.quantize == "int8":
            model = ovx.quantize_int8(
                model, calibration, progress=lambda f: self._emit(RuntimeProgress("calibrate", f))
            )
        return self.cache.store(
            key,
            lambda xml: ovx.save_model(model, xml),
            versions=self._versions(),
            info={
                "calibration_images": len(calibration),
                "build_s": round(time.perf_counter() - t0, 1),
            },
        )

    def _check(
        self, reference: Encoder, candidate: Encoder, check: np.ndarray, *, calibration_images: int
    ) -> AgreementReport:
        """Encode the check set with the reference and the candidate (and the torch encoder
        indexing would otherwise use, when that is not the reference), chunk by chunk in
        turn so machine noise hits both alike, then compare."""
        encoders = {"ref": reference, "cand": candidate}
        if self.base is not reference:
            encoders["base"] = self.base
        vecs: dict[str, list[np.ndarray]] = {k: [] for k in encoders}
        secs = dict.fromkeys(encoders, 0.0)
        for start in range(0, len(check), TIMING_CHUNK):
            chunk = check[start : start + TIMING_CHUNK]
            for name, enc in encoders.items():
                t0 = time.perf_counter()
                vecs[name].append(enc.encode_pixels(chunk))
                secs[name] += time.perf_counter() - t0
            self._emit(RuntimeProgress("check", min(1.0, (start + len(chunk)) / len(check))))
        texts = self.base.encode_texts(_spread(self.captions, TEXT_QUERIES))
        torch_s = secs["base" if "base" in secs else "ref"]
        return measure_agreement(
            np.concatenate(vecs["ref"]),
            np.concatenate(vecs["cand"]),
            texts,
            calibration_images=calibration_images,
            reference_img_s=len(check) / torch_s if torch_s > 0 else None,
            candidate_img_s=len(check) / secs["cand"] if secs["cand"] > 0 else None,
        )

    def _load(self, entry: CacheEntry) -> Encoder:
        return AcceleratedImages.of(entry, self._inference_precision()).load(self.base)

    # -- sampling the library's own images --------------------------------------------------------
    def _sample(self, images: Sequence[MediaFile], n: int) -> np.ndarray:
        """Up to ``n`` preprocessed images (n, 3, H, W): the run's images, topped up with
        indexed ones, in a fixed pseudo-random order (so calibration and check sets are the
        same on every attempt). Files that do not decode are skipped."""
        paths = sorted({str(m.path) for m in images}, key=_shuffle_key)
        if len(paths) < 2 * n and self.catalog is not None:
            paths += sorted(set(self._indexed_images(4 * n)) - set(paths), key=_shuffle_key)
        min_side = decode_side(self.base)

        def decode(path: str) -> np.ndarray | None:
            try:
                return self.base.preprocess(load_image(path, min_side=min_side).image)
            except (ClipsearchError, OSError):
                return None

        out: list[np.ndarray] = []
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="clipsearch-sample") as pool:
            for start in range(0, len(paths), n):
                out += [p for p in pool.map(decode, paths[start : start + n]) if p is not None]
                if len(out) >= n:
                    break
        if not out:
            return np.zeros((0, 3, *getattr(self.base, "image_size", (224, 224))), np.float32)
        return np.stack(out[:n])

    def _indexed_images(self, limit: int) -> list[str]:
        ids = self.catalog.vector_ids_where(ItemFilter.parse(["kind:image"]))
        if not len(ids):
            return []
        item_ids, _ = self.catalog.items_for_vectors(ids[:limit])
        records = self.catalog.items([int(i) for i in item_ids if i >= 0])
        return [r.path for r in records.values()]

    # -- small things -------------------------------------------------------------------------------
    def _torch(
        self, reason: str, gate: AgreementReport | None = None, *, expected: bool = False
    ) -> RuntimeChoice:
        return RuntimeChoice(self.base, encoder_label(self.base), reason, gate, not expected)

    def _inference_precision(self) -> str:
        return "bf16" if getattr(self.base, "precision", "fp32") == "bf16" else "fp32"

    def _precision(self) -> str:
        return "int8" if self.settings.quantize == "int8" else self._inference_precision()

    def _min_calibration(self) -> int:
        return MIN_CALIBRATION_IMAGES if self.settings.quantize == "int8" else 0

    def _versions(self) -> dict[str, str]:
        versions = {"openvino": _version("openvino")}
        if self.settings.quantize == "int8":
            versions["nncf"] = _version("nncf")
        return versions


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _shuffle_key(path: str) -> str:
    return hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest()


def _spread(items: Sequence[str], n: int) -> list[str]:
    """``n`` items spread evenly over ``items`` (all of them when there are fewer)."""
    if len(items) <= n:
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]
