"""Weights files: clipsearch checkpoints, safe state-dict reading, and loading into a model.

A **clipsearch checkpoint** is a safetensors file whose header metadata (string -> string)
records everything needed to rebuild the model with no registry, no network and no
pickle, e.g. in a fresh subprocess:

    clipsearch.format   "checkpoint"            marks the file as ours
    clipsearch.version  "1"                     format version
    arch                open_clip architecture name the weights belong to
    model_cfg           JSON: the full open_clip model config (embed_dim, vision_cfg, text_cfg...)
    preprocess_cfg      JSON: open_clip preprocessing (size, mean, std, interpolation, resize_mode)
    base_spec           the spec the weights were fine-tuned from ("" if none)
    extra.<key>         caller-supplied strings (training run id, dataset, ...)

Other weights files (``ARCH@path`` specs) are read as safetensors, or with
``torch.load(weights_only=True)`` which refuses arbitrary pickled objects
(docs/architecture.md#safety); the format is sniffed from the bytes, not the file name.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipsearch.atomic import atomic_write, atomic_write_text
from clipsearch.errors import ModelError, WeightsUnavailableError

if TYPE_CHECKING:
    import torch

FORMAT_KEY = "clipsearch.format"
FORMAT_VALUE = "checkpoint"
VERSION_KEY = "clipsearch.version"
VERSION = "1"
EXTRA_PREFIX = "extra."


@dataclass(frozen=True)
class CheckpointInfo:
    """What a clipsearch checkpoint's header records (see the module docstring)."""

    arch: str
    model_cfg: dict[str, Any]
    preprocess_cfg: dict[str, Any]
    base_spec: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def save_checkpoint(
    model: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    arch: str,
    model_cfg: dict[str, Any] | None = None,
    base_spec: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model``'s weights as a clipsearch checkpoint; a bare-path spec reloads it exactly.

    model: an open_clip model (CLIP / CustomTextCLIP); any device and dtype (tensors are
        written as they are, moved to the CPU). A ``module.`` prefix (DDP) is stripped.
    arch: the open_clip architecture name (e.g. ``encoder.arch``).
    model_cfg: the full model config; default: open_clip's registered config for ``arch``.
        Pass ``encoder.model_cfg`` when the model came from `load_encoder`.
    base_spec: the spec the weights derive from (recorded for provenance).
    extra: more string metadata (keys and values must be strings).
    Returns the absolute path written. The file is written to a temporary name and renamed,
    so a crash never leaves a half-written checkpoint under ``path``.
    Raises ModelError when no model config is known for ``arch``.
    """
    from open_clip import get_model_config, get_model_preprocess_cfg
    from safetensors.torch import save_file

    if model_cfg is None:
        model_cfg = get_model_config(arch)
        if model_cfg is None:
            raise ModelError(
                f"No open_clip model config is registered for {arch!r}; pass model_cfg= "
                "(e.g. encoder.model_cfg) to save_checkpoint."
            )
    inner = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    try:
        preprocess_cfg = dict(get_model_preprocess_cfg(inner))
    except AttributeError:
        raise ModelError(
            "save_checkpoint needs an open_clip model (with .visual.preprocess_cfg)."
        ) from None
    metadata = {
        FORMAT_KEY: FORMAT_VALUE,
        VERSION_KEY: VERSION,
        "arch": arch,
        "model_cfg": json.dumps(model_cfg, sort_keys=True),
        "preprocess_cfg": json.dumps(preprocess_cfg, sort_keys=True),
        "base_spec": base_spec or "",
    }
    for key, value in (extra or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"checkpoint extra metadata must be str -> str, got {key!r}: {value!r}")
        metadata[EXTRA_PREFIX + key] = value

    path = Path(path).expanduser().absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = _plain_tensors(model.state_dict())
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    return path


def read_checkpoint_info(path: str | os.PathLike[str]) -> CheckpointInfo:
    """Read a clipsearch checkpoint's header (no tensors are loaded).

    Raises WeightsUnavailableError if the file is missing, ModelError if it is unreadable or
    not a clipsearch checkpoint (the message says how to load plain weights instead).
    """
    path = _existing_file(path)
    if not _is_safetensors(path):
        raise ModelError(_not_ours(path))
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as e:
        raise ModelError(f"Cannot read checkpoint {path}: {e}") from None
    if meta.get(FORMAT_KEY) != FORMAT_VALUE:
        raise ModelError(_not_ours(path))
    if meta.get(VERSION_KEY) != VERSION:
        raise ModelError(
            f"Checkpoint {path} has format version {meta.get(VERSION_KEY)!r}; this clipsearch "
            f"reads version {VERSION}. Upgrade clipsearch."
        )
    try:
        return CheckpointInfo(
            arch=meta["arch"],
            model_cfg=json.loads(meta["model_cfg"]),
            preprocess_cfg=json.loads(meta["preprocess_cfg"]),
            base_spec=meta.get("base_spec") or None,
            extra={
                k[len(EXTRA_PREFIX) :]: v for k, v in meta.items() if k.startswith(EXTRA_PREFIX)
            },
        )
    except (KeyError, ValueError) as e:
        raise ModelError(f"Checkpoint {path} has a damaged header ({e}).") from None


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a weights file into a flat ``{name: tensor}`` dict on the CPU, without unpickling.

    Accepts safetensors, or a torch file loadable with ``weights_only=True`` holding either a
    state dict or ``{"state_dict": ...}`` (open_clip training checkpoints). A ``module.``
    prefix is stripped.
    Raises WeightsUnavailableError (missing file) or ModelError (unreadable, pickled objects,
    not a state dict).
    """
    import torch

    path = _existing_file(path)
    try:
        if _is_safetensors(path):
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            with path.open("rb") as f:  # a file object: torch.load must not guess from the suffix
                obj = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(
            f"Cannot read weights from {path}: it is neither a safetensors file nor a "
            f"weights-only torch file ({type(e).__name__}: {_first_line(e)}). clipsearch never "
            "unpickles arbitrary objects; convert the weights to safetensors."
        ) from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise ModelError(f"{path} does not hold a state dict (name -> tensor).")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(f"{path} is not a plain state dict: {bad[:3]} are not tensors.")
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_state_dict_into(
    model: torch.nn.Module,
    state_dict: dict[str, torch.Tensor],
    *,
    source: str,
    assign: bool = False,
) -> None:
    """Load ``state_dict`` into ``model`` strictly, after open_clip's own fix-ups.

    Mirrors ``open_clip.factory.load_checkpoint`` (third-party layouts, old text-tower
    layout, logit_scale shape, position embeddings resized to the model's grid) minus its
    file reading, which can fall back to unsafe unpickling.
    source: the file the weights came from, for messages.
    assign: the loaded tensors become the model's parameters and buffers instead of being
        copied into them, each first converted to the dtype the model has for it (a no-op
        when the file already has it). Tensors read from safetensors stay backed by the
        file's copy-on-write memory map, so a freshly built model (`skip_weight_init`) is
        never written twice: measured for ViT-B-32 fp32 on the loaded 2-core machine, load
        3.4 s / 0.80 GB peak instead of 20.8 s / 1.91 GB. Only for a model nothing else
        holds yet: an optimizer built over the old parameters would keep training those.
    Raises ModelError listing missing/unexpected/mis-shaped tensors when they do not fit.
    """
    from open_clip.convert import convert_state_dict
    from open_clip.model import (
        convert_to_custom_text_state_dict,
        resize_pos_embed,
        resize_text_pos_embed,
    )

    try:
        sd = convert_state_dict(model, dict(state_dict))
        if "positional_embedding" in sd and not hasattr(model, "positional_embedding"):
            sd = convert_to_custom_text_state_dict(sd)
        for name in ("logit_scale", "logit_bias"):
            param = getattr(model, name, None)
            if name in sd and param is not None and param.ndim != sd[name].ndim:
                sd[name] = sd[name].reshape(param.shape)
        if "logit_bias" not in sd and getattr(model, "logit_bias", None) is not None:
            sd["logit_bias"] = model.logit_bias.detach().clone().zero_()
        sd.pop("text.transformer.embeddings.position_ids", None)
        resize_pos_embed(sd, model)
        resize_text_pos_embed(sd, model)
    except Exception as e:
        raise ModelError(
            f"The weights in {source} do not fit this architecture ({type(e).__name__}: "
            f"{_first_line(e)})."
        ) from None
    problems = _mismatches(model, sd)
    if problems:
        raise ModelError(
            f"The weights in {source} do not fit this architecture: {problems}. Check that the "
            "architecture named in the spec is the one the weights were trained with."
        )
    if assign:
        expected = model.state_dict()
        sd = {
            k: v if v.dtype == expected[k].dtype else v.to(expected[k].dtype) for k, v in sd.items()
        }
    model.load_state_dict(sd, strict=True, assign=assign)


def _mismatches(model: torch.nn.Module, sd: Mapping[str, torch.Tensor]) -> str:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    shapes = sorted(
        f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and sd[k].shape != v.shape
    )
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
    return "; ".join(parts)


def _plain_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous, unshared tensors (safetensors refuses tensors sharing memory)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    strip = all(k.startswith("module.") for k in state)
    for key, tensor in state.items():
        t = tensor.detach().to("cpu").contiguous()
        ident = (t.untyped_storage().data_ptr(), t.storage_offset())
        if t.numel() and ident in seen:
            t = t.clone()
        seen.add(ident)
        out[key[len("module.") :] if strip else key] = t
    return out


def _existing_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise WeightsUnavailableError(
            f"Weights file not found: {p}. Check the path in the model spec."
        )
    if not p.is_file():
        raise ModelError(f"{p} is not a file; a model spec path must name a weights file.")
    if not os.access(p, os.R_OK):
        raise ModelError(f"Weights file {p} is not readable (permission denied).")
    return p


def _is_safetensors(path: Path) -> bool:
    """Sniff the safetensors layout: u64 little-endian header size, then a JSON object."""
    try:
        with path.open("rb") as f:
            head = f.read(9)
        size = path.stat().st_size
    except OSError as e:
        raise ModelError(f"Cannot read {path}: {e.strerror or e}.") from None
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= size - 8 and head[8:9] == b"{"


def _not_ours(path: Path) -> str:
    return (
        f"{path} is not a clipsearch checkpoint (it does not record its architecture). For "
        f"plain open_clip weights, name the architecture: --model 'ARCH@{path}' "
        "(e.g. ViT-B-32@...)."
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else ""


# --- weight digests (the model fingerprint's content part) -------------------------------------
DIGEST_VERSION = 1  # of `state_dict_digest`; bump if what it hashes changes
_DIGEST_CACHE: dict[tuple[str, int, int, str], str] = {}
_DIGEST_LOCK = threading.Lock()


def state_dict_digest(model: torch.nn.Module) -> str:
    """sha256 over every tensor's name, dtype, shape and raw bytes, in name order.

    Cost for ViT-B-32 (605 MB of fp32 weights): 0.35 s measured on the 2-core development
    machine (0.8-1.2 s while it was shared and loaded); cached per file within a process.
    """
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def weights_digest(model: torch.nn.Module, path: str, model_cfg: dict[str, Any]) -> str:
    """`state_dict_digest`, cached by (file, size, mtime, config): per process, and across
    processes in `digest_cache_path` (so a process start does not re-hash the weights)."""
    st = os.stat(path)
    cfg_key = hashlib.sha256(json.dumps(model_cfg, sort_keys=True).encode()).hexdigest()
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, cfg_key)
    disk_key = "|".join(map(str, key))
    with _DIGEST_LOCK:
        cached = _DIGEST_CACHE.get(key)
        if cached is None:
            cached = _read_digest_cache().get(disk_key)
    if cached is None:
        cached = state_dict_digest(model)
        with _DIGEST_LOCK:
            _write_digest(disk_key, cached)
    with _DIGEST_LOCK:
        _DIGEST_CACHE[key] = cached
    return cached


DIGEST_CACHE_ENTRIES = 64  # newest weights files remembered on disk


def cache_dir() -> Path:
    """Where clipsearch keeps caches that are not a library's: ``$CLIPSEARCH_CACHE_DIR``, by
    default ``$XDG_CACHE_HOME/clipsearch`` (``~/.cache/clipsearch``)."""
    folder = os.environ.get("CLIPSEARCH_CACHE_DIR")
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
        folder = os.path.join(base, "clipsearch")
    return Path(folder)


def digest_cache_path() -> Path:
    """``weights-digests.json`` in `cache_dir`."""
    return cache_dir() / "weights-digests.json"


def _read_digest_cache() -> dict[str, str]:
    try:
        data = json.loads(digest_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing or damaged: only a cache
    if not isinstance(data, dict) or data.get("version") != DIGEST_VERSION:
        return {}
    entries = data.get("digests")
    return {str(k): str(v) for k, v in entries.items()} if isinstance(entries, dict) else {}


def _write_digest(key: str, digest: str) -> None:
    entries = _read_digest_cache()
    entries.pop(key, None)
    entries[key] = digest  # newest last
    keep = dict(list(entries.items())[-DIGEST_CACHE_ENTRIES:])
    path = digest_cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"version": DIGEST_VERSION, "digests": keep}))
    except OSError:
        pass  # a read-only home: the digest is recomputed next time, nothing else changes
