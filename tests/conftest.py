"""Suite-wide test set-up: no network, and the shared fixtures over tests/fakes.py.

- Hugging Face libraries are put in offline mode before anything imports them, and every
  test runs with outbound connections blocked (loopback and Unix sockets stay allowed, so
  local servers and browsers work). A test that reaches for the network fails loudly.
- ``CLIPSEARCH_CACHE_DIR`` (weight digests) points at a scratch folder removed at exit.
- ``fake_encoder``: a fresh `ColourEncoder` (deterministic colour -> direction model).
- ``tiny_checkpoint``: path to a clipsearch checkpoint of the tiny-vit open_clip model
  (random weights, seed 0), written once per session; a bare-path ``--model`` spec.
- ``tiny_encoder``: that checkpoint loaded with ``precision="fp32"`` (session-wide: do not
  mutate it).
- ``make_image``: `tests.fakes.make_image` (write a coloured test image).
- ``run_cli``: run the ``clipsearch`` command line in-process through its entry point
  (``clipsearch.cli.app.main``, the one error boundary) and get a `CliResult`.
- ``tiny_blip_itm`` / ``tiny_blip_caption``: folders of tiny random BLIP models (tests/blipgen.py).
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_var] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Caches clipsearch keeps outside libraries (weight digests) go to a scratch folder, not ~.
os.environ["CLIPSEARCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="clipsearch-test-cache-")
atexit.register(shutil.rmtree, os.environ["CLIPSEARCH_CACHE_DIR"], True)

from tests.fakes import ColourEncoder, make_tiny_checkpoint, register_tiny_models  # noqa: E402
from tests.fakes import make_image as _make_image  # noqa: E402


class NetworkAccessError(RuntimeError):
    """Raised when a test tries to open a connection off this machine."""


def _is_local(family: int, address: Any) -> bool:
    if family not in (socket.AF_INET, socket.AF_INET6):
        return True  # AF_UNIX and friends never leave the machine
    host = address[0] if isinstance(address, tuple) else address
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost: would need DNS and the network


@pytest.fixture(autouse=True, scope="session")
def _no_network() -> Iterator[None]:
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guard(sock: socket.socket, address: Any) -> None:
        if not _is_local(sock.family, address):
            raise NetworkAccessError(
                f"tests must not use the network (tried to connect to {address!r})"
            )

    def connect(self: socket.socket, address: Any) -> Any:
        guard(self, address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        guard(self, address)
        return real_connect_ex(self, address)

    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", connect)
    mp.setattr(socket.socket, "connect_ex", connect_ex)
    yield
    mp.undo()


@pytest.fixture
def fake_encoder() -> ColourEncoder:
    return ColourEncoder()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    register_tiny_models()
    return make_tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny-vit.safetensors", seed=0)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_checkpoint: Path):
    from clipsearch.models import load_encoder

    return load_encoder(str(tiny_checkpoint), precision="fp32")


@pytest.fixture
def make_image() -> Callable[..., Path]:
    return _make_image


@dataclass(frozen=True)
class CliResult:
    """What one ``clipsearch ...`` run printed and exited with."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """``run_cli("search", "dog", "-k", "3")``: the console script's ``main(argv)``."""
    from clipsearch.cli.app import main

    def run(*argv: str) -> CliResult:
        capsys.readouterr()  # only this run's output
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture(scope="session")
def tiny_blip_itm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny random BLIP ITM model (tests/blipgen.py), Hugging Face layout."""
    from tests.blipgen import save_tiny_blip

    return save_tiny_blip(tmp_path_factory.mktemp("blip") / "itm", "itm", seed=0)


@pytest.fixture(scope="session")
def tiny_blip_caption(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny random BLIP captioning model (tests/blipgen.py)."""
    from tests.blipgen import save_tiny_blip

    return save_tiny_blip(tmp_path_factory.mktemp("blip") / "caption", "caption", seed=1)
