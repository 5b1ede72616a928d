"""ANN benchmark: exact and FAISS backends on synthetic clustered 512-d vectors.

    python benchmarks/ann.py --quick                  # 20k vectors, a minute or two
    python benchmarks/ann.py --sizes 100000,1000000   # the target sizes (1M: an hour on 2 cores)

Data: 1000 gaussian clusters, each on its own random 24-d subspace (CLIP embeddings have
a low intrinsic dimension), around unit centres that share a common direction (CLIP
embeddings are anisotropic), spreads drawn in [0.6, 1.2], Zipf-like cluster sizes, a
little isotropic noise, L2-normalised, stored as fp16 like the catalog. Queries: held-out
points of the same clusters, perturbed by isotropic noise of relative norm 0.5.

Per backend: build time, resident bytes per vector, recall@10 against exact search on the
held-out queries (and "stored": the recall the index measured at build time and stores,
on held-out rows that did not tune it — what ``index-info`` shows), p50/p99 latency of single queries, queries/s for batches of 256, and the single-query speedup over
the baseline measured in the same run (a plain numpy fp32 ``X @ q`` + ``argpartition``).
Then a 10M projection from the measured figures. Timings on a shared machine are noisy:
the load average is printed next to the table.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipsearch.index import ExactIndex, FaissIndex, choose_backend, faiss_build
from clipsearch.index.autotune import nb_clusters

K = 10


# -- data -------------------------------------------------------------------------------------
def make_data(n: int, n_queries: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) fp16 stored vectors and (n_queries, dim) fp32 held-out perturbed queries.

    Each cluster is a gaussian on its own random 24-dimensional subspace around its centre
    (CLIP image embeddings have an intrinsic dimension of a few dozen; isotropic 512-d
    clusters would make neighbours nearly equidistant, like random data), plus a little
    isotropic noise; centres share a common direction (anisotropy).
    """
    rng = np.random.default_rng(seed)
    n_clusters, rank = 1000, 24
    common = rng.standard_normal(dim).astype(np.float32)
    common /= np.linalg.norm(common)
    centres = (
        rng.standard_normal((n_clusters, dim)).astype(np.float32) / np.sqrt(dim) + 0.6 * common
    )
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spreads = rng.uniform(0.6, 1.2, n_clusters).astype(np.float32)
    weights = 1.0 / np.arange(1, n_clusters + 1) ** 0.7
    weights /= weights.sum()

    def draw(m: int, extra_noise: float) -> np.ndarray:
        labels = rng.choice(n_clusters, size=m, p=weights)
        out = np.empty((m, dim), dtype=np.float32)
        for c in np.unique(labels):
            where = np.flatnonzero(labels == c)
            basis = (
                np.random.default_rng([seed, int(c)])
                .standard_normal((rank, dim))
                .astype(np.float32)
            )
            basis /= np.linalg.norm(basis, axis=1, keepdims=True)
            z = rng.standard_normal((len(where), rank)).astype(np.float32) / np.sqrt(rank)
            x = centres[c] + spreads[c] * (z @ basis)
            x += 0.15 * rng.standard_normal(x.shape).astype(np.float32) / np.sqrt(dim)
            out[where] = x
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        if extra_noise:
            out += extra_noise * rng.standard_normal(out.shape).astype(np.float32) / np.sqrt(dim)
            out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    stored = draw(n, 0.0).astype(np.float16)
    queries = draw(n_queries, 0.5)
    return stored, queries


# -- the baseline -------------------------------------------------------------------------------
class NumpyBaseline:
    """Exact fp32 search the obvious way: X @ q, argpartition, sort."""

    def __init__(self, x16: np.ndarray) -> None:
        self.x = x16.astype(np.float32)

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        q = np.atleast_2d(q)
        out = np.empty((len(q), k), dtype=np.int64)
        block = 64
        for s in range(0, len(q), block):
            scores = q[s : s + block] @ self.x.T  # (b, N)
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
            out[s : s + block] = np.take_along_axis(top, order, axis=1)
        return out

    @property
    def memory_bytes(self) -> int:
        return self.x.nbytes


# -- measuring ----------------------------------------------------------------------------------
@dataclass
class Row:
    name: str
    build_s: float
    bytes_per_vector: float
    recall: float
    p50_ms: float
    p99_ms: float
    batch_qps: float
    params: str = ""
    tuned: float | None = None  # recall@10 the index stored at build time (index-info's)


def latencies(
    search: Callable[[np.ndarray], object], queries: np.ndarray, max_seconds: float
) -> np.ndarray:
    time.sleep(0.5)  # let the previous backend's spinning worker threads go idle
    for q in queries[:5]:  # warm up
        search(q)
    times = []
    start = time.perf_counter()
    for q in queries:
        t = time.perf_counter()
        search(q)
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > max_seconds and len(times) >= 20:
            break
    return np.array(times) * 1e3


def batch_qps(
    search: Callable[[np.ndarray], object], queries: np.ndarray, max_seconds: float
) -> float:
    batch = queries[:256]
    done, start = 0, time.perf_counter()
    while True:
        search(batch)
        done += len(batch)
        if time.perf_counter() - start > max_seconds:
            break
    return done / (time.perf_counter() - start)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(np.intersect1d(f, t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def backends_for(n: int, quick: bool) -> list[str]:
    nlist = min(
        nb_clusters(n), 4096
    )  # autofaiss says 16384 from 1M on; 4096 keeps 2-core k-means short
    pq_lists = min(nlist, max(64, n // 256))
    names = ["exact", "Flat", "HNSW32", f"IVF{nlist},Flat", f"OPQ64_256,IVF{pq_lists},PQ64x8"]
    if quick:
        names.remove("Flat")
    return names


def run_size(n: int, args: argparse.Namespace) -> list[Row]:
    print(
        f"\n== {n:,} vectors x {args.dim} (fp16), {args.queries} queries; load avg {load_average()}",
        flush=True,
    )
    t = time.perf_counter()
    x16, queries = make_data(n, args.queries, args.dim, args.seed)
    ids = np.arange(n, dtype=np.int64)
    print(f"   data generated in {time.perf_counter() - t:.1f}s", flush=True)
    rows: list[Row] = []

    t = time.perf_counter()
    base = NumpyBaseline(x16)
    build = time.perf_counter() - t
    truth = base.search(queries, K)
    lat = latencies(lambda q: base.search(q, K), queries, args.seconds)
    rows.append(
        Row(
            "numpy fp32 (baseline)",
            build,
            base.memory_bytes / n,
            1.0,
            *np.percentile(lat, [50, 99]),
            batch_qps(lambda q: base.search(q, K), queries, args.seconds),
        )
    )
    print_row(rows[-1], rows[0])
    base = None  # free the fp32 copy before building the others
    gc.collect()

    for name in args.backends or backends_for(n, args.quick):
        t = time.perf_counter()
        try:
            if name == "exact":
                index = ExactIndex(ids, x16)
                label = f"ExactIndex ({index.precision})"
                params = ""
                tuned = None
                mem = index.memory_bytes
            else:
                index = FaissIndex(
                    ids, x16, factory=name, recall_target=args.recall, seed=args.seed
                )
                label = f"FAISS {name}"
                params = ",".join(f"{k}={v}" for k, v in index.params.items())
                tuned = index.info().recall_at_10
                mem = index.memory_bytes - index.rows.nbytes  # rows: memory-mapped in the cache
        except Exception as exc:  # a backend failing must not hide the others
            print(f"   {name}: failed: {exc}", flush=True)
            continue
        build = time.perf_counter() - t
        found = index.search(queries, K).ids
        lat = latencies(lambda q, index=index: index.search(q, K), queries, args.seconds)
        qps = batch_qps(lambda q, index=index: index.search(q, K), queries, args.seconds)
        rows.append(
            Row(
                label,
                build,
                mem / n,
                recall_at_k(found, truth),
                *np.percentile(lat, [50, 99]),
                qps,
                params,
                tuned,
            )
        )
        print_row(rows[-1], rows[0])
        del index
        gc.collect()
    return rows


HEADER = (
    f"{'backend':<34} {'build s':>8} {'B/vec':>7} {'R@10':>6} {'stored':>6} {'p50 ms':>8} {'p99 ms':>8}"
    f" {'x exact':>8} {'q/s @256':>9}  params"
)


def print_row(row: Row, baseline: Row) -> None:
    if row is baseline:
        print(HEADER)
    speedup = baseline.p50_ms / row.p50_ms if row.p50_ms else float("nan")
    print(
        f"{row.name:<34} {row.build_s:8.1f} {row.bytes_per_vector:7.0f} {row.recall:6.3f} "
        f"{'' if row.tuned is None else f'{row.tuned:.3f}':>6} {row.p50_ms:8.2f} {row.p99_ms:8.2f} {speedup:8.1f} {row.batch_qps:9.0f}  {row.params}",
        flush=True,
    )


def project(rows: list[Row], n: int, target: int) -> None:
    """Paper projection to ``target`` vectors from the figures measured at ``n``."""
    f = target / n
    print(f"\n== projection to {target:,} vectors from the {n:,} run (on paper)")
    print(f"{'backend':<34} {'RAM GB':>8} {'p50 ms':>8}  assumption")
    for r in rows:
        ram = r.bytes_per_vector * target / 1e9
        if r.name.startswith(("numpy", "ExactIndex", "FAISS Flat")):
            p50, why = r.p50_ms * f, "a full scan: linear in N"
        elif "HNSW" in r.name:
            p50, why = (
                r.p50_ms * np.log(target) / np.log(n),
                "graph hops grow ~log N at fixed efSearch (recall may need a higher efSearch)",
            )
        elif "IVF" in r.name:
            p50, why = (
                r.p50_ms * np.sqrt(f),
                "lists grow as sqrt(N) when nlist ~ sqrt(N), same nprobe",
            )
        else:
            p50, why = float("nan"), ""
        print(f"{r.name:<34} {ram:8.1f} {p50:8.1f}  {why}")
    budget = 6 << 30
    print(f"choose_backend({target:,}, 512, 6 GiB) -> {choose_backend(target, 512, budget)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", default="100000,1000000", help="comma-separated collection sizes")
    p.add_argument("--quick", action="store_true", help="one 20k run")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=300, help="held-out queries")
    p.add_argument("--recall", type=float, default=0.95, help="recall@10 target for tuning")
    p.add_argument("--seconds", type=float, default=3.0, help="time budget per latency measurement")
    p.add_argument(
        "--backends",
        type=lambda s: s.split(";"),
        default=None,
        help="';'-separated: exact;HNSW32;IVF1024,Flat",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="FAISS/torch threads (default: all cores)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--ef-construction",
        type=int,
        default=None,
        help="HNSW efConstruction (default: clipsearch's 80; FAISS's is 40)",
    )
    args = p.parse_args(argv)
    if args.ef_construction:
        faiss_build.HNSW_EF_CONSTRUCTION = args.ef_construction
    print(f"HNSW efConstruction: {faiss_build.HNSW_EF_CONSTRUCTION}")
    if args.threads:
        import faiss
        import torch

        faiss.omp_set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
    sizes = [20_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    print(
        f"cores: {os.cpu_count()}, load avg at start: {load_average()} (timings on a shared machine are noisy)"
    )
    last: list[Row] = []
    for n in sizes:
        last = run_size(n, args)
    project(last, sizes[-1], 10_000_000)
    print(f"\nload avg at end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
