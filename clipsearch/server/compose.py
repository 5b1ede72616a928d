"""Turning an HTTP search request into one query vector.

The parts a request may carry:

- ``q``: text in the query grammar of `clipsearch.search.query` (weights, ``+``/``-``),
  parsed with file detection switched off: a remote client's string is never read as a
  path on the server's disk;
- uploaded images (already decoded and content-checked);
- ``like``: ids of catalog items, whose stored item vectors are used as they are (no
  decoding, works for videos through their meanP vector).

They combine as in DESIGN.md §5:

    q = normalise(w_t · Σⱼ aⱼ·normalise(tⱼ) + w_i · Σ normalise(uᵢ) + w_l · Σ normalise(vₖ))

with aⱼ the grammar's per-term weights. This is `clipsearch.search.engine.encode_plan`
extended to bytes and item ids; it belongs in the library (see docs/server.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from clipsearch.errors import QueryError
from clipsearch.models.base import l2_normalize
from clipsearch.search.query import QueryPlan, parse_query


def _never_a_file(_: str) -> bool:
    return False


def parse_text(q: str) -> QueryPlan:
    """Parse a text query from a remote client. Raises QueryError (empty, malformed,
    or a bare path such as ``/home/me/a.jpg``, which the server will not open)."""
    try:
        return parse_query(q, is_file=_never_a_file)
    except QueryError as e:
        if "query file not found" in str(e):
            raise QueryError(
                "the server does not read query files by path: upload the image instead, "
                "or put the text in quotes"
            ) from None
        raise


def combine(parts: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """q = normalise(Σ wᵢ · normalise(pᵢ)), shape (D,). Raises QueryError when empty or
    when the parts cancel out."""
    if not parts:
        raise QueryError("the query is empty: type some text, drop an image, or pick an item")
    stacked = l2_normalize(np.stack([np.asarray(p, dtype=np.float32) for p in parts]))  # (P, D)
    q = np.asarray(weights, dtype=np.float32) @ stacked  # (D,)
    if float(np.linalg.norm(q)) < 1e-6:
        raise QueryError("the query's parts cancel out: nothing is left to search for")
    return l2_normalize(q)
