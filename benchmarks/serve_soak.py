"""Soak test of `clipsearch serve`: many clients doing what the page does, for a while,
with the server's memory recorded before and after; optionally hostile uploads.

    python benchmarks/serve_soak.py                      # fake encoder, 16 clients, ≤ 60 s
    python benchmarks/serve_soak.py --encoder vitb32     # ViT-B-32 (random weights)
    python benchmarks/serve_soak.py --hostile            # + 13300x13300 RGBA PNG uploads
    python benchmarks/serve_soak.py --compare-tree ../main --hostile   # same run, other code

Loopback only, bounded: at most --requests requests and --seconds seconds of soak, and
--hostile-uploads uploads. The server runs as a subprocess on a free 127.0.0.1 port; its
memory is read from /proc/PID/status (VmRSS now, VmHWM the peak so far).

What the clients do, in random order (seeded): text search with a distinct query each
time, "more like this" by item id (JSON POST), search by an uploaded JPEG (multipart),
a thumbnail at a random size (made on first request, then cached), and a byte range of
a media file. Every response must be 200/206; anything else counts as an error.

Hostile uploads: a 13300x13300 RGBA PNG of one colour (about 700 KB on the wire, under
the pixel cap, about 700 MB of pixels), sent --hostile-uploads times, two at once.

Baselines in the same run: the server's own memory after start-up and warm-up (the
table's ratios are against it), and with --compare-tree the same phases served by the
clipsearch code of another checkout (e.g. main before a change).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

from serve_load import free_port, queries, vit_checkpoint, wait_ready  # noqa: E402

THUMB_SIZES = (128, 256, 512)


# -- inputs -------------------------------------------------------------------------------------
def make_photos(folder: Path, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        base = rng.integers(0, 256, 3)
        noise = rng.integers(-30, 30, (240, 320, 3))
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=85)


def hostile_png(width: int = 13_300, height: int = 13_300) -> bytes:
    """A one-colour RGBA PNG, compressed row by row (never held whole in memory)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    row = b"\x00" + bytes((200, 30, 30, 128)) * width
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def small_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (30, 120, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def make_encoder(kind: str):
    if kind == "fake":
        from tests.fakes import ColourEncoder

        return ColourEncoder()
    from clipsearch.models import load_encoder

    return load_encoder(str(vit_checkpoint()))


# -- server -------------------------------------------------------------------------------------
def serve_only(args: argparse.Namespace) -> None:
    """Child process: serve the library with the code of --tree until killed."""
    sys.path.insert(0, args.tree)
    import uvicorn

    from clipsearch.library import Library
    from clipsearch.server import create_app

    lib = Library(Path(args.library), encoder=make_encoder(args.encoder))
    app = create_app(lib)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="error", access_log=False)


class Server:
    def __init__(self, tree: Path, library: Path, encoder: str) -> None:
        self.port = free_port()
        cmd = [sys.executable, __file__, "--serve-only", "--tree", str(tree)]
        cmd += ["--library", str(library), "--encoder", encoder, "--port", str(self.port)]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.proc = subprocess.Popen(cmd, cwd=tree, env=env)
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 120) -> None:
        wait_ready(self.proc, self.url, timeout)

    def memory_mib(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) of the server process, MiB."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
        return fields["VmRSS"], fields["VmHWM"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- load ---------------------------------------------------------------------------------------
@dataclass
class Phase:
    tree: str
    name: str
    rss_before: float
    rss_after: float = 0.0
    peak: float = 0.0
    sent: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    wall_s: float = 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


async def soak(url: str, ids: list[int], phase: Phase, args: argparse.Namespace) -> None:
    import httpx

    rng = random.Random(0)
    texts = queries(args.requests, salt=phase.tree)
    upload = small_jpeg()
    budget = {"left": args.requests}
    deadline = time.monotonic() + args.seconds
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)

    async def one(client: httpx.AsyncClient) -> int:
        kind = rng.choice(("text", "text", "like", "upload", "thumb", "thumb", "media"))
        item = rng.choice(ids)
        if kind == "text":
            r = await client.get("/api/search", params={"q": texts.pop(), "k": 20})
        elif kind == "like":
            r = await client.post("/api/search", json={"like": [item], "k": 20})
        elif kind == "upload":
            files = [("image", ("q.jpg", upload, "image/jpeg"))]
            r = await client.post("/api/search", files=files, data={"k": "20"})
        elif kind == "thumb":
            size = rng.choice(THUMB_SIZES)
            r = await client.get(f"/api/items/{item}/thumb", params={"size": size})
        else:
            r = await client.get(f"/api/items/{item}/media", headers={"Range": "bytes=0-1023"})
        return r.status_code

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:

        async def worker() -> None:
            while budget["left"] > 0 and time.monotonic() < deadline:
                budget["left"] -= 1
                t0 = time.perf_counter()
                try:
                    status = await one(client)
                except httpx.HTTPError:
                    status = 0
                phase.latencies_ms.append((time.perf_counter() - t0) * 1000)
                phase.statuses[status] = phase.statuses.get(status, 0) + 1
                phase.sent += 1
                phase.errors += status not in (200, 206)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.clients)))
        phase.wall_s = time.perf_counter() - t0


async def hostile(url: str, png: bytes, phase: Phase, count: int) -> None:
    import httpx

    sem = asyncio.Semaphore(2)
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def send() -> None:
            async with sem:
                t0 = time.perf_counter()
                files = [("image", ("huge.png", png, "image/png"))]
                try:
                    r = await client.post("/api/search", files=files, data={"k": "5"})
                    status = r.status_code
                except httpx.HTTPError:
                    status = 0
                phase.latencies_ms.append((time.perf_counter() - t0) * 1000)
                phase.statuses[status] = phase.statuses.get(status, 0) + 1
                phase.sent += 1
                phase.errors += status == 0 or status >= 500

        t0 = time.perf_counter()
        await asyncio.gather(*(send() for _ in range(count)))
        phase.wall_s = time.perf_counter() - t0


def run_tree(tree: Path, label: str, library: Path, ids, png, args) -> list[Phase]:
    server = Server(tree, library, args.encoder)
    phases = []
    try:
        server.wait_ready()
        warm = Phase(label, "warm-up", 0.0)
        warm_args = argparse.Namespace(**{**vars(args), "requests": 32, "clients": 4})
        asyncio.run(soak(server.url, ids, warm, warm_args))
        rss, _ = server.memory_mib()
        p = Phase(label, f"soak {args.clients} clients", rss)
        asyncio.run(soak(server.url, ids, p, args))
        p.rss_after, p.peak = server.memory_mib()
        phases.append(p)
        print(f"  done: {label} soak", flush=True)
        if png is not None:
            h = Phase(label, f"{args.hostile_uploads} x 13300² RGBA PNG", p.rss_after)
            asyncio.run(hostile(server.url, png, h, args.hostile_uploads))
            h.rss_after, h.peak = server.memory_mib()
            phases.append(h)
            print(f"  done: {label} hostile uploads", flush=True)
    finally:
        server.stop()
    return phases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--encoder", choices=["vitb32", "fake"], default="fake")
    ap.add_argument("--photos", type=int, default=200, help="images in the library")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=2000, help="soak requests, at most")
    ap.add_argument("--seconds", type=float, default=60.0, help="soak duration, at most")
    ap.add_argument("--hostile", action="store_true", help="also upload huge PNGs")
    ap.add_argument("--hostile-uploads", type=int, default=4)
    ap.add_argument("--compare-tree", type=Path, help="also run with this checkout's code")
    ap.add_argument("--serve-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    ap.add_argument("--library", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_only:
        serve_only(args)
        return 0

    from clipsearch.library import Library

    trees = [(ROOT, "this tree")]
    if args.compare_tree:
        trees.append((args.compare_tree.resolve(), args.compare_tree.name))
    png = hostile_png() if args.hostile else None
    phases: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="clipsearch-soak-") as tmp:
        photos = Path(tmp) / "photos"
        make_photos(photos, args.photos)
        for tree, label in trees:
            library = Path(tmp) / f"lib-{len(phases)}"
            with Library(library, encoder=make_encoder(args.encoder)) as lib:
                lib.index([photos])
                ids = [h.item_id for h in lib.search("anything", k=args.photos)]
            phases += run_tree(tree, label, library, ids, png, args)

    print(
        f"\nencoder {args.encoder}, {args.photos} photos, {os.cpu_count()} CPUs; memory in MiB; "
        "'x start' = RSS after / RSS before the phase"
    )
    print(
        f"{'code':<12} {'phase':<28} {'sent':>5} {'err':>4} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'RSS before':>10} {'RSS after':>9} {'peak':>7} {'x start':>7}  statuses"
    )
    for p in phases:
        print(
            f"{p.tree:<12} {p.name:<28} {p.sent:>5} {p.errors:>4} {p.pct(50):>8.0f} "
            f"{p.pct(99):>8.0f} {p.rss_before:>10.0f} {p.rss_after:>9.0f} {p.peak:>7.0f} "
            f"{p.rss_after / p.rss_before:>7.2f}  {dict(sorted(p.statuses.items()))}"
        )
    return 1 if any(p.errors for p in phases) else 0


if __name__ == "__main__":
    raise SystemExit(main())
