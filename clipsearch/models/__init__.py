"""clipsearch.models: the `Encoder` protocol, model specs and the open_clip backend.

Importing this package is cheap: torch and open_clip load on the first `load_encoder`,
`list_models` or `save_checkpoint` call (or when a bare architecture spec is parsed).

    from clipsearch.models import load_encoder
    enc = load_encoder("ViT-B-32:laion2b_s34b_b79k")      # or None for DEFAULT_MODEL
    vecs = enc.encode_texts(["a dog on a beach"])          # (1, 512) float32, unit norm
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipsearch.lazy import lazy_names

if TYPE_CHECKING:
    from clipsearch.models.base import Encoder, l2_normalize
    from clipsearch.models.checkpoint import CheckpointInfo, read_checkpoint_info, save_checkpoint
    from clipsearch.models.openclip import OpenClipEncoder, load_encoder
    from clipsearch.models.precision import cpu_has_native_bf16, resolve_precision
    from clipsearch.models.registry import list_models
    from clipsearch.models.spec import DEFAULT_MODEL, ModelSpec, parse_spec

__all__ = [
    "DEFAULT_MODEL",
    "CheckpointInfo",
    "Encoder",
    "ModelSpec",
    "OpenClipEncoder",
    "cpu_has_native_bf16",
    "l2_normalize",
    "list_models",
    "load_encoder",
    "parse_spec",
    "read_checkpoint_info",
    "resolve_precision",
    "save_checkpoint",
]

_LAZY = {
    **dict.fromkeys(("Encoder", "l2_normalize"), "clipsearch.models.base"),
    **dict.fromkeys(
        ("CheckpointInfo", "read_checkpoint_info", "save_checkpoint"),
        "clipsearch.models.checkpoint",
    ),
    **dict.fromkeys(("OpenClipEncoder", "load_encoder"), "clipsearch.models.openclip"),
    **dict.fromkeys(("cpu_has_native_bf16", "resolve_precision"), "clipsearch.models.precision"),
    **dict.fromkeys(("list_models",), "clipsearch.models.registry"),
    **dict.fromkeys(("DEFAULT_MODEL", "ModelSpec", "parse_spec"), "clipsearch.models.spec"),
}


__getattr__ = lazy_names(__name__, _LAZY)
