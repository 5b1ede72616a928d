"""Relevance cut-offs: precision and recall of where each method ends a query's results.

    python benchmarks/relevance_cut.py            # the three sets below
    python benchmarks/relevance_cut.py --quick    # smaller sets
    python benchmarks/relevance_cut.py --vit      # also random-weight ViT-B-32 (slow)

Each set has several relevant items per query and some queries with none. For every
query, every gallery item is scored; a method gives one threshold per query; items at or
above it are "shown" (clipsearch.eval.cutoff: macro precision / recall / F1 over queries
with relevant items; junk shown and empty answers over queries without).

Sets (no pretrained weights are reachable here, so nothing below measures real CLIP):

1. clip-like simulation (numpy): 200 concepts in 25 related groups; each item shows 1–3
   concepts (Zipf popularity: 5 to ~1,300 relevant items per query) with its own weight
   (a small object in a big scene counts less); the query is a text vector in another
   cone (a modality gap) whose share of the common direction varies per query, so the
   unrelated items of one query score ~0.10 and of another ~0.25 (the spread CLIP users
   report); some items sit nearer the common direction and score high for every query
   (hubs). 40 of the queries name a concept no item shows.
2. ColourEncoder (tests/fakes.py) on clipsearch.eval.synthetic "full" images (a shape on
   a coloured background): text queries naming a colour in four phrasings; relevant =
   the images with that background (an image with a small shape of that colour is
   related, not relevant); 12 queries name no colour at all (no relevant item).
3. tiny random-weight open_clip (tiny-vit) on the same images, image→image: the queries
   are images of a second synthetic set (another seed); relevant = the gallery images
   with the query's background colour. (``--vit``: the same with a random-weight
   ViT-B-32.)

For set 1 a second table puts a filter before the cut: each query searches one folder
(the items of one theme: its own, or another theme's), as ``--where path:...`` would. It
compares the cut of clipsearch, whose background is always the whole library, with a cut
whose background is the filtered items alone.

Each table prints the per-query background statistics, so the reader can judge the set.
The oracle row is the best single global threshold chosen in hindsight on the same
queries: an upper bound for any fixed threshold, not something a user can set.
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

from clipsearch.eval.cutoff import (  # noqa: E402
    background_thresholds,
    cut_quality,
    cut_thresholds,
)
from clipsearch.eval.synthetic import COLOURS, make_image_set  # noqa: E402
from clipsearch.models.base import l2_normalize  # noqa: E402
from clipsearch.search.relevance import background_threshold, z_for  # noqa: E402


def clip_like(n_items: int, n_queries: int, *, dim: int = 512, seed: int = 0):
    """(scores (Q, N), relevant (Q, N), folders (G, N), query_folder (Q,)) of the clip-like
    simulation (module docstring): folder g holds the items showing a concept of group g
    (a themed folder); ``query_folder`` is the group of each query's concept (a random
    group for a query whose concept no item shows)."""
    rng = np.random.default_rng(seed)
    n_groups, per_group = 25, 8
    n_concepts = n_groups * per_group

    def unit(*shape: int) -> np.ndarray:
        return l2_normalize(rng.standard_normal((*shape, dim)).astype(np.float32))

    common, img_cone, txt_cone = unit(3)
    groups = unit(n_groups)
    concepts = l2_normalize(
        0.6 * np.repeat(groups, per_group, axis=0) + unit(n_concepts)
    )  # (C, D), siblings cos ≈ 0.26
    popularity = 1.0 / (np.arange(n_concepts) + 3.0)
    popularity /= popularity.sum()
    n_shown = rng.integers(1, 4, size=n_items)
    members = np.zeros((n_items, n_concepts), dtype=bool)
    weights = np.zeros((n_items, n_concepts), dtype=np.float32)
    for i, m in enumerate(n_shown):
        ks = rng.choice(n_concepts, size=m, replace=False, p=popularity)
        members[i, ks] = True
        weights[i, ks] = rng.uniform(0.3, 0.9, size=m)
    hub = 1.0 + 0.06 * np.abs(rng.standard_normal(n_items)).astype(np.float32) ** 2
    items = l2_normalize(
        hub[:, None] * common
        + 1.3 * img_cone
        + weights @ concepts
        + 1.0 * rng.standard_normal((n_items, dim)).astype(np.float32) / np.sqrt(dim)
    )
    # queries: a shown concept for most, a concept no item shows for the rest
    unseen = np.flatnonzero(members.sum(0) == 0)
    n_empty = min(40, n_queries // 5)
    extra = unit(n_empty)  # concepts outside the gallery
    q_concepts = rng.choice(np.flatnonzero(members.sum(0) > 0), size=n_queries - n_empty)
    qvec = np.concatenate([concepts[q_concepts], extra])
    share = rng.uniform(0.45, 0.85, size=n_queries).astype(np.float32)
    queries = l2_normalize(
        share[:, None] * common
        + 1.3 * txt_cone
        + qvec
        + 0.7 * rng.standard_normal((n_queries, dim)).astype(np.float32) / np.sqrt(dim)
    )
    relevant = np.concatenate(
        [members[:, q_concepts].T, np.zeros((n_empty, n_items), dtype=bool)]
    )  # (Q, N)
    del unseen
    folders = members.reshape(n_items, n_groups, per_group).any(2).T  # (G, N)
    query_folder = np.concatenate(
        [q_concepts // per_group, rng.integers(0, n_groups, size=n_empty)]
    )
    return queries @ items.T, relevant, folders, query_folder


def colour_texts() -> tuple[list[str], list[str]]:
    colours = list(COLOURS)
    phrasings = ["{c}", "a {c} picture", "something {c}", "a photo with a {c} background"]
    texts, labels = [], []
    for c in colours:
        for p in phrasings:
            texts.append(p.format(c=c))
            labels.append(c)
    for t in (
        "a dog on a beach",
        "birthday cake",
        "mountains at sunset",
        "a man riding a bicycle",
        "city street at night",
        "two cats sleeping",
        "a bowl of soup",
        "snow on trees",
        "an old car",
        "children playing football",
        "a wedding",
        "a page of text",
    ):
        texts.append(t)
        labels.append("")
    return texts, labels


def image_sets(tmp: Path, n: int, n_queries: int):
    from clipsearch.eval.datasets import load_pairs

    gallery = make_image_set(tmp / "gallery", n=n, seed=0)
    queries = make_image_set(tmp / "queries", n=n_queries, seed=1)
    return (
        gallery,
        load_pairs(tmp / "gallery" / "images.csv").media,
        queries,
        load_pairs(tmp / "queries" / "images.csv").media,
    )


def encoded(encoder, paths: list[str]) -> np.ndarray:
    from clipsearch.eval.embed import EmbeddingCache, embed_images

    return embed_images(encoder, paths, cache=EmbeddingCache(None)).vectors


def print_table(title: str, scores: np.ndarray, relevant: np.ndarray) -> None:
    bg = np.where(relevant, np.nan, scores)
    means = np.nanmean(bg, axis=1)
    stds = np.nanstd(bg, axis=1)
    rel = scores[relevant]
    counts = relevant.sum(1)
    print(f"\n### {title}\n")
    print(
        f"{scores.shape[1]} items, {int((counts > 0).sum())} queries with relevant items "
        f"({int(counts[counts > 0].min())}–{int(counts.max())} each, median "
        f"{int(np.median(counts[counts > 0]))}), {int((counts == 0).sum())} without. "
        f"Unrelated scores: per-query mean {means.min():.3f}–{means.max():.3f}, "
        f"std {np.median(stds):.3f} (median); relevant scores: mean {rel.mean():.3f}.\n"
    )
    print("| cut | precision | recall | F1 | shown / query | junk shown (no-answer queries) |")
    print("|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    methods = cut_thresholds(scores, relevant)
    for name, th in methods.items():
        q = cut_quality(scores, relevant, th)
        junk = f"{q.junk_shown:.1f} (empty {100 * q.empty_ok:.0f} %)" if q.empty_queries else "—"
        print(
            f"| {name} | {q.precision:.3f} | {q.recall:.3f} | {q.f1:.3f} | {q.shown:.1f} | {junk} |"
        )
    print(f"\n({time.perf_counter() - t0:.1f} s for the cuts)")


def print_filtered(
    scores: np.ndarray, relevant: np.ndarray, folders: np.ndarray, query_folder: np.ndarray
) -> None:
    """A filter before the cut: each query searches one folder only, (a) its own theme's
    folder (the relevant items and their relatives: mostly related), (b) another theme's
    folder (mostly junk for it). The cut of clipsearch reads the background of the whole
    library; the alternative reads it from the filtered items alone."""
    rng = np.random.default_rng(7)
    other = (query_folder + rng.integers(1, len(folders), size=len(query_folder))) % len(folders)
    library_cut = background_thresholds(scores)
    print("\n### the same, with a filter before the cut (one folder per query)\n")
    print(
        "| folder | cut | precision | recall | F1 | shown / query | junk shown (no-answer queries) |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, chosen in (("own theme", query_folder), ("another theme", other)):
        allowed = folders[chosen]  # (Q, N)
        masked = np.where(allowed, scores, -np.inf)
        rel = relevant & allowed
        in_folder = [scores[i, allowed[i]] for i in range(len(scores))]
        sizes = np.array([len(x) for x in in_folder])
        folder_cut = np.array(
            [background_threshold(x, z=z_for(len(x))) if len(x) else np.inf for x in in_folder]
        )
        methods = {
            "none": np.full(len(scores), -1.0),
            "fixed 0.175": np.full(len(scores), 0.175),
            "auto, background of the whole library (clipsearch)": library_cut,
            "auto, background of the filtered items": folder_cut,
        }
        first = True
        for name, th in methods.items():
            q = cut_quality(masked, rel, th)
            junk = (
                f"{q.junk_shown:.1f} (empty {100 * q.empty_ok:.0f} %)" if q.empty_queries else "—"
            )
            head = f"{label} ({int(np.median(sizes))} items)" if first else ""
            first = False
            print(
                f"| {head} | {name} | {q.precision:.3f} | {q.recall:.3f} | {q.f1:.3f} | "
                f"{q.shown:.1f} | {junk} |"
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sets")
    ap.add_argument("--vit", action="store_true", help="also a random-weight ViT-B-32")
    args = ap.parse_args(argv)
    n_sim, q_sim = (5000, 150) if args.quick else (20000, 400)
    n_img, q_img = (300, 40) if args.quick else (720, 90)

    scores, relevant, folders, query_folder = clip_like(n_sim, q_sim)
    print_table("clip-like simulation (text→image)", scores, relevant)
    print_filtered(scores, relevant, folders, query_folder)

    from tests.fakes import ColourEncoder, make_tiny_checkpoint, register_tiny_models

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        gallery, gallery_paths, qimgs, query_paths = image_sets(tmp, n_img, q_img)
        backgrounds = np.array([g.background for g in gallery])

        enc = ColourEncoder()
        texts, labels = colour_texts()
        scores = enc.encode_texts(texts) @ encoded(enc, gallery_paths).T
        relevant = np.array([backgrounds == c for c in labels])
        print_table("ColourEncoder, text→image (colour of the background)", scores, relevant)

        from clipsearch.models import load_encoder

        register_tiny_models()
        tiny = load_encoder(str(make_tiny_checkpoint(tmp / "tiny.safetensors")), precision="fp32")
        relevant = np.array([backgrounds == q.background for q in qimgs])
        scores = encoded(tiny, query_paths) @ encoded(tiny, gallery_paths).T
        print_table("tiny-vit, random weights, image→image (same background)", scores, relevant)
        if args.vit:
            vit = vit_b_32_random(tmp)
            scores = encoded(vit, query_paths) @ encoded(vit, gallery_paths).T
            print_table("ViT-B-32, random weights, image→image (same background)", scores, relevant)
    return 0


def vit_b_32_random(tmp: Path):
    """A ViT-B-32 with random weights (seed 0), saved and loaded through the real path."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    from clipsearch.models import load_encoder

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    path = tmp / "vit-b-32-random.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return load_encoder(f"ViT-B-32@{path}", precision="fp32")


if __name__ == "__main__":
    raise SystemExit(main())
