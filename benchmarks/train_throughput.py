"""Contrastive training throughput (pairs/s) and memory, against a plain open_clip step.

    python benchmarks/train_throughput.py            # logical batch 64, 3 timed steps each
    python benchmarks/train_throughput.py --quick    # logical batch 16, 2 timed steps each

Model: open_clip ViT-B-32 with random weights (seed 0, fp32 master weights); inputs are
random tensors (224x224 pixels, 77 tokens), so only the training step is timed.

Variants (each gets a fresh copy of the same model and one untimed warm-up step):
- baseline: the plain open_clip step: ``model(images, texts)`` -> ``open_clip.loss.ClipLoss``
  -> backward -> AdamW step -> logit-scale clamp (what ``open_clip_train`` does, fp32);
- ours fp32: ``clipsearch.train.gradcache.full_batch_step`` + AdamW + clamp;
- ours bf16: the same under ``torch.autocast("cpu", bfloat16)`` (weights stay fp32);
- ours gradcache: ``cached_step`` with micro-batch 16 (``--quick``: 8), fp32;
- ours gradcache bf16: both.
Ratios are pairs/s against the baseline of the same run.

Memory (``--memory``): each measurement runs in a fresh subprocess (one warm-up step,
then the high-water mark is reset through ``/proc/self/clear_refs`` and one more step is
measured), so no earlier variant's allocations inflate it. Gradient caching and plain
steps are measured at two logical batch sizes and extrapolated linearly to 1024 pairs
(with caching, what grows with the logical batch is the input pixels, 0.6 MB/pair in
fp32, and the cached embeddings). The loss column shows baseline and ours compute the
same thing (equal in fp32).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipsearch.train.gradcache import cached_step, full_batch_step
from clipsearch.train.loss import clamp_logit_scale_, clip_loss
from clipsearch.train.trainable import batch_model


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_model():
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32", pretrained=None)
    return model.train()


def make_batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(n, 3, 224, 224, generator=g)
    tokens = torch.randint(1, 49405, (n, 77), generator=g)
    lengths = torch.randint(8, 30, (n,), generator=g)
    for i, k in enumerate(lengths.tolist()):
        tokens[i, 0] = 49406
        tokens[i, k] = 49407
        tokens[i, k + 1 :] = 0
    return pixels, tokens


def baseline_step(model, optimizer, loss, pixels, tokens) -> float:
    optimizer.zero_grad(set_to_none=True)
    image_features, text_features, logit_scale = model(pixels, tokens)
    total = loss(image_features, text_features, logit_scale)
    total.backward()
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    return float(total.detach())


def ours_step(model, optimizer, bm, pixels, tokens, *, micro: int | None, bf16: bool) -> float:
    autocast = (
        (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    )
    optimizer.zero_grad(set_to_none=True)
    if micro:
        loss = cached_step(
            bm, pixels, tokens, loss_fn=clip_loss, micro_batch=micro, autocast=autocast
        )
    else:
        loss = full_batch_step(bm, pixels, tokens, loss_fn=clip_loss, autocast=autocast)
    optimizer.step()
    clamp_logit_scale_(model.logit_scale)
    return float(loss)


def measure(template, name: str, batch: int, steps: int, *, micro=None, bf16=False) -> dict:
    from open_clip.loss import ClipLoss

    model = copy.deepcopy(template)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.2)
    pixels, tokens = make_batch(batch)
    if name == "baseline":
        loss = ClipLoss()

        def step():
            return baseline_step(model, optimizer, loss, pixels, tokens)
    else:
        bm = batch_model(model, video=False, image_trainable=True, text_trainable=True)

        def step():
            return ours_step(model, optimizer, bm, pixels, tokens, micro=micro, bf16=bf16)

    step()  # warm-up (allocations, AdamW state)
    t0 = time.perf_counter()
    losses = [step() for _ in range(steps)]
    seconds = time.perf_counter() - t0
    out = {
        "name": name,
        "pairs_per_s": batch * steps / seconds,
        "seconds_per_step": seconds / steps,
        "loss": losses[-1],
    }
    return out


def probe_memory(batch: int, micro: int) -> dict:
    """Peak RSS of one training step in this (fresh) process; micro 0 = no caching."""
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.2)
    bm = batch_model(model, video=False, image_trainable=True, text_trainable=True)
    pixels, tokens = make_batch(batch)
    ours_step(model, optimizer, bm, pixels, tokens, micro=micro or None, bf16=False)
    # Reset the high-water mark to what is resident now: weights, grads (set to None by
    # the next zero_grad), AdamW moments and the inputs; then measure one more step.
    _reset_peak_rss()
    static = _peak_rss_mib()
    t0 = time.perf_counter()
    ours_step(model, optimizer, bm, pixels, tokens, micro=micro or None, bf16=False)
    return {
        "batch": batch,
        "micro": micro,
        "static_mib": static,
        "peak_mib": _peak_rss_mib(),
        "seconds": time.perf_counter() - t0,
    }


def memory_extrapolation(micro: int, sizes: tuple[int, int], threads: int | None) -> None:
    """Each measurement in a fresh subprocess, so no earlier allocation inflates the peak."""
    import json
    import subprocess

    def probe(batch: int, m: int) -> dict:
        cmd = [sys.executable, __file__, "--probe-memory", str(batch), str(m)]
        if threads:
            cmd += ["--threads", str(threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    print("\nPeak memory of one step (fresh process each), ViT-B-32 fp32:")
    print(
        f"{'logical batch':>14s} {'micro':>6s} {'static MiB':>11s} {'peak MiB':>9s} {'s/step':>7s}"
    )
    results = {}
    for m in (micro, 0):
        for b in sizes:
            r = probe(b, m)
            results[(b, m)] = r
            print(
                f"{b:14d} {m or '-':>6} {r['static_mib']:11.0f} {r['peak_mib']:9.0f} "
                f"{r['seconds']:7.1f}",
                flush=True,
            )
    b1, b2 = sizes
    for m, label in ((micro, f"gradient caching (micro {micro})"), (0, "no caching")):
        p1, p2 = results[(b1, m)]["peak_mib"], results[(b2, m)]["peak_mib"]
        slope = (p2 - p1) / (b2 - b1)
        print(
            f"{label}: {slope:.2f} MiB per extra pair -> estimated peak at 1024 pairs: "
            f"{p2 + slope * (1024 - b2):,.0f} MiB"
        )
    print(f"(input pixels alone: {3 * 224 * 224 * 4 / 2**20:.2f} MiB per pair)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="logical batch 16, 2 timed steps")
    p.add_argument("--batch", type=int, help="logical batch (default 64, --quick 16)")
    p.add_argument("--steps", type=int, help="timed steps per variant (default 3, --quick 2)")
    p.add_argument("--micro", type=int, help="gradient-caching micro-batch (default 16, --quick 8)")
    p.add_argument("--memory", action="store_true", help="also extrapolate memory to 1024 pairs")
    p.add_argument("--memory-only", action="store_true", help="only the memory measurement")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--probe-memory", nargs=2, type=int, metavar=("BATCH", "MICRO"), help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)
    if args.probe_memory:
        import json

        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(probe_memory(*args.probe_memory)))
        return 0
    batch = args.batch or (16 if args.quick else 64)
    steps = args.steps or (2 if args.quick else 3)
    micro = args.micro or (8 if args.quick else 16)
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.memory_only:
        memory_extrapolation(
            micro, (2 * micro, 4 * micro) if args.quick else (64, 128), args.threads
        )
        return 0
    template = make_model()
    print(
        f"ViT-B-32 (random weights), logical batch {batch}, {steps} timed steps, "
        f"{torch.get_num_threads()} torch threads"
    )
    variants = [
        ("baseline", {}),
        ("ours fp32", {}),
        ("ours bf16", {"bf16": True}),
        (f"ours gradcache {micro}", {"micro": micro}),
        (f"ours gradcache {micro} bf16", {"micro": micro, "bf16": True}),
    ]
    rows = []
    for name, kw in variants:
        rows.append(measure(template, name, batch, steps, **kw))
        r = rows[-1]
        print(f"  measured {name}: {r['pairs_per_s']:.2f} pairs/s", file=sys.stderr, flush=True)
    base = rows[0]["pairs_per_s"]
    print(f"\n{'variant':28s} {'pairs/s':>9s} {'s/step':>8s} {'vs base':>8s} {'loss':>8s}")
    for r in rows:
        print(
            f"{r['name']:28s} {r['pairs_per_s']:9.2f} {r['seconds_per_step']:8.2f} "
            f"{r['pairs_per_s'] / base:7.2f}x {r['loss']:8.4f}"
        )
    if args.memory:
        del template
        memory_extrapolation(
            micro, (2 * micro, 4 * micro) if args.quick else (64, 128), args.threads
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
