"""What the relevance cut, near-duplicate folding and date order cost per query.

    python benchmarks/search_arrange.py            # 50,000 items of 512-d vectors
    python benchmarks/search_arrange.py --quick    # 10,000 items

A library of N random unit vectors (512-d, like ViT-B-32) written straight into a
catalog, with capture times; queries are random unit vectors given to `Library.search`
(no model). Baseline, measured in the same run: a plain search (``min_score="none"``,
k=20). Each row is p50 / p95 over the queries and the p50 ratio to the baseline.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clipsearch.library import Library  # noqa: E402
from clipsearch.media.capture_time import CaptureTime  # noqa: E402
from clipsearch.models.base import l2_normalize  # noqa: E402
from clipsearch.store import ItemWrite, ModelBinding  # noqa: E402
from tests.fakes import ColourEncoder  # noqa: E402

DIM = 512


class Wide(ColourEncoder):
    """Only its identity is used: the queries are ready vectors."""

    dim = DIM
    spec = "bench:512"
    fingerprint = "bench-512"


def build(path: Path, n: int) -> Library:
    enc = Wide()
    lib = Library(path, encoder=enc)
    lib.catalog.bind_model(ModelBinding(enc.spec, enc.fingerprint, enc.dim))
    rng = np.random.default_rng(0)
    for lo in range(0, n, 5000):
        hi = min(lo + 5000, n)
        vecs = l2_normalize(rng.standard_normal((hi - lo, DIM)))
        # every 20th item gets a near-copy (cos ≈ 0.97) next to it: something to fold
        copies = np.flatnonzero(np.arange(lo, hi) % 20 == 1)
        noise = rng.standard_normal((len(copies), DIM)) / np.sqrt(DIM)
        vecs[copies] = l2_normalize(vecs[copies - 1] + 0.25 * noise)
        lib.catalog.write_items(
            [
                ItemWrite(
                    f"/bench/{i:07d}.jpg",
                    None,
                    "image",
                    1000,
                    0,
                    None,
                    "ok",
                    vectors=vecs[i - lo][None],
                    taken=CaptureTime(int(1.4e18 + i * 6e13), None, "exif"),
                )
                for i in range(lo, hi)
            ]
        )
    lib.vector_index()
    return lib


def times(fn, queries) -> np.ndarray:
    out = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        out.append((time.perf_counter() - t0) * 1000)
    return np.asarray(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--queries", type=int, default=40)
    args = ap.parse_args(argv)
    n = 10_000 if args.quick else 50_000
    rng = np.random.default_rng(1)
    queries = l2_normalize(rng.standard_normal((args.queries, DIM)))
    with tempfile.TemporaryDirectory() as tmp:
        lib = build(Path(tmp) / "lib", n)
        t0 = time.perf_counter()
        lib.background.get()
        sample_ms = (time.perf_counter() - t0) * 1000
        cases = {
            "plain (min_score none)": dict(min_score="none"),
            "auto cut": dict(min_score="auto"),
            "auto cut + collapse": dict(min_score="auto", collapse=True),
            "auto cut + sort -date": dict(min_score="auto", sort="-date"),
            "none + sort -date (10k)": dict(min_score="none", sort="-date"),
            "none + collapse": dict(min_score="none", collapse=True),
        }
        for kw in cases.values():
            lib.search(vector=queries[0], k=20, **kw)  # warm up
        print(f"\n## {n} items, {DIM}-d, k=20, {args.queries} queries")
        print(f"background sample drawn once per catalog change: {sample_ms:.0f} ms\n")
        print("| search | p50 ms | p95 ms | p50 ratio |")
        print("|---|---|---|---|")
        base = None
        for name, kw in cases.items():
            t = times(lambda q, kw=kw: lib.search(vector=q, k=20, **kw), queries)
            base = np.median(t) if base is None else base
            print(
                f"| {name} | {np.median(t):.2f} | {np.percentile(t, 95):.2f} | {np.median(t) / base:.2f} |"
            )
        lib.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
