"""Moment retrieval: does search find the right video, and the right moment inside it?

    python benchmarks/moments.py            # 3 synthetic sets (seeds 0-2) + the simulation
    python benchmarks/moments.py --quick    # 1 set + a smaller simulation
    python benchmarks/moments.py --harder   # stronger colour shift of the picture queries

Part 1, synthetic picture queries (tests/momentgen.py, cached in benchmarks/out/moments):
6 videos of 4-6 scenes of 3-12 s (slow zoom, sensor noise, 0.5 s cross-fades); each query
is a scene's picture re-cropped and colour-shifted. Model: open_clip ViT-B-32 with random
weights (seed 0, no download), default precision and sampler, indexed by `Library.index`
(the product path: decode, shot detection, encode, store). Scored by
`clipsearch.eval.moments.evaluate_moments` - every pooling and both baselines (whole
video; a fixed window around the best frame) from the same stored vectors in one run.
Targets at default settings: right video first >= 85 %, R1@IoU0.5 >= 75 %, mIoU >= 0.70.

Part 2, simulated long videos (numpy only): frame-score curves like a trained CLIP's for a
text query - 30 videos of 12-600 frames (fps:1), a per-video offset (sd 0.01) and AR(1)
frame noise (sd 0.012, rho 0.7); the target video holds a 3-15 frame moment raised by
delta, a fifth of the others a moment raised by delta/2. How often each pooling ranks the
target first, and how well the moment is found inside it (IoU), against the baselines.

Part 3 times the localisation of one video by its frame count, against the previous rule.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
OUT = Path(__file__).parent / "out" / "moments"
POOLINGS = ("peak", "mean", "max", "softmax")
PREVIOUS_DEFAULTS = ("mean", "max", "softmax")  # the poolings before peak, at τ = 0.1
TARGETS = {"video_r1": 85.0, "r1_05": 75.0, "miou": 0.70}


def synthetic_set(seed: int, harder: bool):
    from tests.momentgen import make_moment_set

    shift = dict(query_gain=0.15, query_offset=12.0) if harder else {}
    root = OUT / (f"set{seed}" + ("-harder" if harder else ""))
    done = root / "done"
    if not done.exists():
        make_moment_set(root, seed=seed, **shift)
        done.write_text("ok")
    return root


def run_set(root: Path, ckpt: Path):
    from clipsearch import Library
    from clipsearch.eval.moments import evaluate_moments, load_moments

    ds = load_moments(root / "queries.tsv", root / "videos")
    with Library(root / "lib", model=str(ckpt)) as lib:
        return evaluate_moments(lib, ds, poolings=POOLINGS)


def previous_rule(t: np.ndarray, s: np.ndarray, duration: float) -> tuple[float, float]:
    """The localisation clipsearch used before (kept here as a baseline): Gaussian
    smoothing (σ 1 s), the run around the peak above half height over the 10th
    percentile, frame cells, widened to 2 s; the whole video below 0.01 of contrast."""
    from clipsearch.search.moments import frame_cells

    k = np.exp(-0.5 * ((t[:, None] - t[None, :]) / 1.0) ** 2)
    sm = (k @ s) / k.sum(axis=1)
    p, base = int(np.argmax(sm)), float(np.percentile(sm, 10))
    if len(t) == 1 or sm[p] - base < 0.01:
        return 0.0, duration
    half = (sm[p] + base) / 2
    lo = hi = p
    while lo > 0 and sm[lo - 1] >= half:
        lo -= 1
    while hi < len(t) - 1 and sm[hi + 1] >= half:
        hi += 1
    starts, ends = frame_cells(t, duration)
    start, end = float(starts[lo]), float(ends[hi])
    if end - start < 2.0:  # widened to 2 s around the peak's cell, inside the video
        length = min(2.0, duration)
        start = min(start, max(0.0, (starts[p] + ends[p]) / 2 - length / 2))
        end = max(end, start + length)
        if end > duration:
            end, start = duration, max(0.0, duration - length)
    return start, end


def localisers(root: Path, ckpt: Path) -> tuple[dict[str, list[float]], dict[str, list], int]:
    """From the library `run_set` indexed: given-video IoU per query for the previous rule
    and the segmentation without and with the stored shot boundaries; the previous
    defaults end to end (corpus: the video ranked by mean or max pooling, its moment by
    the previous rule, 0 for a wrong video); and how many queries the encoder itself
    confuses (a frame of another video scores above every frame of the query's own scene:
    max pooling cannot rank the right video first)."""
    from clipsearch import Library
    from clipsearch.eval.moments import load_moments, temporal_iou
    from clipsearch.search.moments import localize, shots_from_cuts
    from clipsearch.search.video import FrameSets, pool_scores_batch

    ds = load_moments(root / "queries.tsv", root / "videos")
    out: dict[str, list[float]] = {"previous rule": [], "segments": [], "segments + shots": []}
    before: dict[str, list] = {p: [] for p in PREVIOUS_DEFAULTS}  # (right video?, IoU)
    confused = 0
    with Library(root / "lib", model=str(ckpt)) as lib:
        ids = {v: lib.catalog.item_by_path(p).id for v, p in ds.videos.items()}
        frames = lib.catalog.frames(list(ids.values()))
        order = sorted(frames)
        sets = FrameSets.from_list([frames[i][1] for i in order])
        for q in ds.queries:
            rec = lib.catalog.item(ids[q.video])
            ts, fv = frames[rec.id]
            cuts = lib.catalog.cuts([rec.id]).get(rec.id)
            vec = lib.embed_query(image=q.image)
            s = fv @ vec
            ((a, b),) = q.windows
            own_best = s[(ts >= a) & (ts < b)].max()
            others = max(float((f @ vec).max()) for i, (_, f) in frames.items() if i != rec.id)
            confused += others > own_best
            d = float(rec.duration)
            shots = shots_from_cuts(cuts, d) if cuts is not None else None
            old = temporal_iou(previous_rule(ts, s, d), q.windows)
            out["previous rule"].append(old)
            for label, sh in (("segments", None), ("segments + shots", shots)):
                m = localize(ts, s, duration=d, shots=sh)
                out[label].append(temporal_iou((m.start, m.end), q.windows))
            for p in PREVIOUS_DEFAULTS:
                scores = pool_scores_batch(vec[None, :], sets, p, tau=0.1)[0]
                right = bool(scores[order.index(rec.id)] >= scores.max())
                before[p].append((right, old if right else 0.0))
    return out, before, confused


def cut_accuracy(root: Path, ckpt: Path, near_s: float = 0.5) -> tuple[int, int, int, list[float]]:
    """The cuts the indexer stored against the set's scene boundaries (every scene is a
    query, so its edges are the truth): (true cuts, found within ``near_s``, stored cuts
    near no true one, placement errors in seconds of the found ones)."""
    from clipsearch import Library
    from clipsearch.eval.moments import load_moments

    ds = load_moments(root / "queries.tsv", root / "videos")
    truth: dict[str, set[float]] = {}
    for q in ds.queries:
        ((a, b),) = q.windows
        truth.setdefault(q.video, set()).update((a, b))
    n_true = found = invented = 0
    errors: list[float] = []
    with Library(root / "lib", model=str(ckpt)) as lib:
        for vid, path in ds.videos.items():
            rec = lib.catalog.item_by_path(path)
            stored = np.asarray(lib.catalog.cuts([rec.id]).get(rec.id, []), dtype=np.float64)
            true = np.asarray(sorted(truth[vid]))[1:-1]  # the video's start and end are no cuts
            n_true += len(true)
            for c in true:
                d = np.abs(stored - c).min() if len(stored) else np.inf
                if d <= near_s:
                    found += 1
                    errors.append(float(d))
            for c in stored:
                invented += not len(true) or np.abs(true - c).min() > near_s
    return n_true, found, int(invented), errors


def pooled(reports, label: str, setting: str) -> dict[str, float]:
    """Metrics over all sets' queries (each metric is a per-query mean, so weight by n)."""
    runs = [r.run(label, setting).metrics for r in reports]
    n = sum(m.n for m in runs)
    out = {"n": n, "miou": sum(m.miou * m.n for m in runs) / n}
    for t in (0.3, 0.5, 0.7):
        out[f"r1_{t}"] = sum(m.recall[t] * m.n for m in runs) / n
    if runs[0].video_r1 is not None:
        out["video_r1"] = sum(m.video_r1 * m.n for m in runs) / n
    return out


def print_table(title: str, reports) -> None:
    from clipsearch.eval.moments import FRAME_WINDOW, WHOLE_VIDEO

    print(f"\n{title}")
    print("| setting | scoring | right video first | R1@0.3 | R1@0.5 | R1@0.7 | mIoU |")
    print("|---|---|---|---|---|---|---|")
    rows = [(p + (" (default)" if p == "peak" else ""), p, "corpus") for p in POOLINGS]
    rows += [(f"baseline: {b} of the peak video", b, "corpus") for b in (WHOLE_VIDEO, FRAME_WINDOW)]
    rows += [
        ("moments", "moments", "given video"),
        (f"baseline: {WHOLE_VIDEO}", WHOLE_VIDEO, "given video"),
        (f"baseline: {FRAME_WINDOW}", FRAME_WINDOW, "given video"),
    ]
    for name, label, setting in rows:
        m = pooled(reports, label, setting)
        video = f"{m['video_r1']:.1f} %" if "video_r1" in m else "(given)"
        print(
            f"| {setting} | {name} | {video} | {m['r1_0.3']:.1f} | {m['r1_0.5']:.1f} | "
            f"{m['r1_0.7']:.1f} | {m['miou']:.3f} |"
        )


def part1(seeds: list[int], harder: bool) -> None:
    from index_throughput import checkpoint

    ckpt = checkpoint()
    reports = []
    given: dict[str, list[float]] = {}
    previous: dict[str, list] = {}
    confused = 0
    cut_stats = [0, 0, 0, []]
    for seed in seeds:
        t0 = time.perf_counter()
        root = synthetic_set(seed, harder)
        report = run_set(root, ckpt)
        reports.append(report)
        print(
            f"set {seed}: {report.n_videos} videos, {report.n_queries} queries, "
            f"window baseline {report.window_s:.1f} s, {time.perf_counter() - t0:.0f} s "
            f"({report.seconds})"
        )
        print_table(f"set {seed}", [report])
        ious_by_rule, before, n_confused = localisers(root, ckpt)
        confused += n_confused
        for p, rows in before.items():
            previous.setdefault(p, []).extend(rows)
        for i, value in enumerate(cut_accuracy(root, ckpt)):
            cut_stats[i] += value
        print(
            f"encoder confusions in set {seed}: {n_confused} of {report.n_queries} queries have "
            "a frame of another video above every frame of their own scene"
        )
        for label, ious in ious_by_rule.items():
            given.setdefault(label, []).extend(ious)
    print("\nlocalisation given the right video, all sets (same stored vectors and queries)")
    print("| rule | R1@0.3 | R1@0.5 | R1@0.7 | mIoU |")
    print("|---|---|---|---|---|")
    for label, ious in given.items():
        x = np.asarray(ious)
        print(
            f"| {label} | {100 * np.mean(x >= 0.3):.1f} | {100 * np.mean(x >= 0.5):.1f} | "
            f"{100 * np.mean(x >= 0.7):.1f} | {x.mean():.3f} |"
        )
    print(
        "\nthe previous defaults end to end, all sets (corpus: pooling at tau 0.1 ranks the "
        "videos, the previous rule localises in the first; same stored vectors and queries)"
    )
    print("| scoring + localisation | right video first | R1@0.3 | R1@0.5 | R1@0.7 | mIoU |")
    print("|---|---|---|---|---|---|")
    for p, rows in previous.items():
        right = np.asarray([r for r, _ in rows])
        x = np.asarray([iou for _, iou in rows])
        name = f"{p} + previous rule" + (" (the previous default)" if p == "mean" else "")
        print(
            f"| {name} | {100 * right.mean():.1f} % | {100 * np.mean(x >= 0.3):.1f} | "
            f"{100 * np.mean(x >= 0.5):.1f} | {100 * np.mean(x >= 0.7):.1f} | {x.mean():.3f} |"
        )
    n_true, found, invented, errors = cut_stats
    print(
        f"\nshot cuts stored at indexing, all sets: {found} of {n_true} scene boundaries found "
        f"within 0.5 s, {invented} stored cuts near no boundary; placement error mean "
        f"{np.mean(errors):.3f} s, max {np.max(errors):.3f} s"
    )
    if len(reports) > 1:
        print_table(f"all {len(reports)} sets together", reports)
    m = pooled(reports, "peak", "corpus")
    n = sum(r.n_queries for r in reports)
    print(
        f"\nencoder confusions, all sets: {confused} of {n} queries "
        f"(max pooling cannot put the right video first for them: at most "
        f"{100 * (n - confused) / n:.1f} % right video first)"
    )
    print(
        f"\ntargets at default settings: right video first {m['video_r1']:.1f} % (>= 85), "
        f"R1@IoU0.5 {m['r1_0.5']:.1f} % (>= 75), mIoU {m['miou']:.3f} (>= 0.70)"
    )


# --- part 2 -------------------------------------------------------------------------------------
def _ar1(rng: np.random.Generator, n: int, sd: float, rho: float) -> np.ndarray:
    from scipy.signal import lfilter

    return lfilter([1.0], [1.0, -rho], sd * np.sqrt(1 - rho**2) * rng.standard_normal(n))


def _as_frames(scores: np.ndarray) -> np.ndarray:
    """Unit 2-D vectors whose dot product with (1, 0) is ``scores``."""
    s = np.clip(scores, -1, 1)
    return np.stack([s, np.sqrt(1 - s * s)], axis=1)


def part2(trials: int, seed: int = 0) -> None:
    from clipsearch.eval.moments import best_frame_window, temporal_iou
    from clipsearch.search.moments import localize
    from clipsearch.search.video import FrameSets, pool_scores_batch

    rng = np.random.default_rng(seed)
    q = np.array([1.0, 0.0])
    print(
        f"\nsimulated long videos ({trials} trials per row; 30 videos of 12-600 frames; "
        "AR(1) noise sd 0.012, rho 0.7; per-video offset sd 0.01)"
    )
    print(
        "| delta | " + " | ".join(f"{p} R@1" for p in POOLINGS) + " | moment mIoU | "
        "best-frame window mIoU | whole video mIoU |"
    )
    print("|---|" + "---|" * (len(POOLINGS) + 3))
    for delta in (0.03, 0.05):
        hits = dict.fromkeys(POOLINGS, 0)
        ious = {"moments": [], "window": [], "whole": []}
        for _ in range(trials):
            curves, truth = [], None
            for v in range(30):
                n = int(np.exp(rng.uniform(np.log(12), np.log(600))))
                s = 0.2 + rng.normal(0, 0.01) + _ar1(rng, n, 0.012, 0.7)
                if v == 0 or rng.random() < 0.2:
                    m = min(int(rng.integers(3, 16)), n)
                    a = int(rng.integers(0, n - m + 1))
                    s[a : a + m] += delta if v == 0 else delta / 2
                    if v == 0:
                        truth = (float(a), float(a + m))
                curves.append(s)
            sets = FrameSets.from_list([_as_frames(s) for s in curves])
            for p in POOLINGS:
                hits[p] += int(np.argmax(pool_scores_batch(q, sets, p)[0]) == 0)
            s = curves[0]
            t = np.arange(len(s)) + 0.5
            moment = localize(t, s, duration=float(len(s)))
            ious["moments"].append(temporal_iou((moment.start, moment.end), [truth]))
            w = best_frame_window(t, s, duration=float(len(s)), width=9.0)
            ious["window"].append(temporal_iou(w, [truth]))
            ious["whole"].append(temporal_iou((0.0, float(len(s))), [truth]))
        print(
            f"| {delta} | "
            + " | ".join(f"{100 * hits[p] / trials:.1f}" for p in POOLINGS)
            + f" | {np.mean(ious['moments']):.3f} | {np.mean(ious['window']):.3f} | "
            f"{np.mean(ious['whole']):.3f} |"
        )


def part3(repeats: int = 30) -> None:
    """Time to localise one video's moments by its frame count: the segmentation (up to
    3 moments, with shot boundaries) against the previous rule, same curves, same run."""
    from clipsearch.search.moments import find_moments

    rng = np.random.default_rng(0)
    print(f"\nlocalisation time per video (median of {repeats}, ms)")
    print("| frames | segmentation | previous rule | ratio |")
    print("|---|---|---|---|")
    for n in (12, 60, 300, 512):
        t = np.arange(n) + 0.5
        s = 0.2 + _ar1(rng, n, 0.012, 0.7)
        s[n // 3 : n // 3 + max(2, n // 20)] += 0.05
        shots = [(0.0, n / 3), (n / 3, 2 * n / 3), (2 * n / 3, float(n))]
        times = {"new": [], "old": []}
        for _ in range(repeats):
            for key in ("new", "old"):
                t0 = time.perf_counter()
                if key == "new":
                    find_moments(t, s, duration=float(n), n=3, shots=shots)
                else:
                    previous_rule(t, s, float(n))
                times[key].append(time.perf_counter() - t0)
        new, old = (1000 * float(np.median(times[k])) for k in ("new", "old"))
        print(f"| {n} | {new:.2f} | {old:.2f} | {new / old:.1f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="one synthetic set, 300 simulations")
    ap.add_argument("--sets", type=int, default=3, help="synthetic sets (seeds 0..N-1)")
    ap.add_argument("--harder", action="store_true", help="queries colour-shifted 1±0.15, ±12")
    ap.add_argument("--trials", type=int, default=1000, help="simulations per row (part 2)")
    ap.add_argument("--no-synthetic", action="store_true", help="only the simulation")
    args = ap.parse_args(argv)
    if not args.no_synthetic:
        part1(list(range(1 if args.quick else args.sets)), args.harder)
    part2(300 if args.quick else args.trials)
    part3()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
