"""clipsearch.train: contrastive training and fine-tuning of CLIP models on your own pairs.

The library entry point is ``run(TrainConfig(...), on_event=...)``; the program entry
point is ``main(argv)`` (``python -m clipsearch.train``). Pieces usable on their own:
``clipsearch.train.loss`` (CLIP / SigLIP losses), ``clipsearch.train.gradcache``
(gradient-cached steps), ``clipsearch.train.modes`` (full / LiT / proj / LoRA).
"""

from clipsearch.train.config import TrainConfig, parse_args
from clipsearch.train.loop import main, resume_config, run
from clipsearch.train.report import TrainReport

__all__ = ["TrainConfig", "TrainReport", "main", "parse_args", "resume_config", "run"]
