"""The indexing run's named choices, as ``Literal`` types that import nothing (the command
line declares its options from them without loading the pipeline): where files are
decoded and encoded. ``ingest.encode`` re-exports them."""

from __future__ import annotations

from typing import Literal

EngineName = Literal["local", "ray"]  # this process, or a Ray cluster (ingest.ray_engine)
ENGINES: tuple[EngineName, ...] = ("local", "ray")  # `index --engine`
