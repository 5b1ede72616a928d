"""Zero-shot classification with a prompt ensemble (Radford et al. 2021, CLIP §3.1.4).

Per class c, every template is filled with the class name and encoded; the class vector
is the normalised mean of the normalised prompt embeddings (CLIP_benchmark
``zero_shot_classifier``; docs/classify.md):

    w_c = normalise( (1/|T|) Σ_{τ∈T} normalise(enc_text(τ(c))) )

and an image x scores ``logits = s · normalise(enc_image(x)) · Wᵀ`` with s the logit scale
(100 in CLIP_benchmark; a model's own learned scale for calibrated probabilities).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from clipsearch.errors import UsageError
from clipsearch.models.base import Encoder, l2_normalize
from clipsearch.search.templates import check_templates, fill_template

ProgressCallback = Callable[[int, int], None]  # (done, total) prompts encoded


def build_classifier(
    encoder: Encoder,
    classnames: Sequence[str],
    templates: Sequence[str],
    *,
    batch_size: int = 256,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Class weight matrix W: (C, D) float32, each row L2-normalised.

    classnames: C class names (non-empty, distinct). templates: strings containing ``{c}``.
    Prompts are encoded in batches of ``batch_size`` across classes.
    Raises UsageError for no classes, duplicate or blank class names, or bad templates.
    """
    names = [str(c).strip() for c in classnames]
    if not names:
        raise UsageError("no class names given")
    if any(not n for n in names):
        raise UsageError("a class name is blank")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UsageError(f"duplicate class names: {', '.join(dupes[:5])}")
    tpls = check_templates(list(templates))
    prompts = [fill_template(t, n) for n in names for t in tpls]  # class-major order
    emb = np.empty((len(prompts), encoder.dim), dtype=np.float32)
    for lo in range(0, len(prompts), batch_size):
        chunk = prompts[lo : lo + batch_size]
        emb[lo : lo + len(chunk)] = encoder.encode_texts(chunk)
        if progress is not None:
            progress(lo + len(chunk), len(prompts))
    emb = l2_normalize(emb).reshape(len(names), len(tpls), encoder.dim)  # (C, T, D)
    return l2_normalize(emb.mean(axis=1))  # (C, D)


def zero_shot_logits(
    image_embeddings: np.ndarray, classifier: np.ndarray, *, logit_scale: float = 100.0
) -> np.ndarray:
    """(N, D) L2-normalised image vectors × (C, D) classifier → (N, C) float32 logits."""
    return (logit_scale * (image_embeddings @ classifier.T)).astype(np.float32)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax (probabilities from logits)."""
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)
