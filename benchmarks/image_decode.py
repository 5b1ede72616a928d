"""Image decoding throughput: clipsearch's ``load_image`` against a plain Pillow decode.

Generates N photo-like JPEGs (half 1920x1080, half 4000x3000: smooth colour fields, shapes
and sensor-like noise, quality 90, so they compress like camera photos), caches them in
``benchmarks/out/image_decode/``, then measures images/s for:

- baseline: ``Image.open(p).convert("RGB")`` (full decode) + bicubic resize of the
  shorter side to 224 (what open_clip's preprocessing does first);
- clipsearch: ``load_image(p, min_side=224)`` (JPEG draft mode, EXIF orientation,
  mode handling) + the same resize;
each on 1 thread and on a pool of ``--threads`` threads (Pillow releases the GIL while
decoding and resizing). Ratios are against the single-thread baseline of the same run.
Files are read once before timing so every variant reads from the page cache.

    python benchmarks/image_decode.py            # 200 images
    python benchmarks/image_decode.py --quick    # 20 images
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipsearch.media import load_image

SIZES = [(1920, 1080), (4000, 3000)]
TARGET = 224
DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "image_decode"


def photo_like(width: int, height: int, seed: int) -> Image.Image:
    """Smooth colour gradients + a few shapes + noise: compresses like a camera JPEG."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    base = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(base)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1 = x0 + int(rng.integers(width // 20, width // 3))
        y1 = y0 + int(rng.integers(height // 20, height // 3))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    pixels = np.asarray(base, dtype=np.int16)
    noise = rng.integers(-6, 7, pixels.shape[:2], dtype=np.int16)[..., None]  # (H, W, 1)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def make_corpus(n: int, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        width, height = SIZES[i % len(SIZES)]
        path = out / f"photo_{i:04d}_{width}x{height}.jpg"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            photo_like(width, height, seed=i).save(tmp, format="JPEG", quality=90)
            os.replace(tmp, path)
        paths.append(path)
    return paths


def resize_shorter(im: Image.Image, side: int = TARGET) -> Image.Image:
    w, h = im.size
    scale = side / min(w, h)
    return im.resize(
        (max(side, round(w * scale)), max(side, round(h * scale))), Image.Resampling.BICUBIC
    )


def baseline(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return resize_shorter(im.convert("RGB"))


def clipsearch_decode(path: Path) -> Image.Image:
    return resize_shorter(load_image(path, min_side=TARGET).image)


def rate(fn: Callable[[Path], Image.Image], paths: list[Path], threads: int) -> float:
    start = time.perf_counter()
    if threads == 1:
        results = [fn(p) for p in paths]
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = list(pool.map(fn, paths))
    elapsed = time.perf_counter() - start
    assert all(min(r.size) == TARGET for r in results)
    return len(paths) / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="number of images (default 200)")
    parser.add_argument("--quick", action="store_true", help="20 images")
    parser.add_argument("--threads", type=int, default=2, help="pool size (default 2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where images are cached")
    args = parser.parse_args(argv)
    n = 20 if args.quick else args.n

    t0 = time.perf_counter()
    paths = make_corpus(n, args.out)
    megabytes = sum(p.stat().st_size for p in paths) / 1e6
    print(
        f"{n} JPEGs ({megabytes:.0f} MB, {' + '.join(f'{w}x{h}' for w, h in SIZES)}) "
        f"ready in {time.perf_counter() - t0:.1f} s in {args.out}"
    )
    for p in paths:  # into the page cache, so no variant pays for the disk
        p.read_bytes()
    clipsearch_decode(paths[0])  # lazy plugin registration out of the timing

    rows = [
        ("baseline: open + convert + resize", baseline, 1),
        ("clipsearch load_image(min_side=224) + resize", clipsearch_decode, 1),
        ("baseline: open + convert + resize", baseline, args.threads),
        ("clipsearch load_image(min_side=224) + resize", clipsearch_decode, args.threads),
    ]
    reference = None
    print(f"\n{'variant':48} {'threads':>7} {'img/s':>8} {'x base':>7}")
    for name, fn, threads in rows:
        speed = rate(fn, paths, threads)
        reference = reference or speed
        print(f"{name:48} {threads:>7} {speed:>8.1f} {speed / reference:>7.2f}")
    print(f"\n(x base: against the 1-thread baseline of this run; {os.cpu_count()} CPUs visible)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
