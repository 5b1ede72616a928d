"""Indexing with text reading (``index --ocr``) against indexing without, in the same run.

    python benchmarks/ocr_index.py            # 96 photos, a quarter with text
    python benchmarks/ocr_index.py --quick    # 32 photos

The folder: photo-like JPEGs (benchmarks/photos.py; half 1920x1080, half 4000x3000), a
quarter of them with a sign of rendered words on them (text 3–6 % of the picture's
height), the rest without text. Model: open_clip ViT-B-32 with random weights at the
machine's precision (as benchmarks/index_throughput.py). Each configuration indexes the
folder into a fresh library, alternating, best of ``--repeat`` runs:

- baseline: ``index`` (decode in draft mode + encode + store);
- ocr: ``index --ocr`` (decode large enough to read, detect text on a reduced copy,
  recognise only where text was found, encode, store text and vectors).

Target: ocr ≤ 2× the baseline's time. Also printed: the reader alone on the decoded
pictures, split into pictures with and without text (what detection-first saves), and
how many signs were read.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from index_throughput import checkpoint
from photos import make_photo

OUT = Path(__file__).parent / "out"
SIGNS = ["FRESH BREAD", "PHARMACY", "HAPPY BIRTHDAY ANNA", "PLATFORM 9", "NO PARKING", "SALE 50%"]


def photo_folder(n: int) -> tuple[Path, list[tuple[Path, str | None]]]:
    """``n`` photos, every fourth with a sign; cached between runs."""
    folder = OUT / f"ocr-photos-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        size = [(1920, 1080), (4000, 3000)][i % 2]
        text = SIGNS[(i // 4) % len(SIGNS)] if i % 4 == 3 else None
        path = folder / f"photo_{i:04d}{'_text' if text else ''}.jpg"
        if not path.exists():
            make_photo(path, size, seed=1000 + i)
            if text:
                add_sign(path, text, np.random.default_rng(i))
        out.append((path, text))
    return folder, out


def add_sign(path: Path, text: str, rng: np.random.Generator) -> None:
    img = Image.open(path).convert("RGB")
    w, h = img.size
    font = ImageFont.load_default(size=int(h * rng.uniform(0.03, 0.06)))
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = font.size // 2
    x = int(rng.uniform(0.05, 0.9) * (w - (right - left) - 2 * pad))
    y = int(rng.uniform(0.05, 0.9) * (h - (bottom - top) - 2 * pad))
    draw.rectangle(
        (x, y, x + right - left + 2 * pad, y + bottom - top + 2 * pad), fill=(240, 236, 220)
    )
    draw.text((x + pad - left, y + pad - top), text, font=font, fill=(30, 30, 30))
    img.save(path, quality=90)


def index_once(
    folder: Path, ckpt: Path, precision: str, ocr: bool, tmp: Path
) -> tuple[float, object]:
    from clipsearch import Library
    from clipsearch.ingest import IndexOptions

    lib = Library(tmp / f"lib-{time.monotonic_ns()}", model=str(ckpt), precision=precision)
    lib.encoder  # noqa: B018 - load the model outside the timing, in both configurations
    if ocr:
        from clipsearch.models.ocr import text_reader

        text_reader()  # likewise the reader's three sessions
    t0 = time.perf_counter()
    lib.index([folder], options=IndexOptions(ocr=ocr))
    took = time.perf_counter() - t0
    return took, lib


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args(argv)
    n = 32 if args.quick else args.n

    from clipsearch.ingest.reading import DECODE_SIDE
    from clipsearch.media import load_image
    from clipsearch.models.ocr import text_reader
    from clipsearch.store.texts import squash

    folder, photos = photo_folder(n)
    ckpt = checkpoint()
    n_text = sum(1 for _, t in photos if t)
    print(f"{n} photos (half 1920x1080, half 4000x3000), {n_text} with a sign; ViT-B-32 random")
    times: dict[str, list[float]] = {"baseline": [], "ocr": []}
    read_ok = 0
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for name in ("baseline", "ocr"):
                took, lib = index_once(folder, ckpt, args.precision, name == "ocr", Path(tmp))
                times[name].append(took)
                if name == "ocr":
                    by_path = {r.path: r.id for r in lib.catalog.items(range(1, n + 10)).values()}
                    read_ok = sum(
                        1
                        for p, t in photos
                        if t
                        and any(
                            squash(t) in squash(x)
                            for _, _, x in lib.catalog.texts.texts(by_path[str(p.absolute())])
                        )
                    )
                precision = lib.encoder.precision
                lib.close()
    # The reader alone, one thread, on the pictures as the indexer decodes them.
    reader = text_reader()
    per: dict[bool, list[float]] = {True: [], False: []}
    for path, text in photos:
        image = load_image(path, min_side=DECODE_SIDE).image
        t0 = time.perf_counter()
        reader.read(image)
        per[text is not None].append(time.perf_counter() - t0)
    base, ocr = min(times["baseline"]), min(times["ocr"])
    print()
    print(f"| {'configuration':<44} | {'s':>6} | {'img/s':>6} | {'vs baseline':>11} |")
    print(f"|{'-' * 46}|{'-' * 8}|{'-' * 8}|{'-' * 13}|")
    for label, t in ((f"baseline: index ({precision})", base), ("index --ocr", ocr)):
        print(f"| {label:<44} | {t:6.2f} | {n / t:6.1f} | {t / base:10.2f}x |")
    print()
    print(f"index --ocr / index: {ocr / base:.2f}x (target <= 2.00x); runs: {times}")
    print(
        f"reader alone, one thread: {1000 * np.mean(per[False]):.0f} ms per photo without text, "
        f"{1000 * np.mean(per[True]):.0f} ms with text; signs read: {read_ok}/{n_text}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
