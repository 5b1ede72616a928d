"""Catalog I/O benchmark: write throughput and bulk reads at 100k / 1M x 512 vectors.

    python benchmarks/catalog_io.py [--quick] [--n 1000000] [--dim 512]

Baselines measured in the same run: a bare sqlite3 executemany of the same blobs into
a one-table database with the same pragmas (write), and np.load of the same fp16
matrix from a .npy file (read). Prints wall and CPU seconds; the ratio is catalog CPU /
baseline CPU (CPU time is the figure to trust on a shared machine).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipsearch.store import Catalog, ItemFilter, ItemWrite, ModelBinding


def _writes(
    rng: np.random.Generator, start: int, count: int, dim: int, root: int
) -> list[ItemWrite]:
    out = []
    for i in range(start, start + count):
        v = rng.standard_normal((1, dim), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        out.append(
            ItemWrite(
                path=f"/archive/{2015 + i % 10}/{i:08d}.jpg",
                root_id=root,
                kind="image" if i % 10 else "video",
                size=1000 + i,
                mtime_ns=i * 10**9,
                content_hash=f"{i:016x}",
                status="ok",
                vectors=v,
            )
        )
    return out


@dataclass
class Row:
    what: str
    wall: float  # catalog, seconds
    cpu: float  # catalog, CPU seconds of this process
    base_wall: float = float("nan")  # baseline, seconds
    base_cpu: float = float("nan")


def _timed(fn, repeat: int = 1):
    """(best wall s, best CPU s, result) over ``repeat`` runs."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, out


def _bare_write(path: Path, n: int, dim: int, batch: int) -> tuple[float, float]:
    """Baseline: the same number of fp16 blobs into a one-table SQLite file, same pragmas."""
    base = sqlite3.connect(path, isolation_level=None)
    base.execute("PRAGMA journal_mode=WAL")
    base.execute("PRAGMA synchronous=FULL")
    base.execute("CREATE TABLE v (id INTEGER PRIMARY KEY, item INTEGER, t REAL, vector BLOB)")
    blob = np.zeros(dim, dtype="<f2").tobytes()
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, n, batch):
        m = min(batch, n - start)
        base.execute("BEGIN")
        base.executemany(
            "INSERT INTO v (item, t, vector) VALUES (?, NULL, ?)",
            ((start + j, blob) for j in range(m)),
        )
        base.execute("COMMIT")
    out = time.perf_counter() - t0, time.process_time() - c0
    base.close()
    return out


def run(n: int, dim: int, batch: int, tmp: Path) -> list[Row]:
    rng = np.random.default_rng(0)
    lib = tmp / f"lib{n}"
    rows: list[Row] = []
    with Catalog.open(lib) as cat:
        cat.bind_model(ModelBinding("bench", "bench-fp", dim))
        root = cat.add_root("/archive")
        wall = cpu = 0.0
        for start in range(0, n, batch):
            ws = _writes(rng, start, min(batch, n - start), dim, root)  # not timed
            w, c, _ = _timed(lambda ws=ws: cat.write_items(ws))
            wall, cpu = wall + w, cpu + c
        bw, bc = _bare_write(tmp / f"bare{n}.sqlite", n, dim, batch)
        rows.append(Row(f"write {n} items (batches of {batch})", wall, cpu, bw, bc))

        w, c, table = _timed(cat.load_vectors)
        npy = tmp / f"m{n}.npy"
        np.save(npy, table.vectors)
        bw, bc, _ = _timed(lambda: np.load(npy))
        rows.append(Row("load_vectors (all rows) vs np.load", w, c, bw, bc))
        w, c, ids = _timed(cat.vector_ids, 3)
        rows.append(Row("vector_ids", w, c))
        pick = rng.choice(ids, size=min(1000, len(ids)), replace=False)
        rows.append(
            Row("fetch_vectors 1000 random ids", *_timed(lambda: cat.fetch_vectors(pick), 3)[:2])
        )
        new = ids[-min(10000, len(ids)) :]
        rows.append(
            Row(
                f"fetch_vectors {len(new)} newest ids",
                *_timed(lambda: cat.fetch_vectors(new), 3)[:2],
            )
        )
        rows.append(
            Row(
                "items_for_vectors 256 ids",
                *_timed(lambda: cat.items_for_vectors(pick[:256]), 3)[:2],
            )
        )
        for clause in ("kind:video", "path:/archive/2019/*", "path:*/000012*", "size<2000"):
            flt = ItemFilter.parse([clause])
            w, c, got = _timed(lambda flt=flt: cat.vector_ids_where(flt), 3)
            rows.append(Row(f"vector_ids_where {clause} ({len(got)} ids)", w, c))
    size = (lib / "catalog.sqlite").stat().st_size / 2**20  # closed: WAL checkpointed away
    rows.append(
        Row("MiB on disk: catalog vs raw fp16", size, float("nan"), table.vectors.nbytes / 2**20)
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="10k rows only")
    ap.add_argument("--n", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1024)
    args = ap.parse_args(argv)
    sizes = [10_000] if args.quick else args.n
    tmp = Path(tempfile.mkdtemp(prefix="catalog-bench-"))
    try:
        for n in sizes:
            print(f"\n{n} x {args.dim} fp16 vectors (one image item per vector)")
            print(
                f"{'operation':<50} {'catalog s':>10} {'cpu s':>8} {'baseline s':>10} "
                f"{'cpu s':>8} {'ratio':>6}"
            )
            for r in run(n, args.dim, args.batch, tmp):
                ratio = r.cpu / r.base_cpu if r.base_cpu > 0 else r.wall / r.base_wall
                print(
                    f"{r.what:<50} {r.wall:>10.3f} {r.cpu:>8.3f} {r.base_wall:>10.3f} "
                    f"{r.base_cpu:>8.3f} {ratio:>6.2f}"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
