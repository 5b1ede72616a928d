"""Turn :class:`~clipsearch.train.data.PairData` into model-ready batches.

Each epoch visits every training media once, in an order drawn from
``default_rng([seed, epoch])``, paired with one of its captions drawn from the same
generator. One caption per media per epoch keeps two captions of the same picture out
of one batch (they would be false negatives for the contrastive loss), and makes the
data order a pure function of (seed, epoch): a resumed run sees the same batches.

Decoding runs in a thread pool (Pillow and PyAV release the GIL) one batch ahead of
the model. A media that fails to decode is skipped, counted once, and left out of later
epochs; its batch just gets smaller. Augmentation (off by default) is a random resized
crop (scale 0.8–1, aspect 3/4–4/3) drawn from ``default_rng([seed, epoch, media])``,
so it is reproducible whatever the thread scheduling.

Videos: frames sampled by ``clipsearch.media.video.decode_frames`` with a
``FrameSampler`` spec (``uniform:12`` by default, CLIP4Clip); a video with fewer frames
than asked is padded by repeating its frames in order, so every video is (F, 3, H, W).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from clipsearch.errors import MediaError
from clipsearch.train.data import MediaSource, PairData, TarMember

Preprocess = Callable[[Image.Image], np.ndarray]
"""One RGB PIL image -> (3, H, W) float32 (the encoder's own preprocessing)."""


@dataclass
class Batch:
    """One training batch.

    pixels: (B, 3, H, W) float32, or (B, F, 3, H, W) for videos.
    tokens: (B, L) int64 caption tokens; row i describes pixels[i].
    media: (B,) media indices into the PairData.
    index: position of the batch in its epoch's plan (0-based; stable under failures).
    """

    pixels: Tensor
    tokens: Tensor
    media: np.ndarray
    index: int = 0

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def count_truncated(tokenizer, captions: list[str], context_length: int) -> int:
    """How many captions are longer than the text encoder's context (and get truncated).

    Tokenises with one extra position: a caption fills it (with a non-pad token) exactly
    when it needs more than ``context_length`` tokens including start/end tokens.
    """
    if not captions:
        return 0
    pad = tokenizer([""], context_length=context_length + 1)[0, -1]
    n = 0
    for lo in range(0, len(captions), 1024):
        tokens = tokenizer(captions[lo : lo + 1024], context_length=context_length + 1)
        n += int((tokens[:, -1] != pad).sum())
    return n


def random_resized_crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Crop a random box of 80–100 % of the area with aspect 3/4–4/3 (Inception-style, mild)."""
    w, h = image.size
    for _ in range(10):
        area = w * h * rng.uniform(0.8, 1.0)
        ratio = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        cw, ch = round((area * ratio) ** 0.5), round((area / ratio) ** 0.5)
        if 0 < cw <= w and 0 < ch <= h:
            x = int(rng.integers(0, w - cw + 1))
            y = int(rng.integers(0, h - ch + 1))
            return image.crop((x, y, x + cw, y + ch))
    return image


class PairLoader:
    """Decodes and batches pairs; see the module docstring for order and failure rules.

    Args:
        data: the pairs.
        preprocess: the encoder's ``preprocess`` (PIL -> (3, H, W) float32).
        tokenizer: open_clip tokenizer (list of str -> (B, L) int64 tensor).
        image_size: the encoder's input side (decoders may reduce images down to it).
        batch_size: pairs per batch (the logical contrastive batch).
        seed: base of every random draw.
        workers: decode threads.
        augment: random resized crops for training.
        frames: FrameSampler spec for videos (e.g. ``uniform:12``).
    """

    def __init__(
        self,
        data: PairData,
        *,
        preprocess: Preprocess,
        tokenizer,
        image_size: int,
        batch_size: int,
        seed: int,
        workers: int = 2,
        augment: bool = False,
        frames: str = "uniform:12",
    ) -> None:
        self.data = data
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.batch_size = batch_size
        self.seed = seed
        self.workers = max(1, workers)
        self.augment = augment
        self.frames = frames
        self.failed: dict[int, str] = {}  # media index -> reason, counted once
        self._lock = threading.Lock()
        order = np.argsort(data.caption_media, kind="stable")
        self._captions_of = np.split(order, np.cumsum(np.bincount(data.caption_media))[:-1])
        self._n_frames = _frame_count(frames) if data.kind == "video" else 0

    # -- epoch order ---------------------------------------------------------------------
    def epoch_plan(self, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(media indices, caption indices)] per batch for ``epoch`` (before failures)."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.data.n_media)
        picks = rng.random(self.data.n_media)
        captions = np.array(
            [
                self._captions_of[m][int(p * len(self._captions_of[m]))]
                for m, p in zip(order, picks, strict=True)
            ],
            dtype=np.int64,
        )
        plan = []
        for lo in range(0, len(order), self.batch_size):
            media, caps = order[lo : lo + self.batch_size], captions[lo : lo + self.batch_size]
            if len(media) >= 2:  # a contrastive batch needs negatives
                plan.append((media, caps))
        return plan

    def num_batches(self, epoch: int = 0) -> int:
        return len(self.epoch_plan(epoch))

    def epoch_batches(self, epoch: int) -> Iterator[Batch]:
        """Batches of ``epoch`` with decoding one batch ahead; failed media are dropped."""
        plan = self.epoch_plan(epoch)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="clipsearch-decode") as pool:
            pending = self._submit(pool, plan[0], epoch) if plan else None
            for i in range(len(plan)):
                current = pending
                pending = self._submit(pool, plan[i + 1], epoch) if i + 1 < len(plan) else None
                batch = self._collect(plan[i], current, index=i)
                if batch is not None:
                    yield batch

    # -- evaluation ----------------------------------------------------------------------
    def media_batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, Tensor]]:
        """All media in index order, without augmentation: (media indices, pixels)."""
        n = self.data.n_media
        with ThreadPoolExecutor(self.workers, thread_name_prefix="clipsearch-decode") as pool:
            for lo in range(0, n, batch_size):
                idx = np.arange(lo, min(n, lo + batch_size))
                futures = [pool.submit(self._load, int(m), None) for m in idx]
                keep, pixels = [], []
                for m, fut in zip(idx, futures, strict=True):
                    arr = fut.result()
                    if arr is not None:
                        keep.append(m)
                        pixels.append(arr)
                if keep:
                    yield np.asarray(keep, dtype=np.int64), torch.from_numpy(np.stack(pixels))

    # -- internals -----------------------------------------------------------------------
    def _submit(self, pool: ThreadPoolExecutor, step, epoch: int) -> list[Future]:
        media, _ = step
        return [pool.submit(self._load, int(m), epoch if self.augment else None) for m in media]

    def _collect(self, step, futures: list[Future], *, index: int) -> Batch | None:
        media, caps = step
        keep, pixels = [], []
        for j, fut in enumerate(futures):
            arr = fut.result()
            if arr is not None:
                keep.append(j)
                pixels.append(arr)
        if len(keep) < 2:
            return None
        texts = [self.data.captions[int(caps[j])] for j in keep]
        return Batch(
            pixels=torch.from_numpy(np.stack(pixels)),
            tokens=self.tokenizer(texts),
            media=media[keep],
            index=index,
        )

    def _load(self, m: int, augment_epoch: int | None) -> np.ndarray | None:
        """Decode + preprocess media ``m``: (3, H, W) or (F, 3, H, W); None if it fails."""
        if m in self.failed:
            return None
        source = self.data.media[m]
        rng = (
            np.random.default_rng([self.seed, augment_epoch, m])
            if augment_epoch is not None
            else None
        )
        try:
            if self.data.kind == "video":
                images = self._video_frames(source)
            else:
                images = [self._image(source)]
            if rng is not None:
                images = [random_resized_crop(im, rng) for im in images]
            arrays = [self.preprocess(im) for im in images]
        except (MediaError, OSError, ValueError) as e:
            with self._lock:
                self.failed.setdefault(m, f"{source}: {e}")
            return None
        return arrays[0] if self.data.kind == "image" else np.stack(arrays)

    def _image(self, source: MediaSource) -> Image.Image:
        from clipsearch.media.image import load_image

        raw = source.read() if isinstance(source, TarMember) else source
        return load_image(raw, min_side=self.image_size).image

    def _video_frames(self, source: MediaSource) -> list[Image.Image]:
        from clipsearch.media.video import decode_frames

        decoded = decode_frames(str(source), self.frames, max_side=max(self.image_size * 2, 64))
        images = [f.image for f in decoded.frames]
        if not images:
            raise ValueError("no frame could be decoded")
        if len(images) < self._n_frames:
            # Repeat frames in order (0,0,1,1,2,...) up to F: meanP over the padded set keeps
            # the real frames' weights as equal as possible.
            idx = np.floor(np.arange(self._n_frames) * len(images) / self._n_frames).astype(int)
            images = [images[i] for i in idx]
        return images[: self._n_frames]


def _frame_count(spec: str) -> int:
    """F for a fixed-count sampler (``uniform:N``); 0 when the count varies (``fps:R``)."""
    kind, _, arg = spec.partition(":")
    if kind == "uniform" and arg.isdigit():
        return int(arg)
    return 0
