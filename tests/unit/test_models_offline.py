"""Offline without saying so: a pretrained tag whose weights are not cached, with the
Hugging Face hub unreachable (HF_ENDPOINT at a closed local port). huggingface_hub would
retry each file with backoff (1+2+4+8+8 s, for two file names: over a minute of "Retrying
in ..." lines); the unreachable hub is detected up front and the clear error comes at
once, without a single retry."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def unreachable_hub_env(tmp_path: Path) -> dict[str, str]:
    """This process's environment for a child whose Hugging Face hub is a closed local port
    (no HF_/TRANSFORMERS_ settings inherited, an empty cache, no proxy)."""
    return {
        **{
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))
        },
        "HF_HOME": str(tmp_path / "hf"),
        "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}",
        "PYTHONPATH": str(REPO),
        "NO_PROXY": "*",
    }


@pytest.mark.parametrize(
    "spec", ["ViT-B-32:laion2b_s34b_b79k", "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"]
)
def test_an_unreachable_hub_fails_at_once_with_the_offline_advice(tmp_path, spec):
    env = unreachable_hub_env(tmp_path)
    # Every backoff of huggingface_hub's retry loop is a time.sleep: count them.
    code = f"""
        import time
        slept = []
        real_sleep = time.sleep
        def counting_sleep(s):
            slept.append(s)
            real_sleep(s)
        time.sleep = counting_sleep
        from clipsearch.errors import WeightsUnavailableError
        from clipsearch.models import load_encoder
        t = time.perf_counter()
        try:
            load_encoder({spec!r})
        except WeightsUnavailableError as e:
            print("ERROR:", e)
        print("SLEPT:", sum(s for s in slept if s >= 0.5))
        print("SECONDS:", round(time.perf_counter() - t, 1))
    """
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "SLEPT: 0\n" in r.stdout, r.stdout  # no retry, no backoff
    message = r.stdout.split("ERROR:", 1)[1].split("SLEPT:")[0]
    assert "unreachable" in message and "127.0.0.1" in message
    assert "HF_HOME" in message and "@/path/to/" in message  # how to supply the weights
