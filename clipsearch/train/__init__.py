"""clipsearch.train: contrastive training and fine-tuning of CLIP models on your own pairs.

The library entry point is ``run(TrainConfig(...), on_event=...)``; the command line is
``clipsearch train`` (``python -m clipsearch.train`` runs the same command). Pieces usable
on their own: ``clipsearch.train.loss`` (CLIP / SigLIP losses), ``clipsearch.train.gradcache``
(gradient-cached steps), ``clipsearch.train.modes`` (full / LiT / proj / LoRA).

``TrainConfig`` imports no torch; ``run``, ``resume_config`` and ``TrainReport`` load the
training loop (and torch) on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clipsearch.lazy import lazy_names
from clipsearch.train.config import TrainConfig

if TYPE_CHECKING:
    from clipsearch.train.loop import resume_config, run
    from clipsearch.train.report import TrainReport

__all__ = ["TrainConfig", "TrainReport", "resume_config", "run"]

_LAZY = {
    "run": "clipsearch.train.loop",
    "resume_config": "clipsearch.train.loop",
    "TrainReport": "clipsearch.train.report",
}


__getattr__ = lazy_names(__name__, _LAZY)
