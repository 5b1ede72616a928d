"""The search layer's named choices: how videos pool, how results are re-ranked, ordered
and composed, and the limits on how many come back.

Plain ``Literal`` types and constants that import nothing, so the command line and the
server can declare and validate their options without loading numpy or the engine. The
modules that implement each choice re-export its names (``search.video.PoolMethod``,
``search.rerank.RerankMethod``, ``search.arrange.SortOrder``...).
"""

from __future__ import annotations

from typing import Literal, get_args

# how a video's frame scores become its score (search.video)
PoolMethod = Literal["peak", "mean", "max", "softmax"]
POOL_METHODS: tuple[PoolMethod, ...] = ("peak", "mean", "max", "softmax")
DEFAULT_POOLING: PoolMethod = "peak"
Pooling = PoolMethod
POOLINGS: tuple[Pooling, ...] = POOL_METHODS

# hubness re-ranking of a result list (search.rerank)
RerankMethod = Literal["none", "is", "qbnorm", "dbnorm", "dbnorm-dynamic"]
RERANK_METHODS: tuple[RerankMethod, ...] = get_args(RerankMethod)

# what `search --rerank` takes: hubness or the BLIP cross-encoder (search.itm)
ItmScoreRule = Literal["fusion", "itm"]
ITM_SCORE_RULES: tuple[ItmScoreRule, ...] = get_args(ItmScoreRule)
Reranker = Literal[RerankMethod, "itm"]
RERANKERS: tuple[Reranker, ...] = get_args(Reranker)

# order of the relevant results (search.arrange); -date: newest first
SortOrder = Literal["relevance", "date", "-date"]
SORT_ORDERS: tuple[SortOrder, ...] = get_args(SortOrder)

# how --image and --text combine (search.compose)
Composition = Literal["slerp", "sum"]
COMPOSITIONS: tuple[Composition, ...] = get_args(Composition)

# how much the text counts when it modifies an example image (search.compose)
DEFAULT_TEXT_WEIGHT = 0.5

# near-duplicates (search.dedup): the cosine from which two items are near-duplicates, and
# how many neighbours of each item are compared
DUPLICATE_THRESHOLD = 0.95
DUPLICATE_NEIGHBOURS = 10

# tags (search.classify): each label's threshold read from the scores
AUTO_THRESHOLD = "auto"

MAX_K = 10_000  # results one search may return
MAX_MOMENTS = 20  # moments one video hit may carry
