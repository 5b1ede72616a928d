"""Milvus Lite against FAISS behind the same `VectorIndex`, on the same vectors, same run.

    python benchmarks/milvus.py            # 100k 512-d vectors (Milvus Lite inserts ~1-2k/s here)
    python benchmarks/milvus.py --quick    # 10k
    python benchmarks/milvus.py --milvus-types FLAT   # only Lite's default (its HNSW build is slow)

Data: benchmarks/ann.py's synthetic clustered CLIP-like vectors (fp16, L2-normalised),
held-out perturbed queries. Both indexes are built through their caches as a library
builds them (`IndexCache` with FAISS HNSW32; `MilvusCache` with Milvus Lite HNSW M=16,
efConstruction=80, and FLAT, Lite's default), each tuned to recall@10 >= 0.95 on half of
its own held-out sample. Milvus Lite builds its HNSW when the collection is loaded: in
the build time.

Per backend: build time (insert + index + recall tuning + stamp), p50/p99 latency of
single queries, recall@10 against exact search on the benchmark's held-out queries, the
recall the index stored at build time (what ``index-info`` shows: measured on its other
half of held-out rows, which tuned nothing), memory per vector, and a filtered search
(half the rows by kind: a Milvus expression; FAISS gets the catalog's id list). Baseline
in the same run: a plain numpy fp32 ``X @ q`` + ``argpartition``.
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
from ann import NumpyBaseline, latencies, load_average, make_data, recall_at_k

from clipsearch.index import IndexCache
from clipsearch.index.milvus_cache import MilvusCache
from tests.fakes import MemoryVectorSource

K = 10


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=20.0, help="latency budget per backend")
    ap.add_argument(
        "--milvus-types",
        default="HNSW,FLAT",
        help="Milvus index types to measure, comma-separated (HNSW, IVF_FLAT, FLAT)",
    )
    args = ap.parse_args(argv)
    n = 10_000 if args.quick else args.n
    stored, queries = make_data(n, args.queries, 512, seed=0)
    source = MemoryVectorSource(stored)
    print(f"{n} vectors x 512, {len(queries)} held-out queries; load average {load_average()}")

    base = NumpyBaseline(stored)
    truth = base.search(queries, K) + 1  # ids start at 1
    base_lat = latencies(lambda q: base.search(q, K), queries, args.seconds)
    videos = source.ids[source.ids % 2 == 0]

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        faiss_cache = IndexCache(Path(tmp) / "faiss")
        t0 = time.perf_counter()
        faiss_index = faiss_cache.get(source, backend="HNSW32", recall_target=0.95)
        faiss_build = time.perf_counter() - t0
        rows.append(
            measure("FAISS HNSW32", faiss_index, faiss_build, queries, truth, args, videos=videos)
        )

        for index_type in args.milvus_types.split(","):
            milvus_cache = MilvusCache(Path(tmp) / f"milvus-{index_type}")
            t0 = time.perf_counter()
            milvus_index = milvus_cache.get(
                source,
                uri=str(Path(tmp) / f"milvus-{index_type}.db"),
                index_type=index_type,
                recall_target=0.95,
            )
            milvus_build = time.perf_counter() - t0
            rows.append(
                measure(
                    f"Milvus Lite {index_type}",
                    milvus_index,
                    milvus_build,
                    queries,
                    truth,
                    args,
                    expression='kind in ["video"]',
                )
            )
            milvus_cache.close()

    print()
    print(
        f"{'backend':24} {'build s':>8} {'p50 ms':>8} {'p99 ms':>8} {'p50 x':>7} "
        f"{'recall@10':>9} {'stored':>6} {'B/vector':>9} {'filtered p50 ms':>16}  params"
    )
    b50 = float(np.percentile(base_lat, 50))
    print(
        f"{'numpy fp32 (baseline)':24} {'':>8} {b50:8.2f} {np.percentile(base_lat, 99):8.2f} "
        f"{1.0:7.2f} {1.0:9.3f} {'':>6} {base.memory_bytes / n:9.0f}"
    )
    for r in rows:
        print(
            f"{r['name']:24} {r['build_s']:8.1f} {r['p50']:8.2f} {r['p99']:8.2f} "
            f"{b50 / r['p50']:7.2f} {r['recall']:9.3f} {r['stored']:6.3f} {r['bpv']:9.0f} "
            f"{r['filtered_p50']:16.2f}  {r['params']}"
        )
    print(f"load average after: {load_average()}")
    return 0


def measure(name, index, build_s, queries, truth, args, *, videos=None, expression=None) -> dict:
    found = index.search(queries, K).ids
    lat = latencies(lambda q: index.search(q, K), queries, args.seconds)
    if expression is not None:
        flt = latencies(lambda q: index.search(q, K, expression=expression), queries, 5.0)
    else:
        flt = latencies(lambda q: index.search(q, K, allowed=videos), queries, 5.0)
    info = index.info()
    params = {k: v for k, v in info.params.items() if k not in ("uri", "collection")}
    return {
        "name": name,
        "build_s": build_s,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "recall": recall_at_k(found, truth),
        "stored": info.recall_at_10 or float("nan"),
        "bpv": info.memory_bytes / max(1, info.vectors),
        "filtered_p50": float(np.percentile(flt, 50)),
        "params": params,
    }


if __name__ == "__main__":
    raise SystemExit(main())
