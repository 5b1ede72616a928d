"""Load test of `clipsearch serve`: text searches over HTTP at 1, 8 and 32 concurrent
clients, next to the same searches called in-process (the baseline), in one run.

    python benchmarks/serve_load.py                   # ViT-B-32 (random weights), 20k items
    python benchmarks/serve_load.py --quick           # fewer items and requests
    python benchmarks/serve_load.py --encoder fake    # ColourEncoder: HTTP + search overhead only

Loopback only, bounded: every level sends a fixed number of requests (and stops issuing
new ones after --level-timeout seconds). The server runs as a subprocess (its own GIL,
as in real use) on a free 127.0.0.1 port, once with batching of concurrent text queries
(`clipsearch.server.worker`) and once without, so the table shows what batching buys.

Model: open_clip ViT-B-32 with random weights (seed 0, benchmarks/out/, shared with
index_throughput.py); encode cost does not depend on the weights' values. The library
holds --items random unit vectors written straight into the catalog (no files: search
cost depends on the vector count, not on pixels). Every request uses a distinct query
text, so no cache can help.

Baseline: ``Library.search(text, k=20)`` called sequentially in this process (from one
worker thread, as the server encodes on one): encode + search + rescore with no HTTP.
Ratios compare each row's req/s to it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "out"
sys.path.insert(0, str(ROOT))

ADJECTIVES = ["red", "small", "old", "bright", "wet", "quiet", "busy", "snowy", "golden", "dark"]
NOUNS = [
    "dog",
    "car",
    "beach",
    "street",
    "mountain",
    "kitchen",
    "bicycle",
    "bridge",
    "forest",
    "cat",
]


def queries(n: int, *, salt: str) -> list[str]:
    """n distinct, plausible query texts."""
    out = []
    for i in range(n):
        a, b = ADJECTIVES[i % 10], NOUNS[(i // 10) % 10]
        out.append(f"a {a} {b} {salt} {i}")
    return out


# -- encoder and library ----------------------------------------------------------------------------
def vit_checkpoint() -> Path:
    import open_clip
    import torch

    from clipsearch.models import save_checkpoint

    path = OUT / "vit-b-32-random.safetensors"
    if not path.exists():
        torch.manual_seed(0)
        model = open_clip.create_model("ViT-B-32")
        OUT.mkdir(parents=True, exist_ok=True)
        save_checkpoint(model, path, arch="ViT-B-32")
    return path


def make_encoder(kind: str):
    if kind == "fake":
        from tests.fakes import ColourEncoder

        return ColourEncoder()
    from clipsearch.models import load_encoder

    return load_encoder(str(vit_checkpoint()))


def build_library(path: Path, encoder, items: int) -> None:
    """A catalog of ``items`` random unit vectors bound to ``encoder``'s model."""
    from clipsearch.store import Catalog, ItemWrite, ModelBinding

    rng = np.random.default_rng(0)
    catalog = Catalog.open(path)
    try:
        catalog.bind_model(ModelBinding(encoder.spec, encoder.fingerprint, encoder.dim))
        root = catalog.add_root("/bench")
        for start in range(0, items, 2000):
            n = min(2000, items - start)
            vecs = rng.standard_normal((n, encoder.dim)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            catalog.write_items(
                [
                    ItemWrite(
                        path=f"/bench/{start + i:07d}.jpg",
                        root_id=root,
                        kind="image",
                        size=1000,
                        mtime_ns=0,
                        content_hash=None,
                        status="ok",
                        width=640,
                        height=480,
                        vectors=vecs[i : i + 1],
                    )
                    for i in range(n)
                ]
            )
    finally:
        catalog.close()


def open_library(path: Path, encoder):
    from clipsearch.library import Library

    return Library(path, encoder=encoder)


# -- server subprocess ------------------------------------------------------------------------------
def serve_only(args: argparse.Namespace) -> None:
    """Child process: run the app on 127.0.0.1:port until killed."""
    import uvicorn

    from clipsearch.server import create_app

    lib = open_library(Path(args.library), make_encoder(args.encoder))
    app = create_app(lib, batch_text_queries=not args.no_batch, search_threads=args.search_threads)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


def wait_ready(proc: subprocess.Popen, url: str, timeout: float = 120) -> None:
    """Until the server process at ``url`` answers /api/status (RuntimeError if it exits)."""
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/api/status", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not become ready")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, library: Path, encoder: str, *, batch: bool, search_threads: int) -> None:
        self.port = free_port()
        cmd = [
            sys.executable,
            __file__,
            "--serve-only",
            "--library",
            str(library),
            "--encoder",
            encoder,
            "--port",
            str(self.port),
            "--search-threads",
            str(search_threads),
        ]
        if not batch:
            cmd.append("--no-batch")
        self.proc = subprocess.Popen(cmd, cwd=ROOT)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120) -> None:
        wait_ready(self.proc, self.url, timeout)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- load -------------------------------------------------------------------------------------------
@dataclass
class Result:
    label: str
    clients: int
    sent: int
    errors: int
    latencies_ms: list[float]
    wall_s: float

    @property
    def rps(self) -> float:
        return (self.sent - self.errors) / self.wall_s if self.wall_s else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        return float(np.percentile(self.latencies_ms, q))


async def run_level(
    url: str, texts: list[str], clients: int, timeout_s: float
) -> tuple[int, list[float], float]:
    import httpx

    todo = list(reversed(texts))
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + timeout_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal errors
            while todo and time.monotonic() < deadline:
                q = todo.pop()
                t0 = time.perf_counter()
                try:
                    r = await client.get("/api/search", params={"q": q, "k": 20})
                    ok = r.status_code == 200 and len(r.json()["hits"]) == 20
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - t0) * 1000)
                errors += not ok

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - t0
    return errors, latencies, wall


def baseline(library: Path, encoder_kind: str, texts: list[str], timeout_s: float) -> Result:
    lib = open_library(library, make_encoder(encoder_kind))
    try:
        lib.search("warm up", k=20)  # model and index cache loaded outside the timing
        lat = []
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        for q in texts:
            if time.monotonic() > deadline:
                break
            t = time.perf_counter()
            hits = lib.search(q, k=20)
            lat.append((time.perf_counter() - t) * 1000)
            assert len(hits) == 20
        wall = time.perf_counter() - t0
    finally:
        lib.close()
    return Result("in-process Library.search", 1, len(lat), 0, lat, wall)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="fewer items and requests")
    ap.add_argument("--encoder", choices=["vitb32", "fake"], default="vitb32")
    ap.add_argument("--items", type=int, default=None, help="vectors in the library")
    ap.add_argument("--requests", type=int, default=None, help="requests per concurrency level")
    ap.add_argument("--levels", default="1,8,32")
    ap.add_argument("--level-timeout", type=float, default=60.0, help="seconds per level, at most")
    ap.add_argument("--serve-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--library", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--no-batch", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--search-threads", type=int, default=1, help="the server's concurrent library searches"
    )
    args = ap.parse_args(argv)
    if args.serve_only:
        serve_only(args)
        return 0

    items = args.items or (2_000 if args.quick else 20_000)
    n_req = args.requests or (48 if args.quick else 256)
    levels = [int(x) for x in args.levels.split(",")]
    with tempfile.TemporaryDirectory(prefix="clipsearch-load-") as tmp:
        library = Path(tmp) / "lib"
        enc = make_encoder(args.encoder)
        print(
            f"encoder {enc.spec} ({args.encoder}), {items} items, {n_req} requests per level, "
            f"levels {levels}, {os.cpu_count()} CPUs",
            flush=True,
        )
        build_library(library, enc, items)
        del enc
        # In a worker thread, like the server's model worker: on a loaded machine torch ran
        # text encodes several times slower from the main thread than from another one.
        with ThreadPoolExecutor(1) as pool:
            base_texts = queries(n_req, salt="base")
            results = [
                pool.submit(
                    baseline, library, args.encoder, base_texts, args.level_timeout
                ).result()
            ]
        for batch in (True, False):
            server = Server(library, args.encoder, batch=batch, search_threads=args.search_threads)
            try:
                server.wait_ready()
                label = "HTTP, batched texts" if batch else "HTTP, one text per call"
                asyncio.run(run_level(server.url, queries(8, salt="warm"), 4, 30))  # warm-up
                for c in levels:
                    texts = queries(n_req, salt=f"{label}-{c}")
                    errors, lat, wall = asyncio.run(
                        run_level(server.url, texts, c, args.level_timeout)
                    )
                    results.append(Result(label, c, len(lat), errors, lat, wall))
                    print(f"  done: {label}, {c} clients", flush=True)
            finally:
                server.stop()
    base = results[0].rps
    print()
    print(
        f"{'mode':<28} {'clients':>7} {'sent':>6} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'req/s':>8} {'x base':>7}"
    )
    for r in results:
        print(
            f"{r.label:<28} {r.clients:>7} {r.sent:>6} {r.errors:>6} {r.pct(50):>8.1f} "
            f"{r.pct(99):>8.1f} {r.rps:>8.1f} {r.rps / base:>7.2f}"
        )
    med = statistics.median(results[0].latencies_ms)
    print(f"\nbaseline: sequential in-process search, median {med:.1f} ms per query")
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
