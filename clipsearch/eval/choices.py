"""The evaluation commands' named choices (dataset and moment formats, synthetic caption
styles, ITM re-rankers): ``Literal`` types and constants that import nothing, so the
command line declares its options without loading numpy or Pillow. ``datasets``,
``moments``, ``synthetic`` and ``itm`` re-export them."""

from __future__ import annotations

from typing import Literal

DatasetFormat = Literal["auto", "karpathy", "pairs", "msrvtt", "wds"]
MomentFormat = Literal["auto", "charades", "qvhighlights", "pictures"]
ImageCaptionStyle = Literal["full", "background"]
VideoCaptionStyle = Literal["scene", "all"]
ITM_RERANKERS = {"itm": "fusion", "itm-prob": "itm"}  # name → final score rule
