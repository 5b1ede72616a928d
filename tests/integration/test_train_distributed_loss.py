"""The multi-process path of the losses: two gloo processes on the CPU.

Each rank holds half of a global batch. With features gathered *with* gradients, the mean
of the per-rank losses must equal the single-process loss on the whole batch, and the
gradient each rank gets for its own features must equal world_size × the global
gradient of those rows (DDP then averages parameter gradients over ranks).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from clipsearch.train.loss import clip_loss, siglip_loss

WORLD = 2
N_LOCAL = 4
DIM = 8
LOSSES = {"clip": clip_loss, "siglip": siglip_loss}


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    img = F.normalize(torch.randn(WORLD * N_LOCAL, DIM, generator=g, dtype=torch.float64), dim=-1)
    txt = F.normalize(img + torch.randn(img.shape, generator=g, dtype=torch.float64), dim=-1)
    return img, txt


def _worker(rank: int, store: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    try:
        img, txt = _global_batch()
        rows = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        for name, fn in LOSSES.items():
            local_img = img[rows].clone().requires_grad_()
            local_txt = txt[rows].clone().requires_grad_()
            scale = torch.tensor(10.0, dtype=torch.float64)
            bias = torch.tensor(-2.0, dtype=torch.float64)
            loss = fn(local_img, local_txt, scale, bias, rank=rank, world_size=WORLD)
            loss.backward()
            torch.save(
                {"loss": loss.detach(), "img_grad": local_img.grad, "txt_grad": local_txt.grad},
                Path(out_dir) / f"{name}-rank{rank}.pt",
            )
        dist.barrier()  # both ranks done before either tears gloo down
    finally:
        dist.destroy_process_group()
    # gloo's background threads can abort interpreter teardown ("terminate called without an
    # active exception", seen once in CI); the results are on disk, so leave at once.
    os._exit(0)


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> Path:
    """Run both losses once in two spawned gloo processes (spawning costs seconds)."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this torch build")
    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(_worker, args=(str(out / "store"), str(out)), nprocs=WORLD, join=True)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("loss_name", ["clip", "siglip"])
def test_two_rank_loss_equals_single_process_global_loss(rank_results, loss_name):
    results = [
        torch.load(rank_results / f"{loss_name}-rank{r}.pt", weights_only=True)
        for r in range(WORLD)
    ]

    img, txt = _global_batch()
    img.requires_grad_()
    txt.requires_grad_()
    scale = torch.tensor(10.0, dtype=torch.float64)
    bias = torch.tensor(-2.0, dtype=torch.float64)
    if loss_name == "clip":
        global_loss = clip_loss(img, txt, scale, bias)
    else:
        # SigLIP sums over the whole (N, N) matrix and divides by the rows of one rank,
        # so the global loss over W ranks is the mean of the per-rank losses.
        global_loss = siglip_loss(img, txt, scale, bias)
    global_loss.backward()

    mean_loss = sum(r["loss"] for r in results) / WORLD
    torch.testing.assert_close(mean_loss, global_loss.detach(), rtol=1e-10, atol=1e-12)
    for rank, r in enumerate(results):
        rows = slice(rank * N_LOCAL, (rank + 1) * N_LOCAL)
        torch.testing.assert_close(r["img_grad"], WORLD * img.grad[rows], rtol=1e-8, atol=1e-12)
        torch.testing.assert_close(r["txt_grad"], WORLD * txt.grad[rows], rtol=1e-8, atol=1e-12)
