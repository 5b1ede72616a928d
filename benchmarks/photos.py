"""Photo-like JPEGs for benchmarks: smooth gradients + blobs + sensor noise, so they
compress (and decode) like camera photos rather than flat colour. Deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_photo(path: Path, size: tuple[int, int], seed: int, quality: int = 90) -> Path:
    w, h = size
    rng = np.random.default_rng(seed)
    # Build at 1/8 scale and upsample: cheap, and gives photo-like low-frequency content.
    sw, sh = max(w // 8, 8), max(h // 8, 8)
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    base = np.zeros((sh, sw, 3), np.float32)
    for c in range(3):
        a, b, ph = [*rng.uniform(0.002, 0.05, 2).tolist(), rng.uniform(0, 6.28)]
        base[..., c] = 128 + 90 * np.sin(a * xx * 8 / 8 + b * yy + ph)
    for _ in range(12):
        cx, cy, r = rng.uniform(0, sw), rng.uniform(0, sh), rng.uniform(sw / 20, sw / 4)
        col = rng.uniform(0, 255, 3)
        mask = np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)))[..., None]
        base = base * (1 - mask) + col * mask
    small = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    img = small.resize((w, h), Image.BILINEAR)
    arr = np.asarray(img).astype(np.int16)
    arr += rng.integers(-12, 13, size=arr.shape, dtype=np.int16)  # sensor noise
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=quality)
    return path


def photo_set(folder: Path, n: int, sizes: list[tuple[int, int]], *, seed: int = 0) -> list[Path]:
    """``n`` photos alternating over ``sizes``; cached: existing files are kept."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        size = sizes[i % len(sizes)]
        p = folder / f"photo_{i:05d}_{size[0]}x{size[1]}.jpg"
        if not p.exists():
            make_photo(p, size, seed + i)
        out.append(p)
    return out
