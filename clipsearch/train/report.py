"""The final training report: before/after validation recall, as JSON and Markdown."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clipsearch.atomic import atomic_write_text

_DIRECTIONS = (("text_to_media", "text→media"), ("media_to_text", "media→text"))
_KS = ("R@1", "R@5", "R@10")


@dataclass
class TrainReport:
    """What a run did and how well it ended.

    before / after: validation metrics of the base model and of the final checkpoint
    ({"text_to_media": {"R@1": ...}, "media_to_text": {...}}; empty without validation).
    history: one entry per completed epoch: {"epoch", "loss", "seconds", "metrics"}.
    """

    status: str  # "completed"
    out: str
    checkpoint: str
    config: dict[str, Any]
    data: dict[str, Any]
    base_spec: str | None
    base_fingerprint: str | None
    fingerprint: str | None
    trainable_params: int
    frozen_params: int
    before: dict[str, dict[str, float]] = field(default_factory=dict)
    after: dict[str, dict[str, float]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        lines = [
            "# Training report",
            "",
            f"- status: {self.status}",
            f"- checkpoint: `{self.checkpoint}`",
            f"- base: `{self.base_spec or 'from scratch: ' + str(self.config.get('from_scratch'))}`",
            f"- fingerprint: `{self.base_fingerprint}` → `{self.fingerprint}`",
            f"- mode: {self.config.get('mode')}, loss: {self.config.get('loss')}, "
            f"epochs: {self.config.get('epochs')}, batch: {self.config.get('batch_size')}, "
            f"lr: {self.config.get('lr')}, precision: {self.config.get('precision')}",
            f"- trainable parameters: {self.trainable_params:,} (frozen {self.frozen_params:,})",
            f"- training time: {self.train_seconds:.1f} s",
            "",
            "## Data",
            "",
        ]
        lines += [f"- {k}: {v}" for k, v in self.data.items()]
        if self.before or self.after:
            lines += ["", "## Validation recall (%)", ""]
            lines += ["| direction | metric | before | after | Δ |", "|---|---|---|---|---|"]
            for key, label in _DIRECTIONS:
                for k in _KS:
                    b = self.before.get(key, {}).get(k)
                    a = self.after.get(key, {}).get(k)
                    delta = f"{a - b:+.1f}" if a is not None and b is not None else ""
                    lines.append(f"| {label} | {k} | {_fmt(b)} | {_fmt(a)} | {delta} |")
        if self.history:
            lines += ["", "## Epochs", "", "| epoch | loss | text→media R@1 | seconds |"]
            lines.append("|---|---|---|---|")
            for h in self.history:
                r1 = h.get("metrics", {}).get("text_to_media", {}).get("R@1")
                lines.append(
                    f"| {h['epoch']} | {h['loss']:.4f} | {_fmt(r1)} | {h['seconds']:.1f} |"
                )
        return "\n".join(lines) + "\n"

    def write(self, out: Path, *, json_name: str, md_name: str) -> tuple[Path, Path]:
        js, md = out / json_name, out / md_name
        atomic_write_text(js, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(md, self.markdown())
        return js, md


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.1f}"
