"""Rerankers and the modality-gap correction: retrieval quality, and reranked query latency.

    python benchmarks/rerank.py            # 600 synthetic images, 20k-item latency library
    python benchmarks/rerank.py --quick    # 150 images, 5k items

1. Quality (the evaluation harness, clipsearch.eval, on clipsearch.eval.synthetic images
   with "full" captions): text→image and image→text R@1/R@5 for none / is / qbnorm /
   dbnorm / dbnorm-dynamic, with three query banks — the test queries themselves
   (transductive: what `clipsearch eval --rerank` does without a bank), the captions of a
   disjoint synthetic set (seed + 1: a held-out bank of the same distribution, QB-Norm's
   setting), and the caption bank shipped with clipsearch. Encoders: the deterministic
   ColourEncoder (tests/fakes.py) and the tiny random-weight open_clip model (no
   pretrained weights are reachable here, so these numbers say nothing about real CLIP).
2. Modality gap: image→image R@1 of perturbed copies (JPEG q=40, 80% resize, 6% crop)
   against the originals, with no correction, ``shift`` (−Δ) and ``center`` (−mean(img)).
3. Planted hubs (a simulation, pure numpy): gallery g = normalise(u + h·c), queries
   q = normalise(u + ε + 10·c) with u ~ N(0, I₆₄), ε ~ N(0, I₆₄), a shared direction c and
   h = Exp(1)²: the few items with a large h sit near the query cloud's centre and win
   many queries. Held-out bank of 2000 queries. Shows the mechanism, not real-world gains.
4. Latency: a library of N random unit vectors written straight into a catalog; p50/p95
   of `Searcher.search(q)` (baseline) vs the same with a `HubnessRescorer` per method, in the
   same run; the one-time bank precompute is timed separately.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clipsearch.eval.datasets import load_pairs  # noqa: E402
from clipsearch.eval.embed import EmbeddingCache, embed_images, embed_texts  # noqa: E402
from clipsearch.eval.metrics import retrieval_metrics  # noqa: E402
from clipsearch.eval.rerank import RerankContext, register_reranker  # noqa: E402
from clipsearch.eval.synthetic import make_image_set  # noqa: E402
from clipsearch.models.base import l2_normalize  # noqa: E402
from clipsearch.search import banks as bankmod  # noqa: E402
from clipsearch.search import gap as gapmod  # noqa: E402
from clipsearch.search import rerank  # noqa: E402
from clipsearch.search.rescore import widened  # noqa: E402

METHODS = ["none", "is", "qbnorm", "dbnorm", "dbnorm-dynamic"]


def encoders(which: str, tmp: Path) -> dict[str, object]:
    from tests.fakes import ColourEncoder, make_tiny_checkpoint, register_tiny_models

    out: dict[str, object] = {}
    if which in ("fake", "both"):
        out["fake:colour"] = ColourEncoder()
    if which in ("tiny", "both"):
        from clipsearch.models import load_encoder

        register_tiny_models()
        out["tiny-vit (random)"] = load_encoder(
            str(make_tiny_checkpoint(tmp / "tiny.safetensors")), precision="fp32"
        )
    return out


def run_method(name: str, S: np.ndarray, ctx_t2m: RerankContext, ctx_m2t: RerankContext, fns):
    if name == "none":
        return S, S
    fn = fns[name]
    return fn(S, ctx_t2m), fn(S.T, ctx_m2t).T


def quality(encoder, n: int, tmp: Path, beta: float) -> list[tuple[str, str, float, float, float]]:
    test_dir, bank_dir = tmp / f"test{n}", tmp / f"bank{n}"
    if not test_dir.exists():
        make_image_set(test_dir, n=n, seed=0)
        make_image_set(bank_dir, n=n, seed=1)
    ds = load_pairs(test_dir / "images.csv")
    held = load_pairs(bank_dir / "images.csv")
    cache = EmbeddingCache(None)
    imgs = embed_images(encoder, ds.media, cache=cache).vectors
    txts = embed_texts(encoder, ds.captions, cache=cache)
    bank_imgs = embed_images(encoder, held.media, cache=cache).vectors
    banks = {
        "transductive": (None, None),
        "held-out": (embed_texts(encoder, held.captions, cache=cache), bank_imgs),
        "shipped": (bankmod.caption_vectors(encoder, bankmod.default_captions()), bank_imgs),
    }
    fns = rerank.eval_rerankers(beta=beta)
    S = txts @ imgs.T  # (T, M)
    rows = []
    for bank_name, (tbank, ibank) in banks.items():
        ctx_t2m = RerankContext(txts, imgs, "text_to_media", query_bank=tbank)
        ctx_m2t = RerankContext(imgs, txts, "media_to_text", query_bank=ibank)
        for m in METHODS:
            if m == "none" and bank_name != "transductive":
                continue
            St, Sm = run_method(m, S, ctx_t2m, ctx_m2t, fns)
            met = retrieval_metrics(St, ds.text_to_media, S_media_to_text=Sm)
            rows.append(
                (
                    m,
                    "-" if m == "none" else bank_name,
                    met.text_to_media.recall[1],
                    met.text_to_media.recall[5],
                    met.media_to_text.recall[1],
                )
            )
    return rows


def planted_hubs(n: int = 1000, bank: int = 2000, dim: int = 64, seed: int = 0) -> list[tuple]:
    rng = np.random.default_rng(seed)
    c = l2_normalize(rng.standard_normal(dim))

    def draw(m: int) -> tuple[np.ndarray, np.ndarray]:
        u = rng.standard_normal((m, dim))
        h = rng.exponential(1.0, size=m) ** 2
        gallery = l2_normalize(u + h[:, None] * c)
        queries = l2_normalize(u + rng.standard_normal((m, dim)) + 10.0 * c)
        return queries, gallery

    q, g = draw(n)
    qbank, _ = draw(bank)
    S = q @ g.T  # (n, n), query i's target is gallery item i
    fns = rerank.eval_rerankers()
    ctx = RerankContext(q, g, "text_to_media", query_bank=qbank)
    rows = []
    for m in METHODS:
        St = S if m == "none" else fns[m](S, ctx)
        met = retrieval_metrics(St, np.arange(n))
        n1 = np.bincount(np.argmax(St, axis=1), minlength=n)  # top-1 occurrences per item
        rows.append((m, met.text_to_media.recall[1], met.text_to_media.recall[5], int(n1.max())))
    return rows


def perturb(path: str, rng: np.random.Generator) -> Image.Image:
    im = Image.open(path).convert("RGB")
    w, h = im.size
    c = int(0.06 * min(w, h))
    dx, dy = rng.integers(0, c + 1, size=2)
    im = im.crop((dx, dy, w - (c - dx), h - (c - dy))).resize((int(w * 0.8), int(h * 0.8)))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=40)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def gap_quality(encoder, n: int, tmp: Path) -> list[tuple[str, float, float]]:
    ds = load_pairs(tmp / f"test{n}" / "images.csv")
    cache = EmbeddingCache(None)
    gallery = embed_images(encoder, ds.media, cache=cache).vectors  # (M, D)
    rng = np.random.default_rng(0)
    queries = np.concatenate(
        [
            encoder.encode_images([perturb(p, rng) for p in ds.media[i : i + 64]])
            for i in range(0, len(ds.media), 64)
        ]
    )
    gap = gapmod.estimate_gap(gallery, bankmod.caption_vectors(encoder, bankmod.default_captions()))
    gt = np.arange(len(gallery))
    rows = []
    for mode in ("none", "shift", "center"):
        sims = (
            queries @ gallery.T
            if mode == "none"
            else gapmod.corrected_similarity(queries, gallery, gap, mode=mode)
        )  # (Q, M)
        ranks = 1 + (sims > sims[gt, gt][:, None]).sum(axis=1)
        rows.append((mode, 100 * float((ranks <= 1).mean()), gap.magnitude))
    return rows


def latency(n_items: int, n_queries: int, tmp: Path) -> None:
    from clipsearch.library import Library
    from clipsearch.search.engine import SearchOptions
    from clipsearch.store import ItemWrite, ModelBinding
    from tests.fakes import ColourEncoder

    enc = ColourEncoder()
    lib = Library(tmp / "lat-lib", encoder=enc)
    rng = np.random.default_rng(0)
    if lib.catalog.stats()["vectors"] == 0:
        lib.catalog.bind_model(ModelBinding(enc.spec, enc.fingerprint, enc.dim))
        vecs = l2_normalize(rng.standard_normal((n_items, enc.dim)))
        for lo in range(0, n_items, 5000):
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
                        vectors=vecs[i][None],
                    )
                    for i in range(lo, min(lo + 5000, n_items))
                ]
            )
    try:
        lib.vector_index()
        note = "IndexCache"
    except ImportError:
        note = "exact numpy index (clipsearch.index.IndexCache not available yet)"
        lib.vector_index = _exact_index(lib.catalog)  # type: ignore[method-assign]
    queries = l2_normalize(rng.standard_normal((n_queries, enc.dim)))
    options = SearchOptions(k=20)
    t0 = time.perf_counter()
    terms = lib.banks.terms()
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    lib.banks.terms()
    memo = time.perf_counter() - t0
    with Library(lib.path, encoder=enc) as other:  # a new process would load the file
        t0 = time.perf_counter()
        other.banks.terms()
        reload_ = time.perf_counter() - t0
    print(f"\n## Latency: {n_items} items, {n_queries} queries, k=20, index: {note}")
    print(
        f"bank precompute (once, {terms.n_query_bank} captions + {terms.n_gallery_bank} gallery bank): "
        f"{build * 1000:.0f} ms; load from disk: {reload_ * 1000:.1f} ms; remembered: {memo * 1000:.2f} ms"
    )
    lib.searcher().search(queries[0], options)  # warm up
    base = _times(lambda q: lib.searcher().search(q, options), queries)
    print(f"{'method':<16}{'p50 ms':>9}{'p95 ms':>9}{'p50 ratio':>11}")
    print(f"{'plain search':<16}{np.median(base):>9.2f}{np.percentile(base, 95):>9.2f}{1.0:>11.2f}")
    wide = replace(options, k=widened(options.k + options.offset))
    t = _times(lambda q: lib.searcher().search(q, wide), queries)
    label = f"plain, k={wide.k}"
    print(
        f"{label:<16}{np.median(t):>9.2f}{np.percentile(t, 95):>9.2f}{np.median(t) / np.median(base):>11.2f}"
    )
    for m in METHODS[1:]:
        rescorer = rerank.HubnessRescorer(terms, m)
        t = _times(lambda q, r=rescorer: lib.searcher().search(q, options, rescorer=r), queries)
        print(
            f"{m:<16}{np.median(t):>9.2f}{np.percentile(t, 95):>9.2f}{np.median(t) / np.median(base):>11.2f}"
        )
    lib.close()


def _times(fn, queries) -> np.ndarray:
    out = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        out.append((time.perf_counter() - t0) * 1000)
    return np.array(out)


def _exact_index(catalog):
    from clipsearch.index.base import Matches

    table = catalog.load_vectors()
    ids, vecs = table.ids, table.vectors.astype(np.float32)

    class Exact:
        dim = vecs.shape[1]

        def __len__(self) -> int:
            return len(ids)

        def search(self, queries, k, *, allowed=None, exact=False):
            q = np.atleast_2d(queries)
            S = q @ vecs.T
            if allowed is not None:
                S[:, ~np.isin(ids, allowed)] = -np.inf
            k = min(k, len(ids))
            top = np.argsort(-S, axis=1)[:, :k]
            sc = np.take_along_axis(S, top, axis=1)
            return Matches(np.where(np.isfinite(sc), ids[top], -1), sc.astype(np.float32))

    index = Exact()
    return lambda: index


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--encoder", choices=["fake", "tiny", "both"], default="both")
    ap.add_argument("--beta", type=float, default=rerank.DEFAULT_BETA)
    ap.add_argument("--only", choices=["quality", "latency"], default=None)
    args = ap.parse_args(argv)
    n_images = 150 if args.quick else 600
    n_items, n_queries = (5_000, 50) if args.quick else (20_000, 200)
    for name, fn in rerank.eval_rerankers(beta=args.beta).items():
        register_reranker(name, fn)
    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        encs = encoders(args.encoder, tmp) if args.only != "latency" else {}
        for enc_name, enc in encs.items():
            print(
                f"\n## Quality: {enc_name}, {n_images} synthetic images (full captions), beta={args.beta:g}"
            )
            print(
                f"{'method':<16}{'query bank':<14}{'t2i R@1':>9}{'t2i R@5':>9}{'i2t R@1':>9}{'Δ t2i R@1':>11}"
            )
            rows = quality(enc, n_images, tmp, args.beta)
            base = rows[0][2]
            for m, bank, r1, r5, i2t in rows:
                print(f"{m:<16}{bank:<14}{r1:>9.1f}{r5:>9.1f}{i2t:>9.1f}{r1 - base:>+11.1f}")
            print(f"\n## Modality gap, image→image (perturbed copy → original): {enc_name}")
            print(f"{'correction':<12}{'R@1':>8}{'Δ R@1':>8}   ‖Δ‖")
            grows = gap_quality(enc, n_images, tmp)
            for mode, r1, mag in grows:
                print(f"{mode:<12}{r1:>8.1f}{r1 - grows[0][1]:>+8.1f}   {mag:.3f}")
        if args.only != "latency":
            print("\n## Planted hubs (simulation): 1000 queries/items, 64-d, held-out bank of 2000")
            print(f"{'method':<16}{'R@1':>8}{'R@5':>8}{'max N1':>8}{'Δ R@1':>8}")
            hrows = planted_hubs()
            for m, r1, r5, n1 in hrows:
                print(f"{m:<16}{r1:>8.1f}{r5:>8.1f}{n1:>8d}{r1 - hrows[0][1]:>+8.1f}")
        if args.only != "quality":
            latency(n_items, n_queries, tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
