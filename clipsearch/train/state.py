"""The run folder: what marks a run, and the state that resumes it exactly.

Layout of ``--out``:

    run.json                the run's config (written when a run starts; marks the folder)
    checkpoint.safetensors  model weights after the last completed epoch (a clipsearch
                            checkpoint: ``--model out/checkpoint.safetensors`` works anywhere)
    train_state.pt          optimiser moments, step counters, torch RNG state, history,
                            LoRA adapters, media that failed to decode; a plain dict of
                            tensors/numbers/strings read back with ``weights_only=True``
    report.json, report.md  the final report

Both weight files are written under temporary names and renamed, checkpoint first; the
state records the checkpoint's size and mtime, so a crash between the two renames is
detected on resume instead of silently pairing new weights with old optimiser moments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from clipsearch.atomic import atomic_write, atomic_write_bytes
from clipsearch.errors import TrainingError

RUN_FILE = "run.json"
CHECKPOINT_FILE = "checkpoint.safetensors"
STATE_FILE = "train_state.pt"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
RUN_FILES = (RUN_FILE, CHECKPOINT_FILE, STATE_FILE, REPORT_JSON, REPORT_MD)
STATE_VERSION = 1

# Settings a resumed run may change: how it optimises from here on (a user lowering the
# learning rate after a divergence, or extending the run), not what it trains on or what
# it trains. Changing any of them means the run no longer equals a straight one.
RESUME_OVERRIDES = frozenset(
    {
        "epochs",
        "lr",
        "weight_decay",
        "beta1",
        "beta2",
        "eps",
        "warmup_steps",
        "grad_clip",
        "precision",
        "grad_checkpointing",
        "micro_batch",
        "workers",
        "eval_batch_size",
    }
)
_FREE_ON_RESUME = RESUME_OVERRIDES | {"out", "resume", "overwrite"}


def holds_run(out: Path) -> bool:
    """True when ``out`` already holds (part of) a training run."""
    return any((out / name).exists() for name in (RUN_FILE, CHECKPOINT_FILE, STATE_FILE))


def prepare_out_dir(out: Path, *, resume: bool, overwrite: bool, config: dict[str, Any]) -> None:
    """Make ``out`` ready: refuse to clobber a run unless asked; check a resume matches.

    Raises TrainingError: ``out`` holds a run and neither ``resume`` nor ``overwrite`` is
    set; ``resume`` with nothing to resume; a resume whose config differs in a field that
    changes the training trajectory (the message lists them).
    """
    if out.exists() and not out.is_dir():
        raise TrainingError(f"{out} exists and is not a folder; choose another --out")
    if resume:
        if not (out / STATE_FILE).is_file() or not (out / RUN_FILE).is_file():
            raise TrainingError(
                f"nothing to resume in {out}: no completed epoch was saved there "
                "(start the run without --resume)"
            )
        saved = read_run_config(out)
        diff = sorted(
            k
            for k in set(saved) | set(config)
            if k not in _FREE_ON_RESUME and saved.get(k) != config.get(k)
        )
        if diff:
            changes = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in diff)
            raise TrainingError(
                f"cannot resume {out} with different data, model or batch settings ({changes}); "
                "`--resume --out DIR` alone reuses the run's settings (optimiser options such as "
                "--lr or --epochs may still be changed), or start over with --overwrite"
            )
        return
    if holds_run(out):
        if not overwrite:
            raise TrainingError(
                f"{out} already holds a training run; pass --resume to continue it or "
                "--overwrite to replace it"
            )
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / RUN_FILE, json.dumps({"config": config}, indent=2).encode())


def read_run_config(out: Path) -> dict[str, Any]:
    """The config a run in ``out`` was started with. Raises TrainingError if unreadable."""
    try:
        return json.loads((out / RUN_FILE).read_text(encoding="utf-8"))["config"]
    except FileNotFoundError:
        raise TrainingError(f"{out} holds no training run ({RUN_FILE} is missing)") from None
    except (ValueError, KeyError, TypeError) as e:
        raise TrainingError(f"{out / RUN_FILE} is damaged ({e}); use --overwrite") from None


def _stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def save_state(out: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (plus the checkpoint's stamp) to ``out/train_state.pt`` atomically."""
    state = dict(state, version=STATE_VERSION, checkpoint_stamp=_stamp(out / CHECKPOINT_FILE))
    path = out / STATE_FILE
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    return path


def load_state(out: Path) -> dict[str, Any]:
    """Read ``out/train_state.pt`` (``weights_only=True``) and check it matches the checkpoint.

    Raises TrainingError if the file is unreadable or the checkpoint changed after it.
    """
    path = out / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise TrainingError(
            f"{path} is unreadable ({type(e).__name__}: {e}); use --overwrite"
        ) from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise TrainingError(f"{path} is not a clipsearch training state (version {STATE_VERSION})")
    ckpt = out / CHECKPOINT_FILE
    if not ckpt.is_file() or _stamp(ckpt) != list(state.get("checkpoint_stamp", [])):
        raise TrainingError(
            f"{ckpt} does not match {path} (a run stopped while saving?); the weights and the "
            "optimiser state would not belong together. Restart with --overwrite"
        )
    return state
