"""Video indexing throughput by sampler and decode mode, against a same-run naive baseline.

    python benchmarks/video_throughput.py              # ten 10 s 640x360 clips + 10 min 1080p
    python benchmarks/video_throughput.py --quick      # three clips + 1 min 1080p
    python benchmarks/video_throughput.py --crossover  # sequential vs seek table (docs/video.md)

Videos are generated with PyAV/libx264 (superfast, crf 20, B-frames on, fixed GOP of 2 s)
from a panning random texture, so the bitrate looks like footage; 25 fps; cached in
benchmarks/out/.

Per row: seconds of video per second ("x realtime"), with decode (clipsearch's
`decode_frames`: sampling, downscale to 448, rotation) and encode (open_clip ViT-B-32,
random weights cast to bf16, batch 32, the model's own preprocess) timed separately;
total = decode + encode (a pipeline overlaps them, but on 2 cores they share the CPU).
Each time is given as wall seconds and as process CPU seconds: on a shared, busy machine
the wall times swing wildly while CPU time stays put, and "xRT idle est." = video seconds
/ (CPU seconds / cores) estimates what an idle machine would do.
Baseline, same run: `for f in container.decode(video=0)` (codec threads on), every frame
converted with `to_image()`, the frame at/after each target kept, then the same encoder.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = Path(__file__).parent / "out"
COLOURS = ["red", "blue", "green", "yellow", "magenta", "cyan"]
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class Timer:
    """Wall and process-CPU seconds of a block."""

    def __enter__(self) -> Timer:
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.w0
        self.cpu = time.process_time() - self.c0


def make(path: Path, seconds: float, size: tuple[int, int], gop: int, shift: int = 0) -> Path:
    from tests.videogen import make_video

    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        n = max(1, round(seconds / 5))  # a scene cut every 5 s
        scenes = [(COLOURS[(i + shift) % len(COLOURS)], seconds / n) for i in range(n)]
        tmp = path.with_suffix(".part.mp4")
        make_video(tmp, scenes, size=size, gop=gop, texture=True, preset="superfast", crf=20)
        tmp.rename(path)
    return path


def video_sets(quick: bool) -> dict[str, list[Path]]:
    n_clips, minutes = (3, 1) if quick else (10, 10)
    clips = [
        make(OUT / f"clip{i}_10s_640x360_g50.mp4", 10, (640, 360), 50, shift=i)
        for i in range(n_clips)
    ]
    long_ = make(OUT / f"long_{minutes}min_1920x1080_g50.mp4", 60 * minutes, (1920, 1080), 50)
    return {f"{n_clips} x 10 s 360p": clips, f"{minutes} min 1080p": [long_]}


class ClipEncoder:
    """open_clip ViT-B-32, random weights (seed 0) cast to bf16; batches of 32."""

    def __init__(self, batch: int = 32) -> None:
        import open_clip
        import torch
        from PIL import Image

        torch.manual_seed(0)
        self.torch = torch
        self.model = open_clip.create_model("ViT-B-32").eval().to(torch.bfloat16)
        self.preprocess = open_clip.image_transform(self.model.visual.image_size, is_train=False)
        self.batch = batch
        self([Image.new("RGB", (448, 252))] * batch)  # warm-up (oneDNN primitives)

    def __call__(self, images: list) -> Timer:
        torch = self.torch
        with Timer() as t, torch.inference_mode():
            for i in range(0, len(images), self.batch):
                x = torch.stack([self.preprocess(im) for im in images[i : i + self.batch]])
                self.model.encode_image(x.to(torch.bfloat16))
        return t


def ours(paths: list[Path], sampler: str, mode: str, threads: int):
    from clipsearch.media.video import decode_frames

    images, seconds, modes = [], 0.0, set()
    with Timer() as t:
        for p in paths:
            d = decode_frames(p, sampler, mode=mode, threads=threads)
            images += [f.image for f in d.frames]
            seconds += d.info.duration
            modes.add(d.mode)
    return images, t, seconds, "/".join(sorted(modes))


def baseline(paths: list[Path], sampler: str):
    """Decode every frame with PyAV, convert each to an image, keep the sampled ones."""
    import av

    from clipsearch.media.sampling import FrameSampler

    images, seconds = [], 0.0
    with Timer() as t:
        for p in paths:
            with av.open(str(p)) as c:
                s = c.streams.video[0]
                s.thread_type = "AUTO"
                duration = float(s.duration * s.time_base)
                seconds += duration
                targets = list(FrameSampler.parse(sampler).timestamps(duration))
                for f in c.decode(video=0):
                    image = f.to_image()
                    if targets and f.time >= targets[0] - 1e-6:
                        images.append(image)
                        while targets and f.time >= targets[0] - 1e-6:
                            targets.pop(0)
    return images, t, seconds


def _open_threads(path: Path, threads: int):
    import av

    c = av.open(str(path))
    s = c.streams.video[0]
    s.codec_context.thread_count = threads
    s.codec_context.thread_type = "NONE" if threads == 1 else "AUTO"
    return c, s


def decode_rate(path: Path, threads: int) -> tuple[float, float]:
    """Plain PyAV decode of every frame (no conversion): (frames per wall s, per CPU s)."""
    c, s = _open_threads(path, threads)
    with c, Timer() as t:
        n = sum(1 for _ in c.decode(s))
    return n / t.wall, n / t.cpu


def seek_overhead(path: Path, threads: int, k: int = 20) -> float:
    """CPU cost of one seek + decoding up to the first frame out, in frame decodes."""
    per_frame = 1 / decode_rate(path, threads)[1]
    c, s = _open_threads(path, threads)
    with c:
        kfs = [e.timestamp for e in s.index_entries if e.is_keyframe]
        picks = np.random.default_rng(0).choice(kfs, size=min(k, len(kfs)), replace=False)
        with Timer() as t:
            for ts in picks:
                c.seek(int(ts), stream=s)
                next(c.decode(s))
    return t.cpu / len(picks) / per_frame


HEAD = ("videos", "sampler", "mode", "frames", "video s", "decode s", "encode s",
        "xRT wall", "decode CPU s", "encode CPU s", "xRT idle est.", "vs base", "decode vs base")  # fmt: skip
WIDTHS = (16, 10, 20, 6, 7, 8, 8, 8, 12, 12, 13, 7, 14)


def row(cells) -> str:
    return "  ".join(
        str(c).ljust(w) if i < 3 else str(c).rjust(w)
        for i, (c, w) in enumerate(zip(cells, WIDTHS, strict=True))
    )


def throughput(quick: bool, threads: int, encode: bool) -> None:
    sets = video_sets(quick)
    enc = ClipEncoder() if encode else None
    zero = Timer()
    zero.wall = zero.cpu = 0.0
    print(f"{CORES} cores visible; codec threads={threads or 'auto'}; load average "
          f"{os.getloadavg()[0]:.1f} at start")  # fmt: skip
    print(row(HEAD))
    for name, paths in sets.items():
        for sampler in ("uniform:12", "fps:1", "shots"):
            base_idle = base_dec = None
            runs = [(m, m) for m in ("auto", "sequential", "seek", "keyframes")]
            if sampler == "shots":  # shot detection decodes everything anyway
                runs = [("auto", "auto"), ("sequential", "sequential")]
            else:
                runs.insert(0, ("baseline", "baseline (decode all)"))
            for mode, label in runs:
                if mode == "baseline":
                    images, dec, secs = baseline(paths, sampler)
                else:
                    images, dec, secs, used = ours(paths, sampler, mode, threads)
                    label = f"auto->{used}" if mode == "auto" else used
                    label = "keyframes (APPROX)" if mode == "keyframes" else label
                e = enc(images) if enc else zero
                idle = secs / ((dec.cpu + e.cpu) / CORES)
                if mode == "baseline":
                    base_idle, base_dec = idle, dec.cpu
                ratio = f"{idle / base_idle:.2f}x" if base_idle else "-"
                dec_ratio = f"{base_dec / dec.cpu:.2f}x" if base_dec else "-"
                print(row((name, sampler, label, len(images), f"{secs:.0f}", f"{dec.wall:.2f}",
                           f"{e.wall:.2f}", f"{secs / (dec.wall + e.wall):.1f}", f"{dec.cpu:.2f}",
                           f"{e.cpu:.2f}", f"{idle:.1f}", ratio, dec_ratio)), flush=True)  # fmt: skip
    long_ = sets[list(sets)[-1]][0]
    print("\nPlain PyAV decode of every frame of the 1080p video (no conversion):")
    for t in (1, 0):
        wall, cpu = decode_rate(long_, t)
        kind = "one thread" if t == 1 else "FFmpeg auto: frame+slice"
        print(f"  threads={t} ({kind}): {wall:.0f} frames/wall s, {cpu:.0f} frames/CPU s")
    print(
        f"  one seek + restart = {seek_overhead(long_, 0):.1f} frame decodes of CPU (threads auto)"
    )
    print(
        "vs base = ratio of 'xRT idle est.'; decode vs base = baseline decode CPU / ours "
        "(CPU-based: wall times on a busy machine are noise)"
    )


def seek_every_target(path: Path, sampler: str) -> int:
    """Naive per-target seeking (plain PyAV): seek before every target, decode up to it."""
    from clipsearch.media.sampling import FrameSampler

    c, s = _open_threads(path, 0)
    kept = 0
    with c:
        tb, start = s.time_base, s.start_time or 0
        for t in FrameSampler.parse(sampler).timestamps(float(s.duration * tb)):
            c.seek(start + int(t / tb), stream=s)
            for f in c.decode(s):
                if (f.pts - start) * tb >= t - 1e-6:
                    f.to_image(width=448, height=252)
                    kept += 1
                    break
    return kept


def crossover() -> None:
    """Sequential vs seek decode CPU time over lengths x GOPs x samplers, and auto's pick."""
    from clipsearch.media.video import FrameReader, decode_frames

    print(
        "length  GOP     sampler     frames  sequential CPU s  seek CPU s  faster      auto picks"
    )
    for seconds in (10, 30, 120):
        for gop_s in (0.5, 2.0, 10.0):
            gop = int(gop_s * 25)
            p = make(OUT / f"x_{seconds}s_640x360_g{gop}.mp4", seconds, (640, 360), gop)
            for sampler in ("uniform:12", "fps:1", "fps:4"):
                cpu = {}
                for mode in ("sequential", "seek"):
                    runs = []
                    for _ in range(3):
                        with Timer() as t:
                            d = decode_frames(p, sampler, mode=mode)
                        runs.append(t.cpu)
                    cpu[mode] = float(np.median(runs))
                with FrameReader(p, sampler) as r:
                    picked = r.mode
                with Timer() as naive:
                    seek_every_target(p, sampler)
                faster = min(cpu, key=cpu.get)
                ok = (
                    ""
                    if picked == faster or abs(cpu["seek"] / cpu["sequential"] - 1) < 0.1
                    else " !"
                )
                print(f"{seconds:>4} s  {gop_s:>4} s  {sampler:<10} {len(d.frames):>6}  "
                      f"{cpu['sequential']:>16.3f}  {cpu['seek']:>10.3f}  {faster:<10}  {picked + ok:<12}"
                      f"{naive.cpu:>10.3f}",
                      flush=True)  # fmt: skip
    print("640x360, 25 fps, x264 superfast crf 20 with B-frames; median of 3 runs; '!' = auto")
    print("picked the slower mode by more than 10 %. seek-every-target: plain PyAV, one run.")


def cut_overhead(quick: bool, repeats: int = 5) -> None:
    """CPU cost of shot-boundary detection on the decoded frames: decode_frames with and
    without it, same files, interleaved, one codec thread (as the indexer decodes), the
    best of ``repeats`` CPU times each."""
    from clipsearch.media.video import decode_frames

    sets = video_sets(quick)
    print(f"shot-cut detection overhead (best of {repeats}, CPU s, codec threads=1)")
    print("| videos | sampler | mode | without cuts | with cuts | ratio | cuts found |")
    print("|---|---|---|---|---|---|---|")
    for name, paths in sets.items():
        for sampler in ("uniform:12", "fps:1"):
            best = {False: np.inf, True: np.inf}
            found, modes = 0, set()
            for _ in range(repeats):
                for detect in (False, True):
                    shots = []
                    with Timer() as t:
                        for p in paths:
                            d = decode_frames(p, sampler, threads=1, detect_cuts=detect)
                            modes.add(d.mode)
                            shots.append(d.shots)
                    best[detect] = min(best[detect], t.cpu)
                    if detect:
                        found = sum(len(s) - 1 for s in shots if s)
            print(
                f"| {name} | {sampler} | {'/'.join(sorted(modes))} | {best[False]:.3f} | "
                f"{best[True]:.3f} | {best[True] / best[False]:.3f} | {found} |"
            )


def index_cut_overhead(quick: bool, repeats: int = 3) -> None:
    """End to end: `Library.index` of the same videos (decode, cut detection, ViT-B-32
    encode with random weights, store) with cut detection on, and with it switched off
    (the detector's per-frame work replaced by nothing: today's cost), interleaved; best
    of ``repeats`` wall and process-CPU seconds each."""
    import tempfile

    from index_throughput import checkpoint

    from clipsearch import Library
    from clipsearch.media import cuts
    from clipsearch.media.video import probe_video

    ckpt = checkpoint()
    sets = video_sets(quick)
    paths = [p for ps in sets.values() for p in ps]
    seconds = sum(probe_video(p).duration for p in paths)
    real = (cuts.CutDetector.observe, cuts.CutDetector.keep)
    best = {True: [np.inf, np.inf], False: [np.inf, np.inf]}
    found = 0
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "videos"
        src.mkdir()
        for p in paths:
            (src / p.name).symlink_to(p.resolve())
        for r in range(repeats):
            for detect in (False, True):
                if detect:
                    cuts.CutDetector.observe, cuts.CutDetector.keep = real
                else:
                    cuts.CutDetector.observe = cuts.CutDetector.keep = lambda self, t, f: None
                with Library(Path(tmp) / f"lib-{detect}-{r}", model=str(ckpt)) as lib:
                    _ = lib.encoder  # loading the model is not indexing
                    with Timer() as t:
                        report = lib.index([src])
                    assert report.failed == 0, report
                    if detect:
                        found = sum(len(c) for c in lib.catalog.cuts(range(1, 100)).values())
                best[detect] = [min(best[detect][0], t.wall), min(best[detect][1], t.cpu)]
        cuts.CutDetector.observe, cuts.CutDetector.keep = real
    print(f"\nindexing {len(paths)} videos ({seconds:.0f} s of video), best of {repeats}")
    print("| cut detection | wall s | CPU s |")
    print("|---|---|---|")
    for detect in (False, True):
        print(
            f"| {'on' if detect else 'off (today)'} | {best[detect][0]:.2f} | {best[detect][1]:.2f} |"
        )
    print(
        f"ratio on/off: wall {best[True][0] / best[False][0]:.3f}, "
        f"CPU {best[True][1] / best[False][1]:.3f} (target <= 1.10); {found} cuts stored"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="three clips and a 1-minute 1080p video")
    ap.add_argument("--threads", type=int, default=0, help="codec threads (0 = FFmpeg auto)")
    ap.add_argument("--no-encode", action="store_true", help="decode only")
    ap.add_argument("--crossover", action="store_true", help="only the sequential-vs-seek table")
    ap.add_argument("--cuts", action="store_true", help="only the shot-cut detection overhead")
    ap.add_argument(
        "--index-cuts", action="store_true", help="cut detection's cost in end-to-end indexing"
    )
    args = ap.parse_args(argv)
    if args.cuts:
        cut_overhead(args.quick)
    elif args.index_cuts:
        index_cut_overhead(args.quick)
    elif args.crossover:
        crossover()
    else:
        throughput(args.quick, args.threads, not args.no_encode)


if __name__ == "__main__":
    main()
