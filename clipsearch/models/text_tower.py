"""The CLIP text tower on numpy: text queries without importing torch or open_clip.

A search process spends most of its start-up importing torch and open_clip (seconds, and
~650-770 MB resident before any weight is read) and building both towers, to encode one
short text. For the standard CLIP text transformer (open_clip's ``TextTransformer`` inside
the ``CLIP`` class: pre-LayerNorm residual blocks, causal self-attention, GELU or
QuickGELU MLP, final LayerNorm, the end-of-text token's features projected by
``text_projection``; Radford et al. 2021, §2.4) this module runs the same computation in
float32 numpy from a **ready copy** of the text weights:

    x₀ = E[tokens] + P                                     (B, n, D)
    xₗ' = xₗ + MHA(LN₁(xₗ), causal)       xₗ₊₁ = xₗ' + W₂·act(W₁·LN₂(xₗ') + b₁) + b₂
    t = LN_f(x_L)[eot] · W_proj,   returned L2-normalised

Only the first n = (position of the end-of-text token) + 1 positions are computed: with a
causal mask, the padding after the end token cannot change it, so a five-word query costs a
few of the 77 positions.

The ready copy (``<cache>/text-towers/<fingerprint>.safetensors``, float32, ~250 MB for
ViT-B-32) is written by `load_encoder` from the fp32 weights it has just loaded and checked,
and is keyed by the model fingerprint, so a library bound to that fingerprint can use it
without loading or hashing the original weights. It is read through a memory map: pages
are read on first use and shared between processes. Its linear layers' weights are stored
transposed, (in, out), so each product reads a contiguous (in, out) matrix: for a query's
few rows BLAS streams the weights, and this layout ran ~1.35× faster than torch's (out, in)
read through a transposed view (one BLAS thread, OpenBLAS on AVX2). Vectors equal open_clip's fp32
``encode_text`` to float32 rounding (tested: cosine >= 0.99999).
"""

from __future__ import annotations

import functools
import json
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from clipsearch.models.base import Encoder, l2_normalize
from clipsearch.models.checkpoint import cache_dir

if TYPE_CHECKING:
    import torch

FORMAT = "clipsearch.text-tower"
VERSION = "2"  # 2: linear weights stored (in, out); a copy of another version is rewritten
# the nn.Linear weights of a block, stored transposed in the ready copy
_LINEAR_WEIGHTS = (
    "attn.in_proj_weight",
    "attn.out_proj.weight",
    "mlp.c_fc.weight",
    "mlp.c_proj.weight",
)

# text_cfg fields the numpy tower implements, with the only values it supports (None: any).
_TEXT_CFG: dict[str, tuple[Any, ...] | None] = {
    "context_length": None,
    "vocab_size": None,
    "width": None,
    "heads": None,
    "layers": None,
    "mlp_ratio": None,
    "pad_id": None,
    "eos_id": None,
    "ls_init_value": (None,),
    "embed_cls": (False,),
    "no_causal_mask": (False,),
    "final_ln_after_pool": (False,),
    "pool_type": ("argmax",),
    "proj_bias": (False,),
    "proj_type": ("linear",),
    "output_tokens": (False,),
    "act_kwargs": (None, {}),
    "norm_kwargs": (None, {}),
    "block_type": (None, "default"),
    "qk_norm": (False,),
    "scaled_cosine_attn": (False,),
    "scale_heads": (False,),
    "scale_attn_inner": (False,),
    "scale_attn": (False,),
    "scale_fc": (False,),
    "tokenizer_kwargs": (None, {}),
    "tokenizer_mode": (None,),
    "hf_tokenizer_name": (None, ""),
}
_MODEL_CFG = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale"}
_MODEL_CFG_IGNORED = {"init_logit_bias", "nonscalar_logit_scale", "cast_dtype"}
RECENT_QUERIES = 256  # single query texts whose vectors a tower keeps (2 KB each)
_LN_EPS = 1e-5  # nn.LayerNorm's default, which open_clip's text tower uses


def supports(model: torch.nn.Module, model_cfg: dict[str, Any], tokenizer: Any) -> bool:
    """Can the numpy tower reproduce this model's ``encode_text``?"""
    if type(model).__name__ != "CLIP" or type(tokenizer).__name__ != "SimpleTokenizer":
        return False
    if getattr(model, "logit_bias", None) is not None:
        return False
    if not set(model_cfg) <= _MODEL_CFG | _MODEL_CFG_IGNORED:
        return False
    text_cfg = model_cfg.get("text_cfg", {})
    for key, value in text_cfg.items():
        if key not in _TEXT_CFG:
            return False
        allowed = _TEXT_CFG[key]
        if allowed is not None and value not in allowed:
            return False
    # the tokenizer's own options must be its defaults too (clean="lower", no reduction)
    return getattr(tokenizer, "reduction_fn", None) is None


def ready_copy_path(fingerprint: str) -> Path:
    """``<cache>/text-towers/<fingerprint>.safetensors`` (see `checkpoint.cache_dir`)."""
    return cache_dir() / "text-towers" / f"{fingerprint}.safetensors"


def save_ready_copy(
    model: torch.nn.Module,
    *,
    fingerprint: str,
    model_cfg: dict[str, Any],
    context_length: int,
) -> Path | None:
    """Write the fp32 text weights of a `supports`-ed CLIP model as the ready copy for
    ``fingerprint`` (once: a current copy is kept; one of another version is replaced).
    Returns the path, or None when the cache folder cannot be written (the text tower then
    runs on torch; nothing else changes).
    """
    from safetensors.torch import save_file

    from clipsearch.atomic import atomic_write

    path = ready_copy_path(fingerprint)
    if _is_current(path):
        return path
    text_keys = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.")
    tensors = {
        k: _stored(k, v.detach().to("cpu", dtype=_float32()))
        for k, v in model.state_dict().items()
        if k.startswith(text_keys) or k == "text_projection"
    }
    text_cfg = model_cfg.get("text_cfg", {})
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "fingerprint": fingerprint,
        "dim": str(int(model_cfg["embed_dim"])),
        "layers": str(int(text_cfg.get("layers", 12))),
        "heads": str(int(text_cfg.get("heads", 8))),
        "context_length": str(int(context_length)),
        "activation": "quick_gelu" if model_cfg.get("quick_gelu") else "gelu",
        "logit_scale": repr(float(model.logit_scale.detach().float().exp().reshape(-1)[0])),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    except OSError:
        return None
    return path


def _stored(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """A weight as the ready copy stores it: linear layers' (out, in) weights transposed."""
    if name.startswith("transformer.resblocks.") and name.endswith(_LINEAR_WEIGHTS):
        tensor = tensor.t()
    return tensor.contiguous()


def _is_current(path: Path) -> bool:
    """Is there a ready copy of this format and version at ``path``?"""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            meta = json.loads(f.read(size)).get("__metadata__") or {}
    except (OSError, ValueError, struct.error, AttributeError):
        return False
    return meta.get("format") == FORMAT and meta.get("version") == VERSION


def _float32() -> torch.dtype:
    import torch

    return torch.float32


def load_ready_copy(
    fingerprint: str, *, images: Callable[[], Encoder], spec: str
) -> TextTowerEncoder | None:
    """The `TextTowerEncoder` for ``fingerprint`` from its ready copy, or None when there is
    no usable copy (missing, damaged, another version: it is only a cache).

    images: returns the full encoder, for image inputs (called on the first image only).
    spec: the model spec to report.
    """
    path = ready_copy_path(fingerprint)
    try:
        meta, arrays = _read_safetensors(path)
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            return None
        if meta.get("fingerprint") != fingerprint:
            return None
        return TextTowerEncoder(arrays, meta, spec=spec, images=images)
    except (OSError, ValueError, KeyError):
        return None


def _read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(metadata, {name: read-only array backed by a memory map}) of a float32 safetensors
    file. The layout: u64 little-endian header size, a JSON header, then the raw tensors."""
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    (size,) = struct.unpack("<Q", bytes(mm[:8]))
    header = json.loads(bytes(mm[8 : 8 + size]))
    meta = header.pop("__metadata__", {}) or {}
    arrays: dict[str, np.ndarray] = {}
    base = 8 + size
    for name, info in header.items():
        if info["dtype"] != "F32":
            raise ValueError(f"{name} is {info['dtype']}, not F32")
        start, end = info["data_offsets"]
        arrays[name] = mm[base + start : base + end].view(np.float32).reshape(info["shape"])
    return meta, arrays


class TextTowerEncoder(Encoder):
    """The text tower of a CLIP model on numpy (see the module docstring); images go to the
    full encoder ``images()`` returns, loaded on the first image.

    Attributes: spec, dim, fingerprint, logit_scale, context_length (the `Encoder` ones),
    and ``precision`` = "fp32" (of the text path).
    """

    precision = "fp32"

    def __init__(
        self,
        weights: dict[str, np.ndarray],
        meta: dict[str, str],
        *,
        spec: str,
        images: Callable[[], Encoder],
    ) -> None:
        from clipsearch.models.clip_bpe import ClipBpeTokenizer

        self.spec = spec
        self.fingerprint = meta["fingerprint"]
        self.dim = int(meta["dim"])
        self.logit_scale = float(meta["logit_scale"])
        self.context_length = int(meta["context_length"])
        self._heads = int(meta["heads"])
        self._quick_gelu = meta["activation"] == "quick_gelu"
        self._w = weights
        self._layers = [
            {k: weights[f"transformer.resblocks.{i}.{k}"] for k in _BLOCK_KEYS}
            for i in range(int(meta["layers"]))
        ]
        self.tokenizer = ClipBpeTokenizer(self.context_length)
        self._images = images
        self._image_encoder: Encoder | None = None
        self._image_lock = threading.Lock()
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()  # query text -> vector
        self._recent_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TextTowerEncoder({self.spec!r}, dim={self.dim})"

    # -- texts --------------------------------------------------------------------------------
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(B, dim) unit vectors. A single text asked again (the next page of a search,
        another sort order) is answered from the vectors of the last `RECENT_QUERIES`
        single texts: the same vector, without the ~40 ms forward pass."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if len(texts) == 1:
            with self._recent_lock:
                known = self._recent.get(texts[0])
                if known is not None:
                    self._recent.move_to_end(texts[0])
                    return known[None].copy()
        tokens = self.tokenizer(texts)  # (B, L) int64
        vectors = l2_normalize(self.encode_tokens(tokens))
        if len(texts) == 1:
            with self._recent_lock:
                self._recent[texts[0]] = vectors[0].copy()
                while len(self._recent) > RECENT_QUERIES:
                    self._recent.popitem(last=False)
        return vectors

    def encode_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """(B, L) token ids -> (B, dim) float32 text features (not normalised)."""
        eot = tokens.argmax(axis=-1)  # the end token has the highest id
        n = int(eot.max()) + 1  # later positions cannot affect it (causal mask)
        if len(tokens) == 1:  # one query: whole row blocks for the BLAS kernels
            n = min(-(-n // _ROW_BLOCK) * _ROW_BLOCK, tokens.shape[1])
        if len(tokens) * n > _THREADED_TOKENS:
            return self._forward(tokens, eot, n)
        with _single_blas_thread():
            return self._forward(tokens, eot, n)

    def _forward(self, tokens: np.ndarray, eot: np.ndarray, n: int) -> np.ndarray:
        w = self._w
        x = w["token_embedding.weight"][tokens[:, :n]] + w["positional_embedding"][:n]  # (B,n,D)
        mask = np.triu(np.full((n, n), -np.inf, dtype=np.float32), 1)  # (n, n)
        for block in self._layers:
            x = x + self._attention(
                _layer_norm(x, block["ln_1.weight"], block["ln_1.bias"]), block, mask
            )
            h = _layer_norm(x, block["ln_2.weight"], block["ln_2.bias"])
            h = _linear(h, block["mlp.c_fc.weight"], block["mlp.c_fc.bias"])  # (B, n, 4D)
            h = h * _sigmoid(1.702 * h) if self._quick_gelu else _gelu(h)
            x = x + _linear(h, block["mlp.c_proj.weight"], block["mlp.c_proj.bias"])
        x = _layer_norm(x[np.arange(len(tokens)), eot], w["ln_final.weight"], w["ln_final.bias"])
        return x @ w["text_projection"]  # (B, dim)

    def _attention(self, x: np.ndarray, block: dict[str, np.ndarray], mask: np.ndarray):
        b, n, d = x.shape
        hd = d // self._heads
        qkv = _linear(x, block["attn.in_proj_weight"], block["attn.in_proj_bias"])  # (B, n, 3D)
        qkv = qkv.reshape(b, n, 3, self._heads, hd).transpose(2, 0, 3, 1, 4)  # (3, B, H, n, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(hd**-0.5) + mask  # (B, H, n, n)
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        out = (scores @ v).transpose(0, 2, 1, 3).reshape(b, n, d)  # (B, n, D)
        return _linear(out, block["attn.out_proj.weight"], block["attn.out_proj.bias"])

    # -- images: the full encoder ---------------------------------------------------------------
    def image_encoder(self) -> Encoder:
        """The full encoder (loaded on first use) that encodes this model's images."""
        with self._image_lock:
            if self._image_encoder is None:
                self._image_encoder = self._images()
            return self._image_encoder

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.image_encoder().preprocess(image)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self.image_encoder().encode_pixels(pixels)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.image_encoder().encode_images(images)


# Below this many token positions a query runs its matrix products on one BLAS thread:
# they are small (n x 512 by 512 x 2048), and a thread team only adds hand-offs. Measured
# on the 2-core machine while it was oversubscribed: one 9-token query 0.17-0.26 s on one
# thread, 1.7-4.3 s on two (the team waits on descheduled threads).
_THREADED_TOKENS = 1024
# A single query computes a multiple of this many positions (the padding after its end
# token, which the causal mask keeps from changing it): OpenBLAS's float32 kernels work on
# blocks of 4 rows, and a product with a partial block cost as much as the next full one
# or more (one thread, 512x2048 weights: 11 rows 0.95 ms, 12 rows 0.65 ms, 9 rows 0.81 ms,
# 8 rows 0.65 ms; measured on the 2-core AVX2 machine). Batches are left as they are:
# their row count is large, and padding every text would only add work.
_ROW_BLOCK = 4


@contextmanager
def _single_blas_thread() -> Iterator[None]:
    controller = _blas_controller()
    if controller is None:
        yield
        return
    with controller.limit(limits=1, user_api="blas"):
        yield


@functools.cache
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # only a speed matter
        return None
    return ThreadpoolController()


_BLOCK_KEYS = (
    "ln_1.weight",
    "ln_1.bias",
    "attn.in_proj_weight",
    "attn.in_proj_bias",
    "attn.out_proj.weight",
    "attn.out_proj.bias",
    "ln_2.weight",
    "ln_2.bias",
    "mlp.c_fc.weight",
    "mlp.c_fc.bias",
    "mlp.c_proj.weight",
    "mlp.c_proj.bias",
)


def _linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """torch's nn.Linear, with its weight stored transposed: ``weight`` is (in, out)."""
    return x @ weight + bias


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    return centred / np.sqrt(var + np.float32(_LN_EPS)) * weight + bias


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, x·Φ(x) = x/2·erfc(-x/√2), computed in float64 with the Chebyshev erfc of
    Numerical Recipes (§6.2, fractional error < 1.2e-7 everywhere), returned as float32.
    In place, Horner's rule: a query's activations are small, so temporaries cost most."""
    z = x.astype(np.float64)
    z *= -1.0 / np.sqrt(2.0)  # z = -x/√2
    a = np.abs(z)
    t = a * 0.5
    t += 1.0
    np.reciprocal(t, out=t)  # t = 1 / (1 + |z|/2)
    p = t * 0.17087277
    for c in (
        -0.82215223,
        1.48851587,
        -1.13520398,
        0.27886807,
        -0.18628806,
        0.09678418,
        0.37409196,
        1.00002368,
    ):
        p += c
        p *= t
    p -= 1.26551223
    a *= a
    p -= a  # p = -z² - 1.26551223 + t·(1.00002368 + t·(…))
    np.exp(p, out=p)
    p *= t  # erfc(|z|)
    np.subtract(2.0, p, out=p, where=z < 0)  # erfc(z) = 2 - erfc(-z)
    p *= x
    p *= 0.5
    return p.astype(np.float32)
