"""Numeric precision of the model weights, chosen per machine (docs/architecture.md#performance).

"bf16" means the *weights* are cast to bfloat16 (open_clip's own ``precision="bf16"``:
linear/conv/attention weights in bf16, LayerNorm computed in fp32), the pixel batch is cast
to bf16 on the way in and the embeddings back to float32 before L2 normalisation. Measured
on the development machine (AVX-512 + AMX): ViT-B-32 encodes 160 img/s that way against
37 img/s under ``torch.autocast`` and 29 img/s in fp32, with cosine >= 0.9999 to fp32.

bf16 only pays where the hardware has it natively: CPUs with AVX512-BF16 or AMX-BF16
(Linux ``/proc/cpuinfo`` flags ``avx512_bf16`` / ``amx_bf16``; ``bf16`` on Arm) and CUDA
GPUs. Elsewhere it is emulated and slower than fp32, so "auto" picks fp32 there.
fp16 on a CPU works with current PyTorch but is much slower than fp32 (measured ~5x slower
for ViT-B-32 here); it is allowed when forced.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from clipsearch.errors import UsageError

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def resolve_precision(requested: str, device: str = "cpu") -> Precision:
    """Turn a requested precision into the one to use on ``device``.

    requested: "auto" | "fp32" | "bf16" | "fp16" (case-insensitive). Anything but "auto"
        is honoured as given: the user forced it.
    device: a torch device string ("cpu", "cuda", "cuda:1", "mps"...).
    Returns "bf16" for "auto" on a CPU with native bf16 or on a bf16-capable CUDA device,
    "fp16" on an older CUDA device, else "fp32".
    Raises UsageError for an unknown precision name.
    """
    value = str(requested).strip().lower()
    if value not in PRECISIONS:
        raise UsageError(f"Unknown precision {requested!r}: choose one of {', '.join(PRECISIONS)}.")
    if value != "auto":
        return value  # type: ignore[return-value]
    kind = str(device).split(":", 1)[0].lower()
    if kind == "cuda":
        import torch

        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp16"
    if kind == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"  # mps, xpu...: stay exact unless the user asks otherwise


@functools.cache
def cpu_has_native_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when the CPU executes bf16 matrix math natively (AVX512-BF16, AMX-BF16, Arm BF16).

    Reads the CPU flags from ``cpuinfo`` (Linux). Elsewhere (no such file) returns False:
    fp32 is the safe default and the user can force bf16.
    """
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() not in ("flags", "features"):
            continue
        flags = set(value.split())
        if flags & _NATIVE_BF16_FLAGS or "bf16" in flags:
            return True
    return False


# int8 dot-product instructions: what makes int8 inference several times faster than fp32
# (x86 VNNI in AVX-512 or AVX, AMX; Arm's SDOT/I8MM). Without them int8 GEMMs widen to int16
# with AVX2 and run about as fast as fp32 ones.
_INT8_DOT_FLAGS = frozenset(
    {"avx512_vnni", "avx512vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"}
)


def cpu_int8_dot_product(cpuinfo: str | Path = "/proc/cpuinfo") -> list[str]:
    """The CPU's int8 dot-product features (sorted ``/proc/cpuinfo`` flags, e.g.
    ``["avx512_vnni"]``); empty when it has none or the flags cannot be read (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return sorted(set(value.split()) & _INT8_DOT_FLAGS)
    return []
