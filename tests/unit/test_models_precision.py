"""Precision is chosen per machine: bf16 only where the hardware runs it natively."""

from __future__ import annotations

import pytest

from clipsearch.errors import UsageError
from clipsearch.models import precision as P

INTEL_AMX = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"
INTEL_AVX512_BF16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
INTEL_PLAIN_AVX512 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw avx512_vnni\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd bf16 i8mm sve\n"
ARM_PLAIN = "processor\t: 0\nFeatures\t: fp asimd\n"


@pytest.fixture
def cpu(tmp_path, monkeypatch):
    """Pretend to run on a CPU described by a given /proc/cpuinfo text."""

    def use(text: str) -> None:
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        real = P.cpu_has_native_bf16.__wrapped__
        monkeypatch.setattr(P, "cpu_has_native_bf16", lambda: real(path))

    return use


@pytest.mark.parametrize(
    ("cpuinfo", "expected"),
    [
        (INTEL_AMX, "bf16"),
        (INTEL_AVX512_BF16, "bf16"),
        (INTEL_PLAIN_AVX512, "fp32"),  # bf16 would be emulated: slower than fp32
        (ARM_BF16, "bf16"),
        (ARM_PLAIN, "fp32"),
        ("", "fp32"),
    ],
)
def test_auto_on_cpu_follows_native_bf16(cpu, cpuinfo, expected):
    cpu(cpuinfo)
    assert P.resolve_precision("auto", "cpu") == expected
    assert P.resolve_precision("AUTO", "cpu") == expected


def test_no_cpuinfo_means_fp32(tmp_path):
    assert P.cpu_has_native_bf16.__wrapped__(tmp_path / "missing") is False


@pytest.mark.parametrize("forced", ["fp32", "bf16", "fp16"])
def test_forced_precision_is_honoured(cpu, forced):
    cpu(INTEL_PLAIN_AVX512)
    assert P.resolve_precision(forced, "cpu") == forced
    assert P.resolve_precision(forced.upper(), "cuda") == forced


def test_cuda_auto(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert P.resolve_precision("auto", "cuda:0") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert P.resolve_precision("auto", "cuda") == "fp16"


def test_other_devices_stay_exact():
    assert P.resolve_precision("auto", "mps") == "fp32"


@pytest.mark.parametrize("bad", ["int8", "", "float32", "half"])
def test_unknown_precision_is_a_usage_error(bad):
    with pytest.raises(UsageError, match="auto, fp32, bf16, fp16"):
        P.resolve_precision(bad, "cpu")
