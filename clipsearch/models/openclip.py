"""The open_clip backend: resolve a model spec to weights, build the model, encode.

open_clip (mlfoundations/open_clip) is the reference implementation of the CLIP family;
embeddings from `OpenClipEncoder` equal open_clip's own
``model.encode_image(preprocess(img))`` / ``model.encode_text(tokenizer(texts))``,
L2-normalised (tested at cosine >= 0.9999 in fp32; in practice bit-identical).

Every spec kind goes through one path: get the architecture's config (open_clip registry,
Hugging Face Hub ``open_clip_config.json``, or the checkpoint header), build the model
from it, read the weights without unpickling, load them strictly with open_clip's fix-ups,
hash them (the fingerprint), then cast to the requested precision. Local specs
(``ARCH@path`` and checkpoints) never touch the network.

Differences from ``open_clip.create_model`` on purpose:
- a tag trained with QuickGELU (``ViT-B-32:openai``) gets a QuickGELU model (open_clip only
  warns about the mismatch and runs the wrong activation);
- ``ARCH@path`` uses the preprocessing all of the architecture's pretrained tags agree on
  (e.g. SigLIP's 0.5 mean/std), else open_clip's defaults;
- missing weights are an error, never a silently random model.

Threads: torch's intra-op pool is left at the number of CPUs this process may use (capped
to it if torch picked more), not reduced for the decode threads: Pillow releases the GIL
while decoding and resizing, so decode threads and torch share the cores through the OS
scheduler, and a single text query (the latency-critical path) needs every core. Pass
``num_threads`` to `load_encoder` to reserve cores instead. `OpenClipEncoder.preprocess` runs
Pillow + numpy only (no torch ops), so decode threads never spawn torch thread teams.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from copy import deepcopy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from clipsearch.errors import ModelError, UsageError, WeightsUnavailableError
from clipsearch.models import text_tower
from clipsearch.models.base import Encoder
from clipsearch.models.checkpoint import (
    load_state_dict_into,
    read_checkpoint_info,
    read_state_dict,
    weights_digest,
)
from clipsearch.models.hub import offline_if_unreachable
from clipsearch.models.precision import Precision, resolve_precision
from clipsearch.models.registry import check_architecture, check_tag
from clipsearch.models.skip_init import skip_weight_init
from clipsearch.models.spec import DEFAULT_MODEL, ModelSpec, parse_spec

if TYPE_CHECKING:
    import torch

FINGERPRINT_VERSION = "1"


class OpenClipEncoder(Encoder):
    """An open_clip model behind the `Encoder` protocol. Build it with `load_encoder`.

    Attributes (besides the protocol's spec, dim, fingerprint, logit_scale, context_length):
        precision: the resolved precision, "fp32" | "bf16" | "fp16".
        image_size: (H, W) of the model input.
        device: torch device string the model lives on.
        arch: open_clip architecture name ("hf-hub:org/repo" for Hub models).
        model_cfg: the full open_clip model config the model was built from (pass it to
            `save_checkpoint` when saving a fine-tuned copy).
        preprocess_cfg: open_clip preprocessing config (size, mean, std, interpolation...).
        model: the torch module (eval mode; weights in ``precision``).
        tokenizer: open_clip tokenizer, ``tokenizer(list_of_str) -> (N, context_length)`` int64.
        transform: open_clip's own inference transform (PIL -> torch tensor), for eval/train.
        image_batch_size / text_batch_size: chunk sizes used inside the encode calls.
    """

    image_batch_size = 64
    text_batch_size = 256

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        spec: str,
        arch: str,
        model_cfg: dict[str, Any],
        preprocess_cfg: dict[str, Any],
        fingerprint: str,
        precision: Precision,
        device: str,
    ) -> None:
        import torch
        from open_clip.transform import PreprocessCfg, image_transform_v2

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.spec = spec
        self.arch = arch
        self.model_cfg = model_cfg
        self.preprocess_cfg = preprocess_cfg
        self.fingerprint = fingerprint
        self.precision = precision
        self.device = device
        self.dim = int(model_cfg["embed_dim"])
        self.logit_scale = float(model.logit_scale.detach().float().exp().reshape(-1)[0])
        self.context_length = int(
            getattr(tokenizer, "context_length", None)
            or model_cfg.get("text_cfg", {}).get("context_length", 77)
        )
        size = preprocess_cfg["size"]
        self.image_size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.transform = image_transform_v2(PreprocessCfg(**preprocess_cfg), is_train=False)
        self._pil_steps, self._mean, self._std = _split_transform(self.transform)
        self._input_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[
            precision
        ]
        self._tokenizer_lock = threading.Lock()  # HF fast tokenizers are not re-entrant

    def __repr__(self) -> str:
        return f"OpenClipEncoder({self.spec!r}, dim={self.dim}, precision={self.precision!r})"

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """RGB PIL image -> (3, H, W) float32, equal to open_clip's inference transform.

        Thread-safe; uses Pillow and numpy only (no torch thread pools, no model).
        """
        if self._mean is None:
            return self.transform(image).numpy()
        for step in self._pil_steps:
            image = step(image)
        if image.mode != "RGB":
            image = image.convert("RGB")
        # torchvision to_tensor + Normalize, in the same float32 operations: (x/255 - m)/s
        x = np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32, order="C")
        x /= np.float32(255)
        x -= self._mean
        x /= self._std
        return x

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) float32 from `preprocess` -> (N, dim) float32, L2-normalised."""
        import torch

        x = torch.as_tensor(np.asarray(pixels, dtype=np.float32))
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, *self.image_size):
            raise ValueError(
                f"expected pixels of shape (N, 3, {self.image_size[0]}, {self.image_size[1]}), "
                f"got {tuple(x.shape)}"
            )
        if len(x) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = []
        with torch.inference_mode(), self._errors_as_model_error():
            for start in range(0, len(x), self.image_batch_size):
                xb = x[start : start + self.image_batch_size].to(self.device, self._input_dtype)
                chunks.append(self._finish(self.model.encode_image(xb)))  # (b, dim)
        return torch.cat(chunks).numpy()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """N strings -> (N, dim) float32, L2-normalised. Over-long texts are truncated."""
        import torch

        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = []
        with torch.inference_mode(), self._errors_as_model_error():
            for start in range(0, len(texts), self.text_batch_size):
                with self._tokenizer_lock:
                    tokens = self.tokenizer(texts[start : start + self.text_batch_size])
                chunks.append(self._finish(self.model.encode_text(tokens.to(self.device))))
        return torch.cat(chunks).numpy()

    @staticmethod
    def _finish(features: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.normalize(features.float(), dim=-1).cpu()  # (b, dim) float32

    @contextmanager
    def _errors_as_model_error(self) -> Iterator[None]:
        try:
            yield
        except RuntimeError as e:
            if self.precision == "fp32":
                raise
            raise ModelError(
                f"{self.spec} failed to run in {self.precision} on {self.device} "
                f"({_shorten(str(e).strip() or type(e).__name__)}). Use --precision fp32."
            ) from None


def load_encoder(
    spec: str | ModelSpec | None = None,
    *,
    precision: str = "auto",
    device: str = "cpu",
    num_threads: int | None = None,
) -> OpenClipEncoder:
    """Load the model a spec names (None = `DEFAULT_MODEL`) as an `OpenClipEncoder`.

    precision: "auto" | "fp32" | "bf16" | "fp16" (see `resolve_precision`).
    device: torch device string.
    num_threads: torch intra-op threads; default: the CPUs this process may use.
    Raises UnknownModelError (unknown architecture or tag, with near matches),
    WeightsUnavailableError (weights cannot be downloaded or the file is missing; the
    message says how to supply them), ModelError (unreadable or mismatched weights,
    unusable device), UsageError (bad precision).
    """
    import torch

    parsed = parse_spec(spec if spec is not None else DEFAULT_MODEL)
    resolved = resolve_precision(precision, device)
    try:
        torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise UsageError(f"Unknown device {device!r}: {e}") from None
    _configure_threads(num_threads)

    with _quiet_root_logging():
        source = _resolve(parsed)
        model = _build_model(source.model_cfg, precision=resolved)
        load_state_dict_into(
            model, read_state_dict(source.weights), source=source.weights, assign=True
        )
        preprocess_cfg = _final_preprocess_cfg(model, source.preprocess_overlay)
        tokenizer = _make_tokenizer(source.arch, source.model_cfg)
    digest = weights_digest(model, source.weights, source.model_cfg)
    fingerprint = _fingerprint(source, preprocess_cfg, digest, type(tokenizer).__name__)
    if text_tower.supports(model, source.model_cfg, tokenizer):  # fp32 weights, before the cast
        text_tower.save_ready_copy(
            model,
            fingerprint=fingerprint,
            model_cfg=source.model_cfg,
            context_length=int(getattr(tokenizer, "context_length", 77)),
        )
    _cast(model, resolved, is_timm="timm_model_name" in source.model_cfg["vision_cfg"])
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as e:
        raise ModelError(f"Cannot use device {device!r}: {_shorten(str(e))}") from None
    return OpenClipEncoder(
        model,
        tokenizer,
        spec=str(parsed),
        arch=source.arch,
        model_cfg=source.model_cfg,
        preprocess_cfg=preprocess_cfg,
        fingerprint=fingerprint,
        precision=resolved,
        device=device,
    )


# --- resolving a spec ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Source:
    arch: str  # open_clip architecture name, or "hf-hub:org/repo"
    model_cfg: dict[str, Any]
    preprocess_overlay: dict[str, Any]
    weights: str  # local path to the weights file


def _resolve(spec: ModelSpec) -> _Source:
    from open_clip import get_model_config

    if spec.kind == "checkpoint":
        info = read_checkpoint_info(spec.path)
        return _Source(info.arch, info.model_cfg, info.preprocess_cfg, str(spec.path))
    if spec.kind == "weights":
        check_architecture(spec.arch)
        if not os.path.exists(spec.path):
            raise WeightsUnavailableError(
                f"Weights file not found: {spec.path}. Check the path in the model spec."
            )
        return _Source(
            spec.arch, get_model_config(spec.arch), _shared_tag_preprocess(spec.arch), spec.path
        )
    if spec.kind == "pretrained":
        return _resolve_pretrained(spec)
    return _resolve_hub(spec)


def _resolve_pretrained(spec: ModelSpec) -> _Source:
    from open_clip import get_model_config
    from open_clip import pretrained as oc_pretrained

    check_tag(spec.arch, spec.tag)
    pcfg = oc_pretrained.get_pretrained_cfg(spec.arch, spec.tag)
    with offline_if_unreachable() if pcfg.get("hf_hub") else nullcontext() as unreachable:
        try:
            path = oc_pretrained.download_pretrained(pcfg)
        except Exception as e:
            raise WeightsUnavailableError(
                _unavailable_message(spec, _offline_cause(e, unreachable), pcfg)
            ) from None
    if not path or not os.path.isfile(path):
        raise WeightsUnavailableError(_unavailable_message(spec, "no file was obtained", pcfg))
    cfg = get_model_config(spec.arch)
    if pcfg.get("quick_gelu") and not cfg.get("quick_gelu"):
        cfg["quick_gelu"] = True  # the activation these weights were trained with
    return _Source(spec.arch, cfg, dict(pcfg), path)


def _resolve_hub(spec: ModelSpec) -> _Source:
    from open_clip.pretrained import download_pretrained_from_hf

    with offline_if_unreachable() as unreachable:
        try:
            config_path = download_pretrained_from_hf(spec.repo, filename="open_clip_config.json")
            with open(config_path, encoding="utf-8") as f:
                config = json.load(f)
            weights = download_pretrained_from_hf(spec.repo)
        except Exception as e:
            raise WeightsUnavailableError(
                _unavailable_message(spec, _offline_cause(e, unreachable), {"hf_hub": spec.repo})
            ) from None
    if "model_cfg" not in config:
        raise ModelError(
            f"{spec} is not an open_clip model: its open_clip_config.json has no model_cfg."
        )
    return _Source(str(spec), config["model_cfg"], config.get("preprocess_cfg", {}), weights)


def _offline_cause(error: Exception, unreachable: str | None) -> object:
    """The reason to show: the unreachable hub when that is why nothing was downloaded."""
    if unreachable is None:
        return error
    return (
        f"the Hugging Face hub is unreachable ({unreachable}) and they are not in the local cache"
    )


def _unavailable_message(spec: ModelSpec, cause: object, pcfg: dict[str, Any]) -> str:
    reason = _shorten(str(cause)) or type(cause).__name__
    where = []
    if pcfg.get("hf_hub"):
        where.append(f"the Hugging Face repo {pcfg['hf_hub'].rstrip('/')}")
    if pcfg.get("url"):
        where.append(pcfg["url"])
    origin = f" (from {' or '.join(where)})" if where else ""
    arch = spec.arch or "ARCH"
    return (
        f"Cannot download the weights for {spec}{origin}: {reason}. Without network access, "
        f"supply them yourself: copy the weights file to this machine and use "
        f"--model '{arch}@/path/to/open_clip_model.safetensors', or point HF_HOME at a "
        "Hugging Face cache that already holds the model and set HF_HUB_OFFLINE=1."
    )


def _shorten(text: str, limit: int = 200) -> str:
    """Cut ``text`` at a word boundary near ``limit`` characters."""
    text = (text.strip().splitlines() or [""])[0].rstrip(". ")
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + "…"


def _shared_tag_preprocess(arch: str) -> dict[str, Any]:
    """Preprocessing every pretrained tag of ``arch`` agrees on ({} when they differ or none)."""
    from open_clip import pretrained as oc_pretrained
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    merged = [
        merge_preprocess_dict(PreprocessCfg(), oc_pretrained.get_pretrained_cfg(arch, tag))
        for tag in oc_pretrained.list_pretrained_tags_by_model(arch)
    ]
    if merged and all(m == merged[0] for m in merged):
        return merged[0]
    return {}


# --- building ------------------------------------------------------------------------------
def _build_model(model_cfg: dict[str, Any], *, precision: Precision) -> torch.nn.Module:
    """An fp32 model from an open_clip config, the way create_model builds it, with its weights
    left uninitialised (`skip_weight_init`): callers load every weight strictly next.

    ``precision`` picks the LayerNorm flavour (fp32 LayerNorm under bf16/fp16), not dtypes.
    Tower weights (timm / HF) are never downloaded: the full weights are loaded next.
    """
    from open_clip import CLIP, CoCa, CustomTextCLIP, get_cast_dtype

    cfg = deepcopy(model_cfg)
    vision_cfg, text_cfg = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if "timm_model_name" in vision_cfg:
        vision_cfg["timm_model_pretrained"] = False
    is_hf_text = "hf_model_name" in text_cfg
    if is_hf_text:
        text_cfg["hf_model_pretrained"] = False
    custom_text = cfg.pop("custom_text", False) or is_hf_text
    model_class = (CoCa if "multimodal_cfg" in cfg else CustomTextCLIP) if custom_text else CLIP
    try:
        with skip_weight_init():  # every weight is overwritten by the strict load that follows
            return model_class(**cfg, cast_dtype=get_cast_dtype(precision))
    except Exception as e:
        if is_hf_text:  # the HF text tower fetches its config from the Hub (or the HF cache)
            raise WeightsUnavailableError(
                f"Cannot set up the Hugging Face text tower {text_cfg['hf_model_name']!r} "
                f"({type(e).__name__}: {_shorten(str(e))}). Without network access, point HF_HOME "
                "at a Hugging Face cache that holds it and set HF_HUB_OFFLINE=1."
            ) from None
        raise ModelError(
            f"Cannot build the model from its config ({type(e).__name__}: {_shorten(str(e))})."
        ) from None


def _final_preprocess_cfg(model: torch.nn.Module, overlay: dict[str, Any]) -> dict[str, Any]:
    from open_clip import set_model_preprocess_cfg
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    cfg = merge_preprocess_dict(PreprocessCfg(), overlay or {})
    size = getattr(model.visual, "image_size", None)
    if size is not None:
        cfg["size"] = size
    if isinstance(cfg["size"], (list, tuple)):
        cfg["size"] = tuple(int(s) for s in cfg["size"])
    for key in ("mean", "std"):
        cfg[key] = tuple(float(v) for v in cfg[key])
    set_model_preprocess_cfg(model, cfg)
    return cfg


def _make_tokenizer(arch: str, model_cfg: dict[str, Any]) -> Any:
    """open_clip's tokenizer choice (``get_tokenizer``) made from a config, not a registry name."""
    from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, HFTokenizer, SigLipTokenizer

    text_cfg = model_cfg.get("text_cfg", {})
    context_length = text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH)
    kwargs = dict(text_cfg.get("tokenizer_kwargs", {}))
    hf_name = text_cfg.get("hf_tokenizer_name", "")
    if hf_name:
        try:
            return HFTokenizer(
                hf_name,
                context_length=context_length,
                tokenizer_mode=text_cfg.get("tokenizer_mode"),
                **kwargs,
            )
        except Exception as e:
            raise WeightsUnavailableError(
                f"Cannot load the tokenizer {hf_name!r} for {arch} ({type(e).__name__}). Without "
                "network access, point HF_HOME at a Hugging Face cache that holds it and set "
                "HF_HUB_OFFLINE=1."
            ) from None
    if not arch.startswith("hf-hub:") and "siglip" in arch.lower():
        variant = (
            "gemma" if "siglip2" in arch.lower() else "mc4" if "i18n" in arch.lower() else "c4-en"
        )
        return SigLipTokenizer(variant, context_length=context_length)
    return _simple_tokenizer(context_length, json.dumps(kwargs, sort_keys=True))


@functools.lru_cache(maxsize=8)
def _simple_tokenizer(context_length: int, kwargs_json: str) -> Any:
    """SimpleTokenizer instances are shared: building one parses the BPE vocabulary (~0.5 s)
    and calling one is safe from several threads (its only state is a memo dict)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length, **json.loads(kwargs_json))


def _cast(model: torch.nn.Module, precision: Precision, *, is_timm: bool) -> None:
    """Cast weights as open_clip's ``precision="bf16"|"fp16"`` does (LayerNorm stays fp32)."""
    if precision == "fp32":
        return
    import torch
    from open_clip import convert_weights_to_lp
    from open_clip.transformer import LayerNormFp32

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if not is_timm:
        convert_weights_to_lp(model, dtype=dtype)
        return
    model.to(dtype=dtype)
    for module in model.modules():
        if isinstance(module, LayerNormFp32):
            module.float()


# --- fingerprint ---------------------------------------------------------------------------
def _fingerprint(
    source: _Source, preprocess_cfg: dict[str, Any], digest: str, tokenizer: str
) -> str:
    """``{arch}-{dim}d-{hash}``: what decides the vector space, not where the file lies.

    The hash covers the model config, preprocessing, tokenizer kind and weight digest, so
    it is stable across runs, precisions and file moves, and changes with any weight.
    """
    payload = json.dumps(
        {
            "v": FINGERPRINT_VERSION,
            "model_cfg": source.model_cfg,
            "preprocess_cfg": preprocess_cfg,
            "tokenizer": tokenizer,
            "weights": digest,
        },
        sort_keys=True,
        default=list,
    )
    dim = int(source.model_cfg["embed_dim"])
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", source.arch)
    return f"{slug}-{dim}d-{hashlib.sha256(payload.encode()).hexdigest()[:24]}"


# --- process settings ----------------------------------------------------------------------
def _configure_threads(num_threads: int | None) -> None:
    import torch

    if num_threads is not None:
        if num_threads < 1:
            raise UsageError(f"num_threads must be >= 1, got {num_threads}.")
        torch.set_num_threads(num_threads)
        return
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    if torch.get_num_threads() > usable:
        torch.set_num_threads(usable)


@contextmanager
def _quiet_root_logging() -> Iterator[None]:
    """open_clip logs through ``logging.info()``, which installs a stderr handler on an
    unconfigured root logger; park a NullHandler there meanwhile so the library prints nothing."""
    root = logging.getLogger()
    parked = None
    if not root.handlers:
        parked = logging.NullHandler()
        root.addHandler(parked)
    try:
        yield
    finally:
        if parked is not None:
            root.removeHandler(parked)


def _split_transform(transform: Any) -> tuple[list[Any], np.ndarray | None, np.ndarray | None]:
    """Split open_clip's Compose into PIL steps + (mean, std) of its final ToTensor/Normalize.

    Returns mean None when the transform has another shape; `preprocess` then runs it whole.
    """
    from torchvision.transforms import Normalize, ToTensor

    steps = list(getattr(transform, "transforms", []))
    idx = next((i for i, s in enumerate(steps) if isinstance(s, ToTensor)), None)
    if idx is None or len(steps) != idx + 2 or not isinstance(steps[-1], Normalize):
        return [], None, None
    norm = steps[-1]
    mean = np.asarray(norm.mean, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(norm.std, dtype=np.float32).reshape(3, 1, 1)
    return steps[:idx], mean, std
