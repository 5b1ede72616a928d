"""Embed an evaluation dataset once and cache the vectors on disk.

A cache entry is keyed by what determines its content:
- images: the media fingerprint (each file's path, size and mtime), the model
  fingerprint (+ precision), and the decode size;
- texts: the texts themselves and the model fingerprint;
- video frames: the media fingerprint, the model fingerprint and the frame sampler.
Entries are ``.npz`` files written atomically (temporary file + rename) under the cache
dir (default ``<library or ~/.cache/clipsearch>/eval-cache``). So comparing poolings or
rerankers on a dataset costs seconds after the first run: nothing is encoded again.

Media that cannot be decoded are recorded (index → reason) and left out; evaluation
continues on the rest. The library never prints: progress goes to a callback
``progress(stage, done, total)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipsearch.atomic import atomic_write
from clipsearch.errors import ClipsearchError, LibraryError, MediaError
from clipsearch.models.base import Encoder

if TYPE_CHECKING:
    from clipsearch.media.sampling import FrameSampler

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total)

CACHE_VERSION = 1


def default_cache_dir(library: str | Path | None = None) -> Path:
    """``<library>/eval-cache`` if a library is given, else ``~/.cache/clipsearch/eval-cache``
    (``$XDG_CACHE_HOME`` respected)."""
    if library is not None:
        return Path(library) / "eval-cache"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "clipsearch" / "eval-cache"


def media_fingerprint(paths: Sequence[str]) -> str:
    """sha256 over each file's (path, size, mtime_ns): changes when any file changes."""
    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()


def model_fingerprint(encoder: Encoder) -> str:
    """The encoder's fingerprint plus its precision when it has one (bf16 ≠ fp32 vectors)."""
    precision = getattr(encoder, "precision", None)
    return f"{encoder.fingerprint}|{precision}" if precision else str(encoder.fingerprint)


@dataclass(frozen=True)
class CacheStats:
    """How many entries a cache served and how many it had to compute (for tests, reports)."""

    hits: int
    misses: int


class EmbeddingCache:
    """``.npz`` files under ``root``, one per key. ``root=None`` disables caching."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.misses = 0

    @property
    def stats(self) -> CacheStats:
        return CacheStats(self.hits, self.misses)

    @staticmethod
    def key(kind: str, **parts: object) -> str:
        blob = json.dumps({"v": CACHE_VERSION, "kind": kind, **parts}, sort_keys=True)
        return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:24]}"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        if self.root is None:
            self.misses += 1
            return None
        path = self.root / f"{key}.npz"
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
            # absent, or a damaged entry (killed mid-write is impossible: writes are atomic)
            self.misses += 1
            return None
        self.hits += 1
        return arrays

    def save(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        if self.root is None:
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write(self.root / f"{key}.npz", lambda tmp: _write_npz(tmp, arrays))
        except OSError as e:
            raise LibraryError(f"cannot write the eval cache in {self.root}: {e}") from e


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:  # a file object: np.savez would add ".npz" to a bare name
        np.savez(f, **arrays)


@dataclass(frozen=True)
class ImageEmbeddings:
    """vectors: (N, D) float32, zero rows where ``ok`` is False. errors: index -> reason."""

    vectors: np.ndarray
    ok: np.ndarray
    errors: dict[int, str]


@dataclass(frozen=True)
class FrameEmbeddings:
    """Frame vectors of N videos, concatenated.

    frames: (F, D) float32; times: (F,) seconds; offsets: (N+1,) int64 — video i's frames
    are ``frames[offsets[i]:offsets[i+1]]`` (empty for a video that failed, ``ok[i]`` False).
    """

    frames: np.ndarray
    times: np.ndarray
    offsets: np.ndarray
    ok: np.ndarray
    errors: dict[int, str]

    def of(self, i: int) -> np.ndarray:
        return self.frames[self.offsets[i] : self.offsets[i + 1]]  # (F_i, D)

    def select(self, keep: Sequence[int]) -> FrameEmbeddings:
        """The frames of videos ``keep`` only, in that order (re-numbered 0..len(keep)-1)."""
        parts = [np.arange(self.offsets[i], self.offsets[i + 1]) for i in keep]
        rows = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        counts = np.asarray([len(p) for p in parts], dtype=np.int64)
        return FrameEmbeddings(
            frames=self.frames[rows],
            times=self.times[rows],
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            ok=self.ok[np.asarray(keep, dtype=np.int64)],
            errors={},
        )


def _errors_to_arrays(errors: dict[int, str]) -> dict[str, np.ndarray]:
    idx = np.asarray(sorted(errors), dtype=np.int64)
    return {"error_index": idx, "error_text": np.asarray([errors[i] for i in idx], dtype=str)}


def _errors_from_arrays(arrays: dict[str, np.ndarray]) -> dict[int, str]:
    return {
        int(i): str(t) for i, t in zip(arrays["error_index"], arrays["error_text"], strict=True)
    }


def embed_texts(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    cache: EmbeddingCache,
    batch_size: int = 256,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """(T, D) float32 L2-normalised text vectors, from the cache when it has them."""
    digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()
    key = cache.key("texts", texts=digest, n=len(texts), model=model_fingerprint(encoder))
    hit = cache.load(key)
    if hit is not None:
        return hit["vectors"]
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    for lo in range(0, len(texts), batch_size):
        chunk = list(texts[lo : lo + batch_size])
        out[lo : lo + len(chunk)] = encoder.encode_texts(chunk)
        if progress is not None:
            progress("texts", lo + len(chunk), len(texts))
    cache.save(key, {"vectors": out})
    return out


def embed_images(
    encoder: Encoder,
    paths: Sequence[str],
    *,
    cache: EmbeddingCache,
    batch_size: int = 64,
    workers: int = 2,
    min_side: int = 224,
    progress: ProgressCallback | None = None,
) -> ImageEmbeddings:
    """Decode (thread pool; Pillow releases the GIL) and encode images, cached.

    A file that fails to decode is recorded in ``errors`` and gets ``ok=False``.
    """
    from clipsearch.media.image import load_image

    key = cache.key(
        "images",
        media=media_fingerprint(paths),
        model=model_fingerprint(encoder),
        min_side=min_side,
    )
    hit = cache.load(key)
    if hit is not None:
        return ImageEmbeddings(hit["vectors"], hit["ok"], _errors_from_arrays(hit))

    def decode(path: str) -> np.ndarray | str:
        try:
            return encoder.preprocess(load_image(path, min_side=min_side).image)  # (3, H, W)
        except (MediaError, OSError, ValueError) as e:
            return str(e) or type(e).__name__

    vectors = np.zeros((len(paths), encoder.dim), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    errors: dict[int, str] = {}
    batches = [
        range(lo, min(lo + batch_size, len(paths))) for lo in range(0, len(paths), batch_size)
    ]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:

        def submit(b: range) -> list[Future]:
            return [pool.submit(decode, paths[i]) for i in b]

        pending = submit(batches[0]) if batches else []
        for bi, batch in enumerate(batches):
            current = pending
            if bi + 1 < len(batches):
                pending = submit(batches[bi + 1])  # decode the next batch while encoding this
            results = [f.result() for f in current]
            good = [i for i, r in zip(batch, results, strict=True) if not isinstance(r, str)]
            for i, r in zip(batch, results, strict=True):
                if isinstance(r, str):
                    errors[i] = r
            if good:
                pixels = np.stack([r for r in results if not isinstance(r, str)])  # (B, 3, H, W)
                vectors[good] = encoder.encode_pixels(pixels)
                ok[good] = True
            if progress is not None:
                progress("images", batch.stop, len(paths))
    cache.save(key, {"vectors": vectors, "ok": ok, **_errors_to_arrays(errors)})
    return ImageEmbeddings(vectors, ok, errors)


def embed_video_frames(
    encoder: Encoder,
    paths: Sequence[str],
    *,
    sampler: str = "uniform:12",
    cache: EmbeddingCache,
    batch_size: int = 64,
    workers: int = 2,
    progress: ProgressCallback | None = None,
) -> FrameEmbeddings:
    """Sample frames from each video (``clipsearch.media.video``), encode them, cache.

    sampler: a FrameSampler spec ("uniform:12" is CLIP4Clip's protocol). A video that
    fails to decode or yields no frame is recorded in ``errors`` and has no frames.
    Videos are decoded on ``workers`` threads a few ahead of the encoder, and their frames
    encoded in batches of at least ``batch_size`` frames.
    """
    from clipsearch.media.sampling import FrameSampler

    frame_sampler = FrameSampler.parse(sampler)
    key = cache.key(
        "frames", media=media_fingerprint(paths), model=model_fingerprint(encoder), sampler=sampler
    )
    hit = cache.load(key)
    if hit is not None:
        return FrameEmbeddings(
            hit["frames"], hit["times"], hit["offsets"], hit["ok"], _errors_from_arrays(hit)
        )

    per_video: list[np.ndarray] = [np.zeros((0, encoder.dim), np.float32)] * len(paths)
    per_times: list[np.ndarray] = [np.zeros(0, np.float64)] * len(paths)
    ok = np.zeros(len(paths), dtype=bool)
    errors: dict[int, str] = {}
    batcher = _FrameBatcher(encoder, per_video, batch_size=batch_size)
    decoded = _decode_in_order(
        paths, lambda path: _sample_video(encoder, path, frame_sampler), workers=workers
    )
    for i, result in decoded:
        if isinstance(result, str):
            errors[i] = result
        else:
            pixels, per_times[i] = result
            ok[i] = True
            batcher.add(i, pixels)
        if progress is not None:
            progress("videos", i + 1, len(paths))
    batcher.flush()
    counts = np.asarray([len(v) for v in per_video], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    frames = (
        np.concatenate(per_video).astype(np.float32)
        if len(paths)
        else np.zeros((0, encoder.dim), np.float32)
    )
    times = np.concatenate(per_times) if len(paths) else np.zeros(0)
    arrays = {"frames": frames, "times": times, "offsets": offsets, "ok": ok}
    cache.save(key, {**arrays, **_errors_to_arrays(errors)})
    return FrameEmbeddings(frames, times, offsets, ok, errors)


SampledVideo = tuple[np.ndarray, np.ndarray]  # pixels (F, 3, H, W), frame times (F,) s


def _sample_video(encoder: Encoder, path: str, sampler: FrameSampler) -> SampledVideo | str:
    """The preprocessed sampled frames of one video and their times, or why it failed."""
    from clipsearch.media.video import decode_frames

    try:
        frames = decode_frames(path, sampler).frames
        if not frames:
            return "no frame decoded"
        pixels = np.stack([encoder.preprocess(f.image) for f in frames])  # (F, 3, H, W)
        return pixels, np.asarray([f.t for f in frames], dtype=np.float64)
    except (MediaError, OSError, ValueError) as e:
        return str(e) or type(e).__name__
    except ClipsearchError as e:  # e.g. a frame/size cap
        return str(e)


def _decode_in_order(
    paths: Sequence[str], decode: Callable[[str], SampledVideo | str], *, workers: int
) -> Iterator[tuple[int, SampledVideo | str]]:
    """``(i, decode(paths[i]))`` in order, decoded on a thread pool with a bounded
    look-ahead (decoded frames wait in memory for the encoder)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        window = max(2, 2 * workers)
        futures: dict[int, Future] = {}
        for i in range(min(window, len(paths))):
            futures[i] = pool.submit(decode, paths[i])
        for i in range(len(paths)):
            result = futures.pop(i).result()
            if i + window < len(paths):
                futures[i + window] = pool.submit(decode, paths[i + window])
            yield i, result


class _FrameBatcher:
    """Collects decoded videos and encodes their frames together once a batch is full,
    writing each video's (F_i, D) vectors into ``out[i]``."""

    def __init__(self, encoder: Encoder, out: list[np.ndarray], *, batch_size: int) -> None:
        self.encoder, self.out, self.batch_size = encoder, out, batch_size
        self.queue: list[tuple[int, np.ndarray]] = []  # (video index, pixels) waiting

    def add(self, i: int, pixels: np.ndarray) -> None:
        self.queue.append((i, pixels))
        if sum(len(p) for _, p in self.queue) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.queue:
            return
        pixels = np.concatenate([p for _, p in self.queue])  # (ΣF, 3, H, W)
        vecs = self.encoder.encode_pixels(pixels)
        lo = 0
        for i, p in self.queue:
            self.out[i] = vecs[lo : lo + len(p)]
            lo += len(p)
        self.queue.clear()
