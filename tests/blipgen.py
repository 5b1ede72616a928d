"""Tiny random BLIP models for tests, built offline from a `BlipConfig` and a word-level vocab.

`save_tiny_blip(folder, kind)` writes a folder `transformers` loads with ``from_pretrained``
(config, safetensors weights, a BERT WordPiece tokenizer made from the word list here,
and a BLIP image processor): the same layout as a Hugging Face Hub snapshot, so the real
loading path is exercised. Weights are random with a fixed seed; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

WORDS = [
    "a",
    "photo",
    "of",
    "the",
    "red",
    "green",
    "blue",
    "yellow",
    "dog",
    "cat",
    "car",
    "beach",
    "tree",
    "house",
    "on",
    "in",
    "with",
    "and",
    "sky",
    "sea",
    "road",
    "picture",
    "small",
    "big",
    "two",
    "people",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
IMAGE_SIZE = 32


def tiny_config():
    """A `BlipConfig` with 2-layer, 32-wide towers over 32x32 images in 8x8 patches."""
    from transformers import BlipConfig

    vocab = SPECIAL + WORDS
    text = {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "encoder_hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 64,
        "pad_token_id": vocab.index("[PAD]"),
        "bos_token_id": vocab.index("[DEC]"),
        "sep_token_id": vocab.index("[SEP]"),
        "eos_token_id": vocab.index("[SEP]"),
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": IMAGE_SIZE,
        "patch_size": 8,
        "initializer_range": 0.02,  # the default (1e-10) gives every image the same states
    }
    return BlipConfig(
        text_config=text, vision_config=vision, projection_dim=16, image_text_hidden_size=16
    )


def tiny_processor(folder: Path):
    """A BLIP processor: BERT WordPiece tokenizer over `WORDS` + a 32x32 image processor."""
    from transformers import BertTokenizerFast, BlipImageProcessor, BlipProcessor

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    tokenizer = BertTokenizerFast(
        vocab=vocab, do_lower_case=True, bos_token="[DEC]", model_max_length=32
    )
    images = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return BlipProcessor(image_processor=images, tokenizer=tokenizer)


def save_tiny_blip(folder: Path, kind: str = "itm", *, seed: int = 0) -> Path:
    """Write a tiny random BLIP ``kind`` ("itm" retrieval or "caption" generation) to
    ``folder`` in Hugging Face layout; returns the folder."""
    import torch
    from transformers import BlipForConditionalGeneration, BlipForImageTextRetrieval

    torch.manual_seed(seed)
    cls = BlipForImageTextRetrieval if kind == "itm" else BlipForConditionalGeneration
    model = cls(tiny_config()).eval()
    folder = Path(folder)
    model.save_pretrained(folder)
    tiny_processor(folder).save_pretrained(folder)
    return folder


class ColourCaptioner:
    """A deterministic stand-in for `clipsearch.models.blip.Captioner`: "a photo of
    something <colour>", the palette colour nearest the image's mean (tests/fakes.py), so
    caption search can be asserted on meaning."""

    name = "fake:colour-captioner"
    image_size = 32

    def __init__(self) -> None:
        self.captioned = 0

    def caption(self, images, **kwargs) -> list[str]:
        import numpy as np

        from tests.videogen import nearest_colour

        self.captioned += len(images)
        return [
            f"a photo of something {nearest_colour(np.asarray(im.convert('RGB')).reshape(-1, 3).mean(0))}"
            for im in images
        ]


class ColourMatcher:
    """A deterministic stand-in for `ImageTextMatcher`: P(match) 0.9 when the text names
    the palette colour nearest the image's mean, else 0.1 (a perfect cross-encoder for
    colour captions, so re-ranking can be asserted on meaning)."""

    name = "fake:colour-itm"
    precision = "fp32"
    image_size = 32

    def __init__(self) -> None:
        self.pairs = 0
        self.seen: list[tuple[str, object, str]] = []  # (text, key, colour the image shows)

    def cached_keys(self, keys):
        return set()

    def score(self, text, images, *, keys=None):
        return self.score_pairs([text] * len(images), images, keys=keys)

    def score_pairs(self, texts, images, *, keys=None):
        import re

        import numpy as np

        from clipsearch.models.blip import ItmScores
        from tests.videogen import nearest_colour

        self.pairs += len(texts)
        p = []
        for i, (text, im) in enumerate(zip(texts, images, strict=True)):
            colour = nearest_colour(np.asarray(im.convert("RGB")).reshape(-1, 3).mean(0))
            self.seen.append((text, None if keys is None else keys[i], colour))
            p.append(0.9 if re.search(rf"\b{colour}\b", text.lower()) else 0.1)
        p = np.array(p)
        return ItmScores(
            np.stack([np.zeros_like(p), np.log(p / (1 - p))], axis=1).astype(np.float32)
        )
