"""Validation recall during training, with the evaluation harness's metrics.

Embeds every validation media and caption with the model being trained (eval mode, no
gradients), builds the (captions × media) cosine matrix and scores it with
``clipsearch.eval.metrics.retrieval_metrics``: text→media R@K, and media→text R@K where
a media is a hit if *any* of its captions is in the top K (CLIP paper convention).
Media that fail to decode are left out with their captions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch

from clipsearch.train.batches import PairLoader
from clipsearch.train.trainable import TrainableModel, encode_video

KEYS = ("R@1", "R@5", "R@10", "MdR", "MnR", "n")


@torch.no_grad()
def validation_recall(
    tm: TrainableModel,
    loader: PairLoader,
    *,
    batch_size: int,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> dict[str, dict[str, float]]:
    """Recall of ``tm`` on ``loader``'s pairs.

    Returns ``{"text_to_media": {"R@1", "R@5", "R@10", "MdR", "MnR", "n"},
    "media_to_text": {...}}`` with recalls in percent.
    Raises DatasetError when no validation media decodes.
    """
    from clipsearch.errors import DatasetError
    from clipsearch.eval.metrics import retrieval_metrics

    model = tm.model
    was_training = model.training
    model.eval()
    try:
        data = loader.data
        rows: list[np.ndarray] = []
        kept: list[np.ndarray] = []
        for idx, pixels in loader.media_batches(batch_size):
            with autocast():
                if data.kind == "video":
                    v = encode_video(model, pixels)
                else:
                    v = torch.nn.functional.normalize(model.encode_image(pixels), dim=-1)
            rows.append(v.float().numpy())
            kept.append(idx)
        if not rows:
            raise DatasetError("no validation media could be decoded")
        media_idx = np.concatenate(kept)
        media_vecs = np.concatenate(rows)  # (M', D)
        new_index = np.full(data.n_media, -1, dtype=np.int64)
        new_index[media_idx] = np.arange(media_idx.size)
        caption_ids = np.flatnonzero(new_index[data.caption_media] >= 0)
        text_rows = []
        for lo in range(0, caption_ids.size, batch_size):
            texts = [data.captions[i] for i in caption_ids[lo : lo + batch_size]]
            with autocast():
                t = torch.nn.functional.normalize(model.encode_text(tm.tokenizer(texts)), dim=-1)
            text_rows.append(t.float().numpy())
        text_vecs = np.concatenate(text_rows)  # (T', D)
        S = text_vecs @ media_vecs.T  # (T', M')
        metrics = retrieval_metrics(S, new_index[data.caption_media[caption_ids]])
    finally:
        model.train(was_training)
    out: dict[str, dict[str, float]] = {}
    for direction, m in metrics.to_dict().items():
        out[direction] = {k: float(v) for k, v in m.items() if k in KEYS}
    return out
