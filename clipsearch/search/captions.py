"""Captions shown with search results: each hit's stored caption (source "caption")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from clipsearch.store.texts import CAPTION

if TYPE_CHECKING:
    from clipsearch.search.hits import Hit
    from clipsearch.store.texts import TextStore


def with_captions_of(hits: Sequence[Hit], texts: TextStore) -> list[Hit]:
    """``hits`` with ``caption`` set from the catalog: an image's caption; a video's
    caption nearest its best moment (its first one when it has no moment)."""
    out = []
    for h in hits:
        rows = [(t, text) for source, t, text in texts.texts(h.item_id) if source == CAPTION]
        if not rows:
            out.append(h)
            continue
        best = h.moment.best_t if h.moment is not None else None
        pick = rows[0] if best is None else min(rows, key=lambda r: abs((r[0] or 0.0) - best))
        out.append(replace(h, caption=pick[1]))
    return out
