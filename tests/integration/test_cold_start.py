"""Start-up costs users feel: commands that need no model never import torch, an index run
over unchanged files never loads the model, a text search runs on the numpy text tower,
and a running server answers `clipsearch search` with the same results."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clipsearch.cli import terminal
from clipsearch.library import Library
from clipsearch.server import discovery
from tests.fakes import make_image

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "open_clip", "torchvision", "transformers")
COLOURS = ("red", "green", "blue", "yellow", "white")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_checkpoint) -> Path:
    """A library indexed with the tiny open_clip checkpoint (the real model path)."""
    base = tmp_path_factory.mktemp("cold")
    for c in COLOURS:
        make_image(base / "photos" / f"{c}.jpg", c)
    with Library(base / "lib", model=str(tiny_checkpoint)) as lib:
        assert lib.index([base / "photos"]).encoded == len(COLOURS)
    return base


# Modules a command must not import (each is a measurable share of start-up time):
# torch and friends for anything but encoding; what other commands or faces need
# (the server, evaluation, training, FAISS, video); for --help also numpy, Pillow and the
# library; for a plain ASCII text query the tokenizer's Unicode cleaning (ftfy, regex).
NOT_FOR_ANY = (
    *HEAVY,
    "fastapi",
    "uvicorn",
    "av",
    "clipsearch.eval.runner",
    "clipsearch.train.loop",
)
# What a run over unchanged files does without (each was imported by it once): vectors
# and pictures, decoding, encoding, capture dates and the runtime choice, captions, the
# search stack the library facade wires, export/import, the ANN backends behind the
# stamp check, and the catalog's filter grammar.
NOOP_INDEX_SKIPS = (
    "numpy",
    "PIL",
    "clipsearch.media.image",
    "clipsearch.ingest.decode",
    "clipsearch.ingest.encode",
    "clipsearch.ingest.dating",
    "clipsearch.ingest.runtime_choice",
    "clipsearch.ingest.captioning",
    "clipsearch.library.searching",
    "clipsearch.library.exchange",
    "clipsearch.search.engine",
    "clipsearch.search.compose",
    "clipsearch.search.classify",
    "clipsearch.search.dedup",
    "clipsearch.search.moderation",
    "clipsearch.search.video",
    "clipsearch.index.base",
    "clipsearch.index.cache",
    "clipsearch.index.exact",
    "clipsearch.store.filters",
)
# the server renders what a warm search prints (clipsearch.cli.terminal): no Rich either
WARM_NOT_IMPORTED = (
    *NOT_FOR_ANY,
    "typer",
    "pydantic",
    "numpy",
    "PIL",
    "clipsearch.library",
    "rich",
    "http.client",
    "dataclasses",
    "clipsearch.search.hits",
)
NOT_IMPORTED = {
    "help": (*NOT_FOR_ANY, "numpy", "PIL", "pydantic", "sqlite3", "clipsearch.library"),
    "status": (*NOT_FOR_ANY, "faiss", "ftfy", "regex", "rich.progress"),
    "index-info": (*NOT_FOR_ANY, "ftfy", "regex"),
    "noop-index": (*NOT_FOR_ANY, "faiss", "ftfy", "regex", "rich.progress", *NOOP_INDEX_SKIPS),
    "noop-index-ray": (*NOT_FOR_ANY, "ray", "faiss", "ftfy", "regex", "rich.progress"),
    "text-search": (*NOT_FOR_ANY, "faiss", "ftfy", "regex", "rich.progress"),
}


def _run_cli(
    *argv: str, entry: str = "clipsearch.cli.app"
) -> tuple[dict, subprocess.CompletedProcess]:
    """Run the CLI in a fresh interpreter; return which modules it imported."""
    script = (
        "import json, sys\n"
        f"from {entry} import main\n"
        "code = main(sys.argv[1:])\n"
        "print('@@' + json.dumps({'code': code, 'modules': sorted(sys.modules)}), file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", script, *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = next(x for x in proc.stderr.splitlines() if x.startswith("@@"))
    return json.loads(line[2:]), proc


def _imported(result: dict, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if n in result["modules"]]


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [
        ("--help",),
        ("status",),
        ("index-info",),
        ("index", "{photos}", "--quiet"),  # nothing changed: no model
        ("index", "{photos}", "--quiet", "--engine", "ray"),  # nor on Ray (no cluster either)
        # the numpy text tower (every hit shown: the tiny random model scores little above the cut)
        ("search", "a red photo", "-k", "3", "--min-score", "none", "--no-server"),
    ],
    ids=list(NOT_IMPORTED),
)
def test_commands_import_only_what_they_need(indexed, argv, request):
    lib = str(indexed / "lib")
    args = [a.format(photos=indexed / "photos") for a in argv]
    result, proc = _run_cli(*(args if argv == ("--help",) else ["--library", lib, *args]))
    assert result["code"] == 0, proc.stderr
    forbidden = NOT_IMPORTED[request.node.callspec.id]
    assert _imported(result, forbidden) == [], f"{argv} imported {_imported(result, forbidden)}"
    if argv[0] == "index":
        assert f"0 encoded, {len(COLOURS)} unchanged" in proc.stdout + proc.stderr
    if argv[0] == "search":
        assert proc.stdout.count("photos/") == 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [
        ("a red photo", "-k", "3", "--min-score", "none"),
        ("blue", "--kind", "image", "-k", "2", "--offset", "1", "--json", "--exact"),
        ("red", "--sort", "-date", "--collapse", "--min-score", "0.01", "--json"),
    ],
)
def test_the_console_script_searches_text_without_typer(indexed, run_cli, argv):
    """A plain text search with no server: the console script answers in this process
    without Typer or pydantic, printing what the ``search`` command prints."""
    lib = str(indexed / "lib")
    typer_run = run_cli("--library", lib, "search", *argv, "--no-server")
    assert typer_run.exit_code == 0, typer_run.output
    result, run = _run_cli(
        "--library", lib, "search", *argv, "--no-server", entry="clipsearch.cli.entry"
    )
    assert result["code"] == 0, run.stderr
    assert _imported(result, ("typer", "pydantic", *HEAVY)) == []
    assert run.stdout == typer_run.stdout
    assert run.stderr.split("@@")[0] == typer_run.stderr


def _timeless(text: str) -> str:
    """Output with its elapsed times and rates masked."""
    import re

    text = re.sub(r"\d+(\.\d+)? (s|files/s)\b", "T", text)
    return re.sub(r'"(elapsed_s|encode_s)": [0-9.e-]+', r'"\1": T', text)


@pytest.mark.slow
@pytest.mark.parametrize("flags", [("--quiet",), ("--json",), ()])
def test_the_console_script_indexes_without_typer(indexed, flags):
    """A plain ``index FOLDER`` runs the index command's code without Typer or pydantic
    (over unchanged files: no numpy either) and prints what the command prints."""
    lib, photos = str(indexed / "lib"), str(indexed / "photos")
    typer_result, typer_run = _run_cli("--library", lib, "index", photos, *flags)
    result, run = _run_cli("--library", lib, "index", photos, *flags, entry="clipsearch.cli.entry")
    assert result["code"] == typer_result["code"] == 0, run.stderr
    loaded = _imported(result, ("typer", "pydantic", *NOOP_INDEX_SKIPS))
    assert loaded == [], f"the console script's index imported {loaded}"
    assert _timeless(run.stdout) == _timeless(typer_run.stdout)
    assert _timeless(run.stderr.split("@@")[0]) == _timeless(typer_run.stderr.split("@@")[0])
    assert f"0 encoded, {len(COLOURS)} unchanged" in run.stdout + run.stderr or (
        json.loads(run.stdout)["unchanged"] == len(COLOURS)
    )


def test_the_console_script_reports_index_errors_as_the_app_does(tmp_path, indexed):
    missing = str(tmp_path / "no-such-folder")
    lib = str(indexed / "lib")
    typer_result, typer_run = _run_cli("--library", lib, "index", missing)
    result, run = _run_cli("--library", lib, "index", missing, entry="clipsearch.cli.entry")
    assert result["code"] == typer_result["code"] == 4
    assert "typer" not in result["modules"]
    assert run.stderr.split("@@")[0] == typer_run.stderr.split("@@")[0]
    assert "not found" in run.stderr


def test_the_console_script_leaves_errors_and_other_commands_to_the_app(tmp_path, indexed):
    missing = str(tmp_path / "no-library")
    result, run = _run_cli("--library", missing, "search", "red", entry="clipsearch.cli.entry")
    assert result["code"] == 4 and "no clipsearch library" in run.stderr
    result, run = _run_cli("search", "red", "-k", "0", entry="clipsearch.cli.entry")
    assert result["code"] == 2 and "typer" in result["modules"]
    result, run = _run_cli(
        "--library", str(indexed / "lib"), "status", entry="clipsearch.cli.entry"
    )
    assert result["code"] == 0 and "typer" in result["modules"]


def test_noop_index_does_not_load_the_model(indexed):
    with Library(indexed / "lib") as lib:
        report = lib.index([indexed / "photos"])
        assert (report.encoded, report.unchanged) == (0, len(COLOURS))
        assert not lib.model_loaded
    # a changed file does load it, and is encoded
    make_image(indexed / "photos" / "new.jpg", "purple")
    try:
        with Library(indexed / "lib") as lib:
            assert lib.index([indexed / "photos"]).encoded == 1
            assert lib.model_loaded
    finally:
        (indexed / "photos" / "new.jpg").unlink()
        with Library(indexed / "lib") as lib:
            lib.index([indexed / "photos"])


def test_text_search_on_the_text_tower_ranks_as_the_full_model(indexed, tiny_checkpoint):
    """The numpy tower answers text queries; its ranking and scores are the torch model's."""
    from clipsearch.models import load_encoder
    from clipsearch.models.text_tower import TextTowerEncoder

    with Library(indexed / "lib") as lib:
        assert isinstance(lib.query_encoder, TextTowerEncoder)
        fast = lib.search("a bright red photo", k=5)
        vector = load_encoder(str(tiny_checkpoint), precision="fp32").encode_texts(
            ["a bright red photo"]
        )[0]
        reference = lib.search(vector=vector, k=5)
    assert [h.item_id for h in fast] == [h.item_id for h in reference]
    for a, b in zip(fast, reference, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serving(lib: str):
    """A ``clipsearch serve`` of ``lib`` in its own process, announced in its discovery file."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "clipsearch", "--library", lib, "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while discovery.read(lib) is None:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the server did not announce itself"
            time.sleep(0.2)
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    assert discovery.read(lib) is None


@pytest.mark.slow
def test_search_goes_to_a_running_server_with_identical_results(indexed, run_cli, monkeypatch):
    lib = str(indexed / "lib")
    with _serving(lib):
        for argv in (
            ("a red photo", "-k", "4"),
            ("blue", "--kind", "image", "--exact", "-k", "2", "--offset", "1"),
            ('"2:green" - "white"', "--rerank", "is", "-k", "3"),
            ("red", "--sort", "-date", "--collapse", "--min-score", "none", "-k", "5"),
            ("green", "--taken-after", "2000", "--min-score", "0.05", "-k", "4"),
        ):
            cold = run_cli("--library", lib, "search", *argv, "--json", "--no-server")
            assert cold.exit_code == 0, cold.output
            import clipsearch.cli.app as app_module

            def no_cold(*a, **kw):
                raise AssertionError("the query was not handed to the server")

            with monkeypatch.context() as m:
                m.setattr(app_module, "_cold_search", no_cold)
                warm = run_cli("--library", lib, "search", *argv, "--json")
            assert warm.exit_code == 0, warm.output
            assert json.loads(warm.stdout) == json.loads(cold.stdout)
            assert len(json.loads(warm.stdout)) > 0
        # the table and what it says about the relevance cut are the same too
        cold = run_cli("--library", lib, "search", "a red photo", "-k", "6", "--no-server")
        warm = run_cli("--library", lib, "search", "a red photo", "-k", "6")
        assert cold.exit_code == warm.exit_code == 0, warm.output
        assert warm.output == cold.output
        # the console script answers a plain text search before loading Typer, numpy or
        # the library: the same table, the same JSON
        for argv, json_out in (
            (("a red photo", "-k", "6"), False),
            (("blue", "--kind", "image", "-k", "2", "--offset", "1", "--json"), True),
            (("red", "--sort", "-date", "--collapse", "--min-score", "none", "--json"), True),
        ):
            cold = run_cli("--library", lib, "search", *argv, "--no-server")
            result, run = _run_cli("--library", lib, "search", *argv, entry="clipsearch.cli.entry")
            assert result["code"] == 0, run.stderr
            loaded = _imported(result, WARM_NOT_IMPORTED)
            assert loaded == [], f"the warm path imported {loaded}"
            if json_out:
                assert json.loads(run.stdout) == json.loads(cold.stdout)
            else:
                assert run.stdout == cold.stdout
                assert run.stderr.split("@@")[0] == cold.stderr
        # anything else goes to the Typer app (still warm when it can be)
        result, run = _run_cli(
            "--library",
            lib,
            "search",
            "red",
            "--rerank",
            "is",
            "--json",
            entry="clipsearch.cli.entry",
        )
        assert result["code"] == 0 and "typer" in result["modules"], run.stderr
        # a query naming a file is searched here (a server never reads paths)
        photo = str(indexed / "photos" / "red.jpg")
        assert run_cli("--library", lib, "search", photo, "-k", "1").exit_code == 0


_REPORTING = (
    "import json, os, sys\n"
    "from clipsearch.cli.entry import main\n"
    "code = main(sys.argv[1:])\n"
    "with open(os.environ['MODULES_OUT'], 'w') as f:\n"
    "    json.dump(sorted(sys.modules), f)\n"
    "sys.exit(code)\n"
)


def _on_terminal(
    argv: list[str], env: dict[str, str], size: tuple[int, int], modules: Path
) -> bytes:
    """What the console script writes on a pseudo-terminal of ``size`` (columns, rows):
    stdout and stderr as the user sees them. The modules it imported go to ``modules``."""
    import fcntl
    import struct
    import termios

    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-c", _REPORTING, *argv],
        cwd=ROOT,
        env={**env, "MODULES_OUT": str(modules)},
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    seen = b""
    while True:
        try:
            data = os.read(controller, 1 << 16)
        except OSError:  # EIO: the process closed the terminal
            break
        if not data:
            break
        seen += data
    assert proc.wait(120) == 0, seen.decode(errors="replace")
    os.close(controller)
    return seen


@pytest.mark.slow
def test_the_server_renders_for_the_terminal_of_the_command(indexed, tmp_path):
    """The warm console script prints what the server rendered for its terminal: on a
    terminal or a pipe, narrow or wide, with the environment variables Rich reads, the
    bytes are those of the same command searching in its own process."""
    lib = str(indexed / "lib")
    argv = ["--library", lib, "search", "a red photo", "-k", "4", "--min-score", "0.01"]
    base = {k: v for k, v in os.environ.items() if k not in terminal.RICH_ENVIRON}
    base["PYTHONPATH"] = str(ROOT)
    with _serving(lib):
        for extra, size in (
            ({"TERM": "xterm-256color"}, (120, 40)),
            ({"TERM": "xterm-256color"}, (44, 20)),  # paths folded to the width
            ({"TERM": "xterm", "COLORTERM": "truecolor", "COLUMNS": "70"}, (120, 40)),
            ({"TERM": "xterm-256color", "NO_COLOR": "1"}, (100, 30)),
            ({"TERM": "dumb"}, (150, 30)),
        ):
            env = {**base, **extra}
            warm = _on_terminal(argv, env, size, tmp_path / "warm.json")
            here = _on_terminal([*argv, "--no-server"], env, size, tmp_path / "here.json")
            assert warm == here, (extra, size)
            assert warm.count(b".jpg") >= 1
            assert "rich" not in json.loads((tmp_path / "warm.json").read_text())  # served
            assert "rich" in json.loads((tmp_path / "here.json").read_text())
        colours = {**base, "FORCE_COLOR": "1", "TERM": "xterm-256color"}
        for env in (base, colours):  # a pipe; FORCE_COLOR makes Rich colour it anyway
            warm = subprocess.run(
                [sys.executable, "-m", "clipsearch", *argv], env=env, cwd=ROOT, capture_output=True
            )
            here = subprocess.run(
                [sys.executable, "-m", "clipsearch", *argv, "--no-server"],
                env=env,
                cwd=ROOT,
                capture_output=True,
            )
            assert (warm.returncode, warm.stdout, warm.stderr) == (
                here.returncode,
                here.stdout,
                here.stderr,
            )
            assert (b"\x1b[" in warm.stdout) == (env is colours)


def test_a_stale_discovery_file_is_ignored_and_removed(indexed, run_cli):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lib = indexed / "lib"
    discovery.announce(
        lib,
        discovery.ServerAnnouncement(
            pid=dead.pid, host="127.0.0.1", port=9, token="t" * 20, model=None, precision="auto"
        ),
    )
    assert (lib / discovery.FILE).stat().st_mode & 0o777 == 0o600
    r = run_cli("--library", str(lib), "search", "red", "-k", "2", "--json")
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)) == 2
    assert not (lib / discovery.FILE).exists()


def test_a_server_that_does_not_answer_means_a_search_here(indexed, run_cli):
    """A live process that is not listening (port closed): the search still answers."""
    lib = indexed / "lib"
    discovery.announce(
        lib,
        discovery.ServerAnnouncement(
            pid=os.getpid(),
            host="127.0.0.1",
            port=_free_port(),
            token="t" * 20,
            model=None,
            precision="auto",
        ),
    )
    try:
        r = run_cli("--library", str(lib), "search", "red", "-k", "2", "--json")
        assert r.exit_code == 0 and len(json.loads(r.stdout)) == 2
    finally:
        discovery.withdraw(lib)
    assert not (lib / discovery.FILE).exists()


def test_the_port_answers_while_the_model_loads_and_queries_wait(indexed):
    from fastapi.testclient import TestClient

    from clipsearch.server import create_app

    release = threading.Event()

    class SlowLibrary(Library):
        @property
        def query_encoder(self):
            assert release.wait(60)
            return super().query_encoder

    with (
        SlowLibrary(indexed / "lib") as lib,
        TestClient(
            create_app(lib, load_in_background=True, local_token="local-token-123"),
            base_url="http://127.0.0.1",
        ) as client,
    ):
        st = client.get("/api/status").json()
        assert st["model_loading"] is True and st["model_loaded"] is False
        answers = []
        waiting = threading.Thread(
            target=lambda: answers.append(client.get("/api/search", params={"q": "red"}))
        )
        waiting.start()
        time.sleep(0.5)
        assert answers == []  # the query waits for the model
        release.set()
        waiting.join(60)
        assert answers and answers[0].status_code == 200 and answers[0].json()["hits"]
        st = client.get("/api/status").json()
        assert st["model_loading"] is False and st["model_loaded"] is True
        # the CLI's route takes the discovery token only
        body = {"q": "red", "k": 2}
        assert client.post("/api/local/search", json=body).status_code == 403
        ok = client.post(
            "/api/local/search", json=body, headers={"Authorization": "Bearer local-token-123"}
        )
        assert ok.status_code == 200 and len(ok.json()["hits"]) == 2
        # a server made without the CLI's renderer answers a render request with the hits
        asked = client.post(
            "/api/local/search",
            json={**body, "render": {"json": False, "stdout_tty": True, "size": [80, 24]}},
            headers={"Authorization": "Bearer local-token-123"},
        )
        assert asked.status_code == 200 and set(asked.json()) == {"hits", "min_score"}
        absurd = client.post(
            "/api/local/search",
            json={**body, "render": {"size": [10**9, 24]}},
            headers={"Authorization": "Bearer local-token-123"},
        )
        assert absurd.status_code == 422  # a terminal size no terminal has
        refused = client.post(
            "/api/local/search",
            json={"q": str(indexed / "photos" / "red.jpg")},
            headers={"Authorization": "Bearer local-token-123"},
        )
        assert refused.status_code == 400


def test_noop_ray_index_does_not_load_the_model(indexed):
    """`index --engine ray` over unchanged files sends nothing to a cluster: the library's
    model binding gives the workers' fingerprint, so the model is not loaded here either."""
    pytest.importorskip("ray")
    from clipsearch.ingest.ray_engine import RaySettings

    with Library(indexed / "lib") as lib:
        report = lib.index([indexed / "photos"], ray=RaySettings(workers=1))
        assert (report.encoded, report.unchanged) == (0, len(COLOURS))
        assert not lib.model_loaded
