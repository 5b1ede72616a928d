"""Cold start: wall time and peak memory of each command a user runs, as a fresh process,
next to a plain open_clip script doing the least a search needs, in the same run.

    python benchmarks/cold_start.py                     # 10k-item library, 100k for serve
    python benchmarks/cold_start.py --quick             # 2k / 20k items, 1 repeat

Rows (each a new process; median of --repeats, the baseline interleaved with them):
- ``--help``, ``status``, ``index-info``;
- ``index`` over the library's --items unchanged files (no model is loaded), and the same
  no-op over a --first-run-files folder next to that folder's first run (the ratio the
  no-op target is stated in);
- ``search`` cold: a text query in its own process (numpy text tower from its ready copy);
  and cold without a ready copy (the first search after a model change: torch path);
- ``search`` warm: a query while ``clipsearch serve`` runs for the library, through the
  console script (``python -m clipsearch``: the fast path that asks the server before
  loading Typer, numpy or the library), as a table and as --json; each repeat a query not
  asked before (nothing is cached); the same from the ``clipsearch`` script of a new
  virtual environment with only a wheel of clipsearch installed (what a user's install
  runs, without the development install's import hook); and the HTTP round trip alone;
- ``serve`` on a --serve-items library: start → port answering, start → first query
  answered, and the server's peak resident memory after a few queries.

Baseline: a plain open_clip script — import open_clip, ``create_model_and_transforms
("ViT-B-32", pretrained=<checkpoint>)``, tokenize and encode one text, load the stored
vectors (.npy) and rank them — i.e. what a user would write without clipsearch.

Model: open_clip ViT-B-32 with random weights (seed 0) in benchmarks/out/ (no download is
possible here; load cost does not depend on the weights' values), loaded as a local
checkpoint. Libraries hold random unit vectors written into the catalog for small files
that exist on disk (so ``index`` finds them unchanged). Peak memory is the child's
``ru_maxrss``; for ``serve``, VmHWM from /proc. Caches (weight digests, text-tower copies)
live in benchmarks/out/cache, not in ~/.cache. Commands run with Python's bytecode cache
(in benchmarks/out/pycache, warmed by one untimed run of each), as an installed package
does: a shell with PYTHONDONTWRITEBYTECODE=1 would recompile clipsearch on every start.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
CACHE = OUT / "cache"
QUERY = "a red heart on a white wall"
ENV = {
    **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    "CLIPSEARCH_CACHE_DIR": str(CACHE),
    "HF_HUB_OFFLINE": "1",
    "PYTHONPYCACHEPREFIX": str(OUT / "pycache"),
}
TARGETS = {  # what issue-level targets say, for the summary lines
    "search, cold": 1.5,
    "search, warm (console script)": 0.1,
    "index, no-op": 1.0,
}

BASELINE = """
import sys, numpy as np, open_clip, torch
model, _, _ = open_clip.create_model_and_transforms("ViT-B-32", pretrained=sys.argv[1])
model.eval()
tokenizer = open_clip.get_tokenizer("ViT-B-32")
with torch.no_grad():
    t = model.encode_text(tokenizer([sys.argv[3]]))[0]
t = (t / t.norm()).numpy()
vectors = np.load(sys.argv[2])                 # (N, 512) float32, unit rows
top = np.argsort(-(vectors @ t))[:20]
print(top[:5])
"""


@dataclass
class Run:
    wall_s: float
    peak_mb: float
    ok: bool
    cpu_s: float = float("nan")  # user + system: what the process itself cost


# A child's ru_maxrss starts at its parent's resident size (fork), and this script holds
# libraries in memory: each command is started by a small launcher, which measures it.
LAUNCHER = """
import os, subprocess, sys, time
t0 = time.perf_counter()
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(p.pid, 0)
wall = time.perf_counter() - t0
cpu = usage.ru_utime + usage.ru_stime
code = os.waitstatus_to_exitcode(status)
sys.stderr.write("\\n@@%f %f %d %d" % (wall, cpu, usage.ru_maxrss, code))
"""


def run(argv: list[str], *, env: dict[str, str] = ENV) -> Run:
    """One fresh process: wall time (process start to exit) and peak resident memory."""
    proc = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *argv], cwd=ROOT, env=env, capture_output=True, text=True
    )
    wall, cpu, peak_kb, code = proc.stderr.rsplit("@@", 1)[1].split()
    if int(code) != 0:
        print(f"  ! {' '.join(argv[-6:])} exited {code}: {proc.stderr[-400:]}")
    return Run(float(wall), int(peak_kb) / 1024, int(code) == 0, float(cpu))


def cli(library: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "clipsearch", "--library", str(library), *args]


# -- fixtures ---------------------------------------------------------------------------------
def vit_checkpoint() -> Path:
    path = OUT / "vit-b-32-random.safetensors"
    if not path.exists():
        import open_clip
        import torch

        from clipsearch.models import save_checkpoint

        torch.manual_seed(0)
        OUT.mkdir(parents=True, exist_ok=True)
        save_checkpoint(open_clip.create_model("ViT-B-32"), path, arch="ViT-B-32")
    return path


def model_identity(checkpoint: Path) -> tuple[str, str, int]:
    """(spec, fingerprint, dim), loading the model once in a child (which also writes the
    text tower's ready copy into CACHE)."""
    code = (
        "import json, sys\nfrom clipsearch.models import load_encoder\n"
        "e = load_encoder(sys.argv[1])\nprint(json.dumps([e.spec, e.fingerprint, e.dim]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(checkpoint)],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spec, fingerprint, dim = json.loads(out.strip().splitlines()[-1])
    return spec, fingerprint, int(dim)


def build_library(path: Path, files: Path, items: int, identity: tuple[str, str, int]) -> Path:
    """A library of ``items`` small files under ``files`` with random unit vectors, bound to
    the model; returns the .npy of its vectors (for the baseline)."""
    from clipsearch.store import Catalog, ItemWrite, ModelBinding

    npy = path.with_suffix(".npy")
    if (path / "catalog.sqlite").exists() and npy.exists():
        return npy
    shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(files, ignore_errors=True)
    files.mkdir(parents=True)
    spec, fingerprint, dim = identity
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((items, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    catalog = Catalog.open(path)
    try:
        catalog.bind_model(ModelBinding(spec, fingerprint, dim))
        root = catalog.add_root(str(files))
        for start in range(0, items, 2000):
            batch = []
            for i in range(start, min(items, start + 2000)):
                f = files / f"{i // 1000:03d}" / f"{i:07d}.jpg"
                f.parent.mkdir(exist_ok=True)
                f.write_bytes(b"\xff\xd8" + i.to_bytes(4, "little") + b"\xff\xd9")
                st = f.stat()
                batch.append(
                    ItemWrite(
                        path=str(f),
                        root_id=root,
                        kind="image",
                        size=st.st_size,
                        mtime_ns=st.st_mtime_ns,
                        content_hash=None,
                        status="ok",
                        width=640,
                        height=480,
                        vectors=vectors[i : i + 1],
                    )
                )
            catalog.write_items(batch)
    finally:
        catalog.close()
    np.save(npy, vectors)
    subprocess.run(cli(path, "reindex"), env=ENV, cwd=ROOT, capture_output=True, check=True)
    return npy


def photo_folder(path: Path, n: int) -> Path:
    from PIL import Image

    if path.exists() and len(list(path.glob("*.jpg"))) == n:
        return path
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        pixels = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path / f"p{i:04d}.jpg", quality=85)
    return path


# -- serve --------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 600) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    def __init__(self, library: Path) -> None:
        self.port = free_port()
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            cli(library, "serve", "--port", str(self.port)),
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read().decode()[-600:])
            try:
                self.status = get(self.base + "/api/status", timeout=5)
                break
            except OSError:
                time.sleep(0.02)
        self.port_open_s = time.perf_counter() - self.t0

    def first_query(self) -> float:
        get(self.base + "/api/search?q=" + urllib.request.quote(QUERY))
        return time.perf_counter() - self.t0

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def round_trip_ms(library: Path, n: int = 15) -> float:
    """Median of the warm route's HTTP round trip alone (what the CLI waits for: the search
    and the table rendered for its terminal), each a query not asked before."""
    from clipsearch.cli import terminal
    from clipsearch.server import discovery

    server = discovery.read(library)
    render = terminal.describe(json=False, dates=False, duplicates=False)
    times = []
    for i in range(n):
        body = json.dumps({"q": f"{QUERY} {i} rtt", "k": 20, "render": render}).encode()
        req = urllib.request.Request(
            f"http://{server.host}:{server.port}/api/local/search",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {server.token}"},
        )
        t0 = time.perf_counter()
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


# The installed package: no PYTHONPATH to the checkout, its own bytecode (compiled by pip).
WHEEL_ENV = {k: v for k, v in ENV.items() if k not in ("PYTHONPATH", "PYTHONPYCACHEPREFIX")}


def installed_console_script() -> Path:
    """The ``clipsearch`` script of a new virtual environment holding clipsearch alone,
    installed from a wheel of this checkout: what ``pip install clipsearch`` gives a user
    (not the development install's editable-import hook), and proof that the warm path
    needs nothing but the standard library (no dependency is installed)."""
    venv, wheels, source = OUT / "wheel-venv", OUT / "wheel", OUT / "wheel-source"
    for folder in (venv, wheels, source):
        shutil.rmtree(folder, ignore_errors=True)
    # built from a copy: setuptools leaves build/ and *.egg-info next to the sources
    shutil.copytree(
        ROOT / "clipsearch", source / "clipsearch", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        check=True,
    )
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    wheel = next(wheels.glob("clipsearch-*.whl"))
    subprocess.run(
        [*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", str(wheel)],
        check=True,
    )
    return venv / "bin" / "clipsearch"


# -- main -----------------------------------------------------------------------------------------
def median_run(runs: list[Run]) -> Run:
    walls = sorted(runs, key=lambda r: r.wall_s)
    mid = walls[len(walls) // 2]
    cpu = statistics.median(r.cpu_s for r in runs)
    return Run(mid.wall_s, max(r.peak_mb for r in runs), all(r.ok for r in runs), cpu)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--serve-items", type=int, default=100_000)
    ap.add_argument("--first-run-files", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.items, args.serve_items, args.first_run_files, args.repeats = 2000, 20_000, 20, 1

    checkpoint = vit_checkpoint()
    CACHE.mkdir(parents=True, exist_ok=True)
    identity = model_identity(checkpoint)
    lib = OUT / f"cold-lib-{args.items}"
    npy = build_library(lib, OUT / f"cold-files-{args.items}", args.items, identity)
    big = OUT / f"cold-lib-{args.serve_items}"
    build_library(big, OUT / f"cold-files-{args.serve_items}", args.serve_items, identity)
    tower = CACHE / "text-towers" / f"{identity[1]}.safetensors"
    print(
        f"ViT-B-32 (random weights) · {args.items} items (serve: {args.serve_items}) · "
        f"median of {args.repeats} · CPUs {len(os.sched_getaffinity(0))} · "
        f"load avg {os.getloadavg()[0]:.1f}",
        flush=True,
    )

    baseline_argv = [sys.executable, "-c", BASELINE, str(checkpoint), str(npy), QUERY]
    commands = {
        "--help": [sys.executable, "-m", "clipsearch", "--help"],
        "status": cli(lib, "status"),
        "index-info": cli(lib, "index-info"),
        f"index, no-op ({args.items} files)": cli(
            lib, "index", str(OUT / f"cold-files-{args.items}"), "--quiet"
        ),
        "search, cold": cli(lib, "search", QUERY, "--no-server"),
    }
    results: dict[str, list[Run]] = {name: [] for name in ["baseline", *commands]}
    results["search, cold, no ready copy (torch)"] = []
    for command in commands.values():  # compile clipsearch's bytecode once, untimed
        run(command)
    for _ in range(args.repeats):
        results["baseline"].append(run(baseline_argv))
        for name, command in commands.items():
            results[name].append(run(command))
            print(f"  {name}: {results[name][-1].wall_s:.2f} s", flush=True)
        tower.unlink(missing_ok=True)  # the first search after a model change
        results["search, cold, no ready copy (torch)"].append(run(commands["search, cold"]))

    # first run vs no-op, on real photos
    photos = photo_folder(OUT / f"cold-photos-{args.first_run_files}", args.first_run_files)
    first_lib = OUT / "cold-first-run-lib"
    shutil.rmtree(first_lib, ignore_errors=True)
    first = run(cli(first_lib, "--model", str(checkpoint), "index", str(photos), "--quiet"))
    noop = median_run(
        [run(cli(first_lib, "index", str(photos), "--quiet")) for _ in range(args.repeats)]
    )

    # warm: a server on the library; each run a new query (the server caches nothing, but
    # the benchmark should not depend on that)
    server = Server(lib)
    try:
        server.first_query()
        warm = median_run(
            [run(cli(lib, "search", f"{QUERY} {i}")) for i in range(max(3, args.repeats))]
        )
        warm_json = median_run(
            [
                run(cli(lib, "search", f"{QUERY} {i} json", "--json"))
                for i in range(max(3, args.repeats))
            ]
        )
        rtt = round_trip_ms(lib)
        installed = installed_console_script()
        warm_installed = median_run(
            [
                run(
                    [str(installed), "--library", str(lib), "search", f"{QUERY} {i} wheel"],
                    env=WHEEL_ENV,
                )
                for i in range(max(3, args.repeats))
            ]
        )
    finally:
        server.stop()
    big_backend = json.loads((big / "ann" / "stamp.json").read_text()).get("factory", "?")

    # serve on the large library
    server = Server(big)
    try:
        port_open = server.port_open_s
        first_answer = server.first_query()
        for i in range(5):
            get(server.base + f"/api/search?q=query+{i}")
        serve_peak = vm_hwm_mb(server.proc.pid)
    finally:
        server.stop()

    base = median_run(results["baseline"])
    rows = [(name, median_run(runs)) for name, runs in results.items()]
    rows.insert(6, ("search, warm (console script)", warm))
    rows.insert(7, ("search --json, warm (console script)", warm_json))
    rows.insert(8, ("search, warm (console script of an installed wheel)", warm_installed))
    print()
    print("| command | wall s | CPU s | peak MB | wall ratio | CPU ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows:
        flag = "" if r.ok else " (failed)"
        print(
            f"| {name}{flag} | {r.wall_s:.2f} | {r.cpu_s:.2f} | {r.peak_mb:.0f} | "
            f"{r.wall_s / base.wall_s:.3f} | {r.cpu_s / base.cpu_s:.3f} |"
        )
    print(
        f"| search, warm (HTTP round trip only) | {rtt / 1000:.3f} | – | – | "
        f"{rtt / 1000 / base.wall_s:.4f} | – |"
    )
    print(
        f"| serve ({args.serve_items} items): start → port answering | {port_open:.2f} | – | – | "
        f"{port_open / base.wall_s:.3f} | – |"
    )
    print(
        f"| serve ({args.serve_items} items, {big_backend}): start → first query answered | "
        f"{first_answer:.2f} | – | {serve_peak:.0f} | {first_answer / base.wall_s:.3f} | – |"
    )
    print()
    by_name = dict(rows)
    for prefix, target in TARGETS.items():
        name = next(n for n in by_name if n.startswith(prefix))
        r = by_name[name]
        print(
            f"target {name} ≤ {target} s: wall {r.wall_s:.2f} s, CPU {r.cpu_s:.2f} s "
            f"({'met' if r.wall_s <= target else 'not met'} on wall time)"
        )
    print(f"target warm round trip ≤ 0.1 s: {rtt / 1000:.3f} s")
    print(f"target serve peak < 1200 MB with {args.serve_items} items: {serve_peak:.0f} MB")
    print()
    print(
        f"index over {args.first_run_files} photos: first run {first.wall_s:.2f} s "
        f"({first.cpu_s:.2f} s CPU) / {first.peak_mb:.0f} MB, no-op {noop.wall_s:.2f} s "
        f"({noop.cpu_s:.2f} s CPU) / {noop.peak_mb:.0f} MB (wall ratio "
        f"{noop.wall_s / first.wall_s:.3f}, CPU ratio {noop.cpu_s / first.cpu_s:.3f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
