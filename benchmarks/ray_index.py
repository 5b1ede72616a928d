"""Ray Data indexing (2 local workers) against the single-process indexer, same run.

    python benchmarks/ray_index.py            # 200 photos (1920x1080 and 4000x3000)
    python benchmarks/ray_index.py --quick    # 48 photos

Model: open_clip ViT-B-32 with random weights (seed 0) in a local checkpoint, as in
benchmarks/index_throughput.py (no pretrained weights here; speed does not depend on them).
Baseline: `clipsearch index` in this process (decode threads + one encoder), measured in
the same run on the same files. Then `index --engine ray --workers 2`: a local Ray
instance started for the run (as the CLI does), one model per actor, 1 CPU per actor.

Printed: end-to-end files/s for both and their ratio; Ray's time to its first committed
block (cluster start + actor start + model load: the fixed cost of a run); the
steady-state files/s between the first and the last committed block; the overhead per
file in steady state (Ray's seconds per file minus the local indexer's); and the lowest
cosine between the two libraries' vectors (they must agree to >= 0.999).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from index_throughput import checkpoint
from photos import photo_set

from clipsearch.ingest import BatchWritten
from clipsearch.ingest.ray_engine import RaySettings
from clipsearch.library import Library

OUT = Path(__file__).parent / "out"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def timed_index(lib: Library, folder: Path, **kw) -> dict[str, float]:
    """Index ``folder``; wall time, and the times of the first and last committed batch."""
    marks: list[tuple[float, int]] = []

    def on_event(event) -> None:
        if isinstance(event, BatchWritten):
            marks.append((time.perf_counter(), event.done))

    t0 = time.perf_counter()
    report = lib.index([folder], on_event=on_event, **kw)
    total = time.perf_counter() - t0
    assert report.added == report.scanned and not report.failed, report.to_dict()
    (t_first, n_first), (t_last, n_last) = marks[0], marks[-1]
    steady = (n_last - n_first) / (t_last - t_first) if t_last > t_first else float("nan")
    return {
        "total_s": total,
        "files": report.added,
        "first_block_s": t_first - t0,
        "steady_fps": steady,
    }


def vectors_by_path(lib: Library) -> dict[str, np.ndarray]:
    table = lib.catalog.load_vectors()
    records = lib.catalog.items(table.item_ids.tolist())
    return {
        records[i].path: table.vectors[row].astype(np.float32)
        for row, i in enumerate(table.item_ids.tolist())
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--files-per-task", type=int, default=16)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args(argv)
    n = 48 if args.quick else args.n
    photos = photo_set(OUT / "photos", n, [(1920, 1080), (4000, 3000)])
    folder = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    for p in photos:
        (folder / p.name).symlink_to(p)
    ckpt = str(checkpoint())
    print(f"{n} photos, ViT-B-32 (random weights), precision {args.precision}")
    print(f"load average before: {load_average()}")

    with tempfile.TemporaryDirectory() as tmp:
        local = Library(Path(tmp) / "local", model=ckpt, precision=args.precision)
        local.encoder  # noqa: B018 — model load out of the timing, as Ray's driver does too
        base = timed_index(local, folder)
        remote = Library(Path(tmp) / "ray", model=ckpt, precision=args.precision)
        remote.encoder  # noqa: B018
        ray = timed_index(
            remote,
            folder,
            ray=RaySettings(workers=args.workers, files_per_task=args.files_per_task),
        )
        a, b = vectors_by_path(local), vectors_by_path(remote)
        cos = min(float(a[p] @ b[p] / np.linalg.norm(a[p]) / np.linalg.norm(b[p])) for p in a)
        local.close()
        remote.close()

    local_fps = base["files"] / base["total_s"]
    ray_fps = ray["files"] / ray["total_s"]
    fixed = ray["total_s"] - ray["files"] / ray["steady_fps"]
    per_file_ms = 1e3 * (1 / ray["steady_fps"] - 1 / base["steady_fps"])
    print()
    print(f"{'':32} {'files/s':>9} {'steady files/s':>15} {'first block s':>14} {'total s':>8}")
    print(
        f"{'local indexer (baseline)':32} {local_fps:9.2f} {base['steady_fps']:15.2f} "
        f"{base['first_block_s']:14.1f} {base['total_s']:8.1f}"
    )
    print(
        f"{f'ray, {args.workers} workers':32} {ray_fps:9.2f} {ray['steady_fps']:15.2f} "
        f"{ray['first_block_s']:14.1f} {ray['total_s']:8.1f}"
    )
    print()
    print(f"ratio ray/local end to end:   {ray_fps / local_fps:.2f}x")
    print(f"ratio ray/local steady state: {ray['steady_fps'] / base['steady_fps']:.2f}x")
    print(f"ray fixed cost per run:       {fixed:.1f} s (cluster + actors + model loads)")
    print(f"ray overhead per file:        {per_file_ms:+.1f} ms in steady state")
    print(f"lowest cosine ray vs local:   {cos:.6f}")
    print(f"load average after: {load_average()}")
    return 0 if cos >= 0.999 else 1


if __name__ == "__main__":
    raise SystemExit(main())
