"""Fusing the model's ranking with the text read in pictures: which fusion, which weight.

    python benchmarks/ocr_fusion.py            # 24 words, 13 colours: ~190 images
    python benchmarks/ocr_fusion.py --quick    # 8 words: ~70 images

A synthetic library where the two signals are each half the answer. Every image has a
background of one palette colour, which the deterministic ColourEncoder (tests/fakes.py)
sees, and most carry a sign with rendered words (Pillow's bundled FreeType font, several
sizes and places), which only the OCR reader (real PP-OCRv4, `clipsearch index --ocr`)
can see — the colour encoder cannot read. Images:

- two signs per word, on two different colours (a word query has two right answers);
- signs whose words are glued ("FRESHSTRAWBERRIES", "HAPPY BIRTHDAYANNA");
- signs naming a colour ("RED") on a background of another colour, and plain images
  without text: distractors for colour queries.

Queries and what is relevant:

- word:          "a sign saying pizza"           -> the images whose sign says PIZZA
- colour + word: "a red picture that says pizza" -> the one red PIZZA image
- glued:         "strawberries", "birthday anna" -> the images with the glued text
- colour:        "a red picture"                 -> every red-background image; signs
                 saying RED on other colours are the trap (text match must not win)

Methods: the model alone; the text match alone (coverage, then the model); reciprocal
rank fusion (k = 60); the calibrated sum c + λ·σ·m for several λ (search/textmatch.py).
Reported per query set: R@1 (a relevant item first) and nDCG@10. The model here is a
stand-in that sees colour only, so the table measures how each fusion combines a visual
and a textual signal, not a real CLIP's own reading of text. Two stand-ins, because the
balance between the signals depends on the model's score distribution:

- "layout-sensitive": the ColourEncoder as the tests use it; a sign changes the picture's
  layout signature, so a red picture with a sign scores far below a plain red one;
- "colour-only": the same with its layout part scaled down (CONTENT_GAIN 0.5), so a
  picture scores by its share of the colour, as a CLIP that looks past a small sign.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clipsearch import Library  # noqa: E402
from clipsearch.ingest import IndexOptions  # noqa: E402
from clipsearch.search.compose import encode_plan  # noqa: E402
from clipsearch.search.engine import SearchOptions  # noqa: E402
from clipsearch.search.textmatch import TextFusion  # noqa: E402
from clipsearch.store.texts import squash  # noqa: E402
from tests.fakes import PALETTE, ColourEncoder  # noqa: E402

WORDS = (  # noqa: SIM905
    "PIZZA BAKERY COFFEE HOTEL PHARMACY CINEMA MUSEUM GARAGE FLOWERS LIBRARY STATION MARKET "
    "BOOKS TAXI SUSHI DENTIST WEDDING SALE PARKING TICKETS BURGER BICYCLES POTTERY JEWELLERY"
).split()
GLUED = [
    ("FRESHSTRAWBERRIES", "strawberries"),
    ("HAPPY BIRTHDAYANNA", "birthday anna"),
    ("ICECREAMPARLOUR", "ice cream parlour"),
    ("SECONDHANDBOOKS", "second hand books"),
]
COLOURS = [c for c in PALETTE if c not in ("white", "black", "gray")]  # signs are white/black


class ColourOnlyEncoder(ColourEncoder):
    """The ColourEncoder with its layout signature scaled down: colour shares dominate."""

    CONTENT_GAIN = 0.5
    fingerprint = "fake-colour-only-32d-v1"


def sign_image(path: Path, colour: str, text: str | None, rng: np.random.Generator) -> None:
    """A 480x360 picture of one background colour, with a sign carrying ``text``."""
    w, h = 480, 360
    img = Image.new("RGB", (w, h), PALETTE[colour])
    if text:
        size = int(rng.choice([30, 38, 46]))
        font = ImageFont.load_default(size=size)
        draw = ImageDraw.Draw(img)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 24, bottom - top + 24
        x = int(rng.integers(5, max(6, w - tw - 5)))
        y = int(rng.integers(5, max(6, h - th - 5)))
        dark = bool(rng.integers(0, 2))
        draw.rectangle((x, y, x + tw, y + th), fill=(20, 20, 20) if dark else (245, 245, 245))
        fill = (245, 245, 245) if dark else (20, 20, 20)
        draw.text((x + 12 - left, y + 12 - top), text, font=font, fill=fill)
    img.save(path, quality=92)


def build(folder: Path, words: list[str], seed: int = 0) -> dict[str, tuple[str, str | None]]:
    """Write the images; returns file name -> (background colour, sign text or None)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    spec: dict[str, tuple[str, str | None]] = {}
    n = 0

    def add(colour: str, text: str | None) -> None:
        nonlocal n
        name = f"img{n:04d}.jpg"
        sign_image(folder / name, colour, text, rng)
        spec[name] = (colour, text)
        n += 1

    for i, word in enumerate(words):
        add(COLOURS[i % len(COLOURS)], word)
        add(COLOURS[(i + 3) % len(COLOURS)], word)
    for i, (text, _) in enumerate(GLUED):
        add(COLOURS[(i + 5) % len(COLOURS)], text)
    for i, colour in enumerate(COLOURS):
        add(colour, None)
        add(colour, None)
        add(COLOURS[(i + 1) % len(COLOURS)], colour.upper())  # "RED" on another colour
    return spec


def query_sets(spec: dict[str, tuple[str, str | None]], words: list[str]):
    """{set name: [(query, set of relevant file names)]}."""

    def with_word(word: str) -> set[str]:
        return {f for f, (_, t) in spec.items() if t and squash(word) in squash(t)}

    sets: dict[str, list[tuple[str, set[str]]]] = {"word": [], "colour + word": [], "glued": []}
    for word in words:
        sets["word"].append((f"a sign saying {word.lower()}", with_word(word)))
        for f in sorted(with_word(word)):
            colour = spec[f][0]
            sets["colour + word"].append((f"a {colour} picture that says {word.lower()}", {f}))
    for text, query in GLUED:
        sets["glued"].append((query, {f for f, (_, t) in spec.items() if t == text}))
    sets["colour"] = [
        (f"a {c} picture", {f for f, (bg, _) in spec.items() if bg == c}) for c in COLOURS
    ]
    return sets


def ndcg10(ranked: list[str], relevant: set[str]) -> float:
    gains = [1.0 / np.log2(r + 2) for r, f in enumerate(ranked[:10]) if f in relevant]
    ideal = sum(1.0 / np.log2(r + 2) for r in range(min(10, len(relevant))))
    return sum(gains) / ideal


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    words = WORDS[:8] if args.quick else WORDS
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "media"
        spec = build(folder, words)
        for label, encoder in (
            ("layout-sensitive", ColourEncoder()),
            ("colour-only", ColourOnlyEncoder()),
        ):
            sets, rows = measure(Path(tmp) / label, folder, spec, words, encoder)
            head = ["method", *(f"{s} ({len(q)} q)" for s, q in sets.items())]
            print()
            print(f"R@1 (%) / nDCG@10 per query set, {label} stand-in model")
            print("| " + " | ".join(head) + " |")
            print("|" + "|".join("---" for _ in head) + "|")
            for row in rows:
                print("| " + " | ".join(row) + " |")
    return 0


def measure(tmp: Path, folder: Path, spec, words, encoder):
    """Index ``folder`` with OCR into a library at ``tmp``; the table rows per method."""
    lib = Library(tmp / "lib", encoder=encoder)
    t0 = time.perf_counter()
    lib.index([folder], options=IndexOptions(ocr=True))
    took = time.perf_counter() - t0
    by_name = {Path(r.path).name: r.id for r in lib.catalog.items(range(1, 10_000)).values()}
    name_of = {v: k for k, v in by_name.items()}
    signs = [(f, t) for f, (_, t) in spec.items() if t]
    read = sum(
        1
        for f, t in signs
        if any(squash(t) in squash(x) for _, _, x in lib.catalog.texts.texts(by_name[f]))
    )
    print(
        f"{len(spec)} images ({len(signs)} with a sign), indexed with OCR in {took:.1f} s; "
        f"sign text read exactly (squashed) in {read}/{len(signs)}"
    )
    methods: dict[str, TextFusion | None] = {
        "model only": None,
        "text first (λ=1000)": TextFusion(lib.catalog.texts, method="sum", weight=1000.0),
        "rrf (k=60)": TextFusion(lib.catalog.texts, method="rrf"),
        **{
            f"sum λ={w:g}": TextFusion(lib.catalog.texts, method="sum", weight=w)
            for w in (1, 2, 3, 4, 5)
        },
    }
    sets = query_sets(spec, words)
    searcher = lib.searcher()
    rows = []
    for method, rescorer in methods.items():
        row = [method]
        for queries in sets.values():
            r1, nd = [], []
            for text, relevant in queries:
                plan = lib.plan(text)
                q = encode_plan(plan, lib.encoder)
                hits = searcher.search(q, SearchOptions(k=10), rescorer=rescorer, plan=plan)
                ranked = [name_of[h.item_id] for h in hits]
                r1.append(float(bool(ranked) and ranked[0] in relevant))
                nd.append(ndcg10(ranked, relevant))
            row.append(f"{100 * np.mean(r1):5.1f} / {np.mean(nd):.3f}")
        rows.append(row)
    lib.close()
    return sets, rows


if __name__ == "__main__":
    raise SystemExit(main())
