"""BLIP through Hugging Face ``transformers``: image-text matching (ITM) and captioning.

BLIP (Li, Li, Xiong & Hoi, ICML 2022, "BLIP: Bootstrapping Language-Image Pre-training")
adds to a CLIP-like contrastive pair of towers two heads that read the image through
cross-attention:

- **ITM** (`ImageTextMatcher`, ``BlipForImageTextRetrieval``): the text encoder attends to
  the ViT's patch states and a linear head on its [CLS] state gives two logits
  ``(no match, match)``; ``p = softmax(logits)[1]``. It is a cross-encoder: it sees both
  sides at once, so it is far more accurate than a cosine and far too slow to run over a
  whole library — hence the two-stage recipe (contrastive top-k, then ITM), which BLIP's
  own retrieval evaluation uses with ``score = itm_logit[1] + itc_cosine``.
- **Captioner** (`Captioner`, ``BlipForConditionalGeneration``): an image-grounded text
  decoder; beam search gives one caption per image.

Models are named like CLIP models are elsewhere in clipsearch: a Hugging Face Hub id
(``Salesforce/blip-itm-base-coco``, downloaded into the Hugging Face cache on first use) or
a local folder in Hub layout (``config.json``, weights, tokenizer and processor files).
Offline (``HF_HUB_OFFLINE=1``, or no route to the Hub) a model that is not already cached
fails at once with `WeightsUnavailableError` saying how to supply it; it never waits on
retries. ``transformers`` is optional (extra ``blip``) and imported on first load.

Precision: "auto" picks bf16 where the CPU has native bf16 (`resolve_precision`); the whole
model is cast (weights and activations), and ITM probabilities stay within ~1e-2 of fp32
(benchmarks/itm_rerank.py prints the figure for the base model).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

from clipsearch.errors import (
    MissingDependencyError,
    ModelError,
    UsageError,
    WeightsUnavailableError,
)
from clipsearch.models.precision import Precision, resolve_precision

if TYPE_CHECKING:
    import torch

DEFAULT_ITM_MODEL = "Salesforce/blip-itm-base-coco"
DEFAULT_CAPTION_MODEL = "Salesforce/blip-image-captioning-base"
BlipTask = Literal["itm", "caption"]

MAX_TEXT_TOKENS = 64  # longer queries are truncated (BLIP was trained on <= 35-token texts)
IMAGE_BATCH = 8  # images per ViT forward pass (bounds peak memory at 384 px)
STATE_CACHE_BYTES = 256 << 20  # image states kept for re-use by later queries (~0.9 MB each)


@dataclass(frozen=True)
class ItmScores:
    """ITM head outputs for N (text, image) pairs.

    logits: (N, 2) float32, columns (no match, match).
    """

    logits: np.ndarray

    @property
    def probability(self) -> np.ndarray:
        """(N,) P(match) = softmax(logits)[:, 1], in [0, 1]."""
        return 1.0 / (1.0 + np.exp(-self.log_odds))

    @property
    def log_odds(self) -> np.ndarray:
        """(N,) logit(P(match)) = logits[:, 1] - logits[:, 0]: the same order as the
        probability without its saturation near 0 and 1."""
        return (self.logits[:, 1] - self.logits[:, 0]).astype(np.float32)


class _BlipModel:
    """What the ITM and caption wrappers share: model, processor, precision, a lock."""

    def __init__(
        self, model: Any, processor: Any, *, name: str, precision: Precision, device: str
    ) -> None:
        self.model = model
        self.processor = processor
        self.name = name
        self.precision = precision
        self.device = device
        self._lock = threading.Lock()  # one forward pass at a time (torch uses every core)
        size = processor.image_processor.size
        self.image_size = int(min(size["height"], size["width"]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.precision})"

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB PIL images -> (N, 3, S, S) pixel batch in the model's dtype (BLIP's own
        image processor: bicubic resize to S x S, rescale, CLIP mean/std)."""
        pixels = self.processor.image_processor(
            images=[im.convert("RGB") for im in images], return_tensors="pt"
        )["pixel_values"]
        return pixels.to(self.device, dtype=self.model.dtype)


class ImageTextMatcher(_BlipModel):
    """BLIP's ITM cross-encoder: how well does a text describe each image?

    Image states (the ViT's output) are kept in a bounded LRU cache under caller-given
    keys, so a second query over the same candidates (the next page, a refined query)
    only runs the text side.
    """

    def __init__(self, *args: Any, cache_bytes: int = STATE_CACHE_BYTES, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._states: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._cached = 0

    def cached_keys(self, keys: Sequence[Hashable]) -> set[Hashable]:
        """The subset of ``keys`` whose image states are cached (they need no pixels)."""
        with self._lock:
            return {k for k in keys if k in self._states}

    def score(
        self,
        text: str,
        images: Sequence[Image.Image | None],
        *,
        keys: Sequence[Hashable] | None = None,
    ) -> ItmScores:
        """ITM logits of one ``text`` against N images. With ``keys`` (one per image, e.g.
        (path, mtime, frame time)), an image whose key is cached may be passed as None."""
        return self.score_pairs([text] * len(images), images, keys=keys)

    def score_pairs(
        self,
        texts: Sequence[str],
        images: Sequence[Image.Image | None],
        *,
        keys: Sequence[Hashable] | None = None,
    ) -> ItmScores:
        """ITM logits of N (text, image) pairs, text i with image i. Returns (N, 2)."""
        import torch

        if len(texts) != len(images):
            raise UsageError(f"{len(texts)} texts for {len(images)} images")
        if keys is not None and len(keys) != len(images):
            raise UsageError(f"{len(keys)} keys for {len(images)} images")
        if not texts:
            return ItmScores(np.zeros((0, 2), dtype=np.float32))
        with self._lock, torch.inference_mode():
            states = self._image_states(images, keys)  # (N, T, H)
            tokens = self.processor.tokenizer(
                list(texts),
                padding=True,
                truncation=True,
                max_length=MAX_TEXT_TOKENS,
                return_tensors="pt",
            ).to(self.device)
            logits = []
            for lo in range(0, len(texts), IMAGE_BATCH * 4):
                hi = lo + IMAGE_BATCH * 4
                s = states[lo:hi]
                out = self.model.text_encoder(
                    input_ids=tokens["input_ids"][lo:hi],
                    attention_mask=tokens["attention_mask"][lo:hi],
                    encoder_hidden_states=s,
                    encoder_attention_mask=torch.ones(s.shape[:-1], dtype=torch.long),
                )
                logits.append(self.model.itm_head(out.last_hidden_state[:, 0, :]))  # (B, 2)
        return ItmScores(torch.cat(logits).float().cpu().numpy())

    def _image_states(
        self, images: Sequence[Image.Image | None], keys: Sequence[Hashable] | None
    ) -> torch.Tensor:
        import torch

        states: list[torch.Tensor | None] = [None] * len(images)
        if keys is not None:
            for i, key in enumerate(keys):
                cached = self._states.get(key)
                if cached is not None:
                    self._states.move_to_end(key)
                    states[i] = cached
        todo = [i for i, s in enumerate(states) if s is None]
        missing = [i for i in todo if images[i] is None]
        if missing:
            raise UsageError(f"image {missing[0]} is None and its key is not cached")
        for lo in range(0, len(todo), IMAGE_BATCH):
            batch = todo[lo : lo + IMAGE_BATCH]
            pixels = self.preprocess([images[i] for i in batch])  # (B, 3, S, S)
            out = self.model.vision_model(pixel_values=pixels).last_hidden_state  # (B, T, H)
            for j, i in enumerate(batch):
                states[i] = out[j]
                if keys is not None:
                    self._remember(keys[i], out[j])
        return torch.stack(states)  # type: ignore[arg-type]

    def _remember(self, key: Hashable, state: torch.Tensor) -> None:
        size = state.numel() * state.element_size()
        if size > self._cache_bytes:
            return
        old = self._states.pop(key, None)
        if old is not None:
            self._cached -= old.numel() * old.element_size()
        self._states[key] = state.clone()
        self._cached += size
        while self._cached > self._cache_bytes:
            _, dropped = self._states.popitem(last=False)
            self._cached -= dropped.numel() * dropped.element_size()


class Captioner(_BlipModel):
    """BLIP's image-grounded decoder: captions by beam search, or several sampled ones."""

    def caption(
        self,
        images: Sequence[Image.Image],
        *,
        max_new_tokens: int = 30,
        num_beams: int = 3,
        prompt: str | None = None,
    ) -> list[str]:
        """One caption per RGB image, in order (beam search). ``prompt`` (e.g. "a
        photograph of") starts every caption and is kept. Raises UsageError for bad options."""
        if num_beams < 1:
            raise UsageError("num_beams must be >= 1")
        out = self._generate(images, 1, max_new_tokens, prompt, num_beams=num_beams)
        return [texts[0] if texts else "" for texts in out]

    def sample(
        self,
        images: Sequence[Image.Image],
        n: int,
        *,
        max_new_tokens: int = 30,
        top_p: float = 0.9,
        seed: int = 0,
        prompt: str | None = None,
    ) -> list[list[str]]:
        """``n`` captions per image by nucleus sampling (BLIP's CapFilt captioner setting,
        top-p 0.9: more diverse than beam search), duplicates removed. Seeded: the same
        call gives the same captions."""
        import torch

        if not 0 < top_p <= 1:
            raise UsageError(f"top_p must be in (0, 1], got {top_p}")
        torch.manual_seed(seed)
        return self._generate(images, n, max_new_tokens, prompt, do_sample=True, top_p=top_p)

    def _generate(
        self,
        images: Sequence[Image.Image],
        n: int,
        max_new_tokens: int,
        prompt: str | None,
        **generate_kwargs: Any,
    ) -> list[list[str]]:
        import torch

        if max_new_tokens < 1 or n < 1:
            raise UsageError("max_new_tokens and the number of captions must be >= 1")
        out: list[list[str]] = []
        with self._lock, torch.inference_mode():
            for lo in range(0, len(images), IMAGE_BATCH):
                batch = images[lo : lo + IMAGE_BATCH]
                kwargs = dict(generate_kwargs)
                if prompt:
                    tokens = self.processor.tokenizer(
                        [prompt] * len(batch), return_tensors="pt"
                    ).to(self.device)
                    kwargs["input_ids"] = tokens["input_ids"]
                ids = self.model.generate(
                    pixel_values=self.preprocess(batch),
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=n,
                    **kwargs,
                )  # (B * n, L)
                texts = self.processor.batch_decode(ids, skip_special_tokens=True)
                for i in range(len(batch)):
                    mine = [" ".join(t.split()) for t in texts[i * n : (i + 1) * n]]
                    out.append(list(dict.fromkeys(t for t in mine if t)))
        return out


# --- loading ---------------------------------------------------------------------------------
def load_matcher(
    name: str | None = None, *, precision: str = "auto", device: str = "cpu"
) -> ImageTextMatcher:
    """Load a BLIP ITM model (Hub id or local folder; None = `DEFAULT_ITM_MODEL`).

    Raises MissingDependencyError (transformers not installed), WeightsUnavailableError
    (not cached and cannot be downloaded; the message says how to supply it), ModelError
    (the folder holds no usable BLIP retrieval model), UsageError (bad precision).
    """
    return _load("itm", name or DEFAULT_ITM_MODEL, precision=precision, device=device)  # type: ignore[return-value]


def load_captioner(
    name: str | None = None, *, precision: str = "auto", device: str = "cpu"
) -> Captioner:
    """Load a BLIP captioning model (None = `DEFAULT_CAPTION_MODEL`). Raises as `load_matcher`."""
    return _load("caption", name or DEFAULT_CAPTION_MODEL, precision=precision, device=device)  # type: ignore[return-value]


def _load(task: BlipTask, name: str, *, precision: str, device: str) -> _BlipModel:
    resolved = resolve_precision(precision, device)
    transformers = _transformers()
    import torch

    model_cls = (
        transformers.BlipForImageTextRetrieval
        if task == "itm"
        else transformers.BlipForConditionalGeneration
    )
    source = _local_folder(name)
    try:
        model, processor = _from_pretrained(transformers, model_cls, source or name, local=True)
    except (OSError, ValueError) as e:  # ValueError: a config.json without a model type
        if source is not None or isinstance(e, ValueError):
            raise ModelError(
                f"{name} is not a BLIP model folder ({_first_line(e)}). It needs config.json, "
                "the weights and the processor files, as `save_pretrained` writes them."
            ) from None
        model, processor = _download(transformers, model_cls, name, task)
    except _NotBlip as e:
        raise ModelError(
            f"{name} is a {e.args[0]!r} model, not BLIP. Pass a BLIP {_TASK_NAMES[task]} "
            f"model such as {_DEFAULTS[task]}."
        ) from None
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[resolved]
    try:
        model = model.to(device=device, dtype=dtype).eval()
    except (RuntimeError, AssertionError) as e:
        raise ModelError(f"Cannot use device {device!r}: {_first_line(e)}") from None
    wrapper = ImageTextMatcher if task == "itm" else Captioner
    return wrapper(model, processor, name=name, precision=resolved, device=device)


_TASK_NAMES = {"itm": "image-text retrieval (ITM)", "caption": "captioning"}
_DEFAULTS = {"itm": DEFAULT_ITM_MODEL, "caption": DEFAULT_CAPTION_MODEL}
_OPTIONS = {"itm": "--itm-model", "caption": "--caption-model"}


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError("transformers", "blip") from None
    transformers.logging.set_verbosity_error()  # the library prints nothing
    transformers.logging.disable_progress_bar()
    return transformers


def _local_folder(name: str) -> Path | None:
    """The folder ``name`` names, or None for a Hub id. A path-like name must exist."""
    expanded = Path(os.path.expanduser(name))
    if name.startswith(("/", ".", "~")) or expanded.exists():
        if not expanded.is_dir():
            raise WeightsUnavailableError(
                f"BLIP model folder not found: {expanded}. Pass a Hugging Face Hub id or a "
                "folder holding the model's config.json, weights and processor files."
            )
        return expanded.absolute()
    return None


class _NotBlip(Exception):
    """The config names another model type (args[0])."""


def _from_pretrained(transformers: Any, model_cls: Any, where: str | Path, *, local: bool):
    """Config first (its model_type must be "blip"), then weights and processor.
    Raises OSError when files are missing (not cached, not downloadable), _NotBlip."""
    config = transformers.AutoConfig.from_pretrained(str(where), local_files_only=local)
    if getattr(config, "model_type", None) != "blip":
        raise _NotBlip(getattr(config, "model_type", "unknown"))
    model = model_cls.from_pretrained(str(where), config=config, local_files_only=local)
    processor = transformers.BlipProcessor.from_pretrained(str(where), local_files_only=local)
    return model, processor


def _download(transformers: Any, model_cls: Any, hub_id: str, task: BlipTask):
    from clipsearch.models.hub import unreachable_reason

    why = unreachable_reason()  # fails in seconds instead of the hub client's retries
    if why is not None:
        raise WeightsUnavailableError(_unavailable(hub_id, task, why))
    try:
        return _from_pretrained(transformers, model_cls, hub_id, local=False)
    except _NotBlip as e:
        raise ModelError(f"{hub_id} is a {e.args[0]!r} model, not BLIP.") from None
    except Exception as e:  # OSError, HTTP errors, repository not found...
        raise WeightsUnavailableError(_unavailable(hub_id, task, _first_line(e))) from None


def _unavailable(hub_id: str, task: BlipTask, cause: str) -> str:
    option = _OPTIONS[task]
    return (
        f"Cannot download the BLIP {_TASK_NAMES[task]} model {hub_id}: {cause}, and it is not "
        "in the Hugging Face cache. Without network access, supply it yourself: on a machine "
        f"with network run `hf download {hub_id} --local-dir blip-model`, copy that folder "
        f"here and pass {option} /path/to/blip-model, or point HF_HOME at a Hugging Face "
        "cache that already holds the model."
    )


def _first_line(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(". ")
    return text[:200] if text else type(e).__name__
