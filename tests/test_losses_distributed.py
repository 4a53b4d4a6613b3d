"""Distributed forms of the contrastive losses.

Two layers: the collectives patched (fast, exact, any world size), then two real CPU processes on the
gloo backend. Both compare against one process holding the whole global batch, after the averaging DDP
does: the loss and ``logit_scale`` gradient are averaged over ranks, and each rank's feature gradient is
divided by the world size (the all-gather backward sums every rank's contribution; DDP's mean of the
parameter gradients then divides by W).
"""

from __future__ import annotations

import math
import os
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from polymodal.core import distributed
from polymodal.errors import ShapeError
from polymodal.losses import ClipLoss, SigLipLoss

LOGIT_SCALE = math.log(1 / 0.07)
LOGIT_BIAS = -2.0


def _global_batch(n: int, d: int, *, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1).to(dtype)
    txt = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1).to(dtype)
    return img, txt


def _single_process(loss: torch.nn.Module, img: torch.Tensor, txt: torch.Tensor) -> dict[str, torch.Tensor]:
    """Loss and gradients of one process holding the whole batch."""
    img = img.clone().requires_grad_(True)
    txt = txt.clone().requires_grad_(True)
    scale = torch.tensor(LOGIT_SCALE, dtype=img.dtype, requires_grad=True)
    bias = torch.tensor(LOGIT_BIAS, dtype=img.dtype, requires_grad=True)
    value = loss(img, txt, scale, bias) if isinstance(loss, SigLipLoss) else loss(img, txt, scale)
    value.backward()
    out = {"loss": value.detach(), "img": img.grad, "txt": txt.grad, "scale": scale.grad}
    if isinstance(loss, SigLipLoss):
        out["bias"] = bias.grad
    return out


# ---------------------------------------------------------------------------------------------------------
# Collectives patched
# ---------------------------------------------------------------------------------------------------------


class _FakeGroup:
    """Stands in for the process group: rank ``rank`` of ``len(chunks)``, fixed per-rank chunks.

    ``chunks[name][r]`` is what rank ``r`` holds for the loss argument ``name``. The fake gather with
    gradients concatenates the very chunk tensors, so when they are views of one leaf, backward sums
    every rank's loss gradient into that leaf, exactly what the real all-gather backward delivers.
    """

    def __init__(self, chunks: dict[str, tuple[torch.Tensor, ...]]) -> None:
        self.chunks = chunks
        self.rank = 0
        self.calls: list[str] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        world = len(next(iter(self.chunks.values())))
        monkeypatch.setattr(distributed, "world_size", lambda: world)
        monkeypatch.setattr(distributed, "rank", lambda: self.rank)
        monkeypatch.setattr(distributed, "all_gather_with_grad", self.gather_with_grad)
        monkeypatch.setattr(distributed, "all_gather_chunks", self.gather_chunks)

    def gather_with_grad(self, tensor: torch.Tensor, *, name: str = "tensor") -> torch.Tensor:
        assert tensor is self.chunks[name][self.rank], "the loss must gather its own local features"
        self.calls.append(f"with_grad:{name}")
        return torch.cat(self.chunks[name], dim=0)

    def gather_chunks(self, tensor: torch.Tensor, *, name: str = "tensor") -> list[torch.Tensor]:
        assert tensor is self.chunks[name][self.rank]
        self.calls.append(f"chunks:{name}")
        return [c.detach() for c in self.chunks[name]]


def _run_ranks(
    monkeypatch: pytest.MonkeyPatch, loss: torch.nn.Module, img: torch.Tensor, txt: torch.Tensor, world: int
) -> tuple[_FakeGroup, list[torch.Tensor], dict[str, torch.Tensor]]:
    """Run ``loss`` as each of ``world`` ranks, backward the sum of the rank losses, return leaf grads."""
    img = img.clone().requires_grad_(True)
    txt = txt.clone().requires_grad_(True)
    scale = torch.tensor(LOGIT_SCALE, dtype=img.dtype, requires_grad=True)
    bias = torch.tensor(LOGIT_BIAS, dtype=img.dtype, requires_grad=True)
    group = _FakeGroup({"image_features": img.chunk(world), "text_features": txt.chunk(world)})
    group.install(monkeypatch)
    losses = []
    for r in range(world):
        group.rank = r
        local_img, local_txt = group.chunks["image_features"][r], group.chunks["text_features"][r]
        if isinstance(loss, SigLipLoss):
            losses.append(loss(local_img, local_txt, scale, bias))
        else:
            losses.append(loss(local_img, local_txt, scale))
    # Each rank's logit_scale is a replica; summing the rank losses sums their gradients, and dividing
    # by W below is DDP's average.
    torch.stack(losses).sum().backward()
    grads = {"img": img.grad, "txt": txt.grad, "scale": scale.grad, "bias": bias.grad}
    return group, losses, grads


@pytest.mark.parametrize("world", [2, 4])
@pytest.mark.parametrize("local_loss", [False, True])
def test_patched_clip_loss_matches_single_process(
    monkeypatch: pytest.MonkeyPatch, local_loss: bool, world: int
) -> None:
    img, txt = _global_batch(8, 5, dtype=torch.float64)
    expected = _single_process(ClipLoss(), img, txt)  # before patching: world_size() is 1 here
    group, losses, grads = _run_ranks(monkeypatch, ClipLoss(local_loss=local_loss), img, txt, world)

    assert group.calls.count("with_grad:image_features") == world
    if local_loss:
        # Ranks see different rows, so their losses differ; their mean is the global loss.
        assert not torch.allclose(losses[0], losses[1])
        assert torch.allclose(torch.stack(losses).mean(), expected["loss"], rtol=0, atol=1e-12)
    else:
        for value in losses:
            assert torch.allclose(value, expected["loss"], rtol=0, atol=1e-12)
    for key in ("img", "txt", "scale"):
        assert torch.allclose(grads[key] / world, expected[key], rtol=0, atol=1e-12), key


def test_patched_local_loss_gradcheck(monkeypatch: pytest.MonkeyPatch) -> None:
    # The mean of the local losses over two ranks, as a function of the global batch, has the exact
    # gradient of that function through the (fake) gather.
    img, txt = _global_batch(6, 3, dtype=torch.float64, seed=1)

    def mean_local_loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        group = _FakeGroup({"image_features": img.chunk(2), "text_features": txt.chunk(2)})
        group.install(monkeypatch)
        values = []
        for r in range(2):
            group.rank = r
            chunks = group.chunks
            values.append(
                ClipLoss(local_loss=True)(chunks["image_features"][r], chunks["text_features"][r], scale)
            )
        return torch.stack(values).mean()

    scale = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        mean_local_loss, (img.requires_grad_(True), txt.requires_grad_(True), scale)
    )


def test_patched_clip_loss_without_gather_grad(monkeypatch: pytest.MonkeyPatch) -> None:
    img, txt = _global_batch(8, 5, dtype=torch.float64, seed=2)
    expected = _single_process(ClipLoss(), img, txt)
    # Global loss: the value is exact, and each rank's own rows get exactly their single-process
    # gradient (no sum over ranks), i.e. the documented 1/W scaling after DDP's average.
    group, losses, grads = _run_ranks(monkeypatch, ClipLoss(gather_with_grad=False), img, txt, 2)
    assert set(group.calls) == {"chunks:image_features", "chunks:text_features"}
    for value in losses:
        assert torch.allclose(value, expected["loss"], rtol=0, atol=1e-12)
    assert torch.allclose(grads["img"], expected["img"], rtol=0, atol=1e-12)
    assert torch.allclose(grads["txt"], expected["txt"], rtol=0, atol=1e-12)
    # Local loss: the value is still exact, the feature gradient only an approximation.
    _, losses, grads = _run_ranks(monkeypatch, ClipLoss(local_loss=True, gather_with_grad=False), img, txt, 2)
    assert torch.allclose(torch.stack(losses).mean(), expected["loss"], rtol=0, atol=1e-12)
    assert not torch.allclose(grads["img"] / 2, expected["img"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("world", [2, 4])
def test_patched_siglip_loss_matches_single_process(monkeypatch: pytest.MonkeyPatch, world: int) -> None:
    img, txt = _global_batch(8, 5, dtype=torch.float64, seed=3)
    expected = _single_process(SigLipLoss(), img, txt)
    group, losses, grads = _run_ranks(monkeypatch, SigLipLoss(), img, txt, world)
    assert group.calls == ["with_grad:text_features"] * world
    assert torch.allclose(torch.stack(losses).mean(), expected["loss"], rtol=0, atol=1e-12)
    for key in ("img", "txt", "scale", "bias"):
        assert torch.allclose(grads[key] / world, expected[key], rtol=0, atol=1e-12), key


# ---------------------------------------------------------------------------------------------------------
# Two real processes on gloo
# ---------------------------------------------------------------------------------------------------------

_CASES = {
    "clip_global": lambda: ClipLoss(local_loss=False),
    "clip_local": lambda: ClipLoss(local_loss=True),
    "clip_global_nograd": lambda: ClipLoss(local_loss=False, gather_with_grad=False),
    "siglip": lambda: SigLipLoss(),
}
_WORLD, _ROWS, _DIM = 2, 8, 6


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    """One rank: half the global batch through every case, results saved for the parent to compare."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback only; the sandbox has no other route
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=_WORLD, timeout=timedelta(seconds=60)
    )
    try:
        img, txt = _global_batch(_ROWS, _DIM, dtype=torch.float32, seed=4)
        n = _ROWS // _WORLD
        results: dict[str, dict[str, torch.Tensor] | bool] = {}
        for name, make in _CASES.items():
            local = slice(rank * n, (rank + 1) * n)
            results[name] = _single_process(make(), img[local], txt[local])  # world_size() is 2 here
        # A ragged last batch raises a ShapeError on every rank instead of hanging in the gather.
        try:
            ClipLoss()(img[: 2 + rank], txt[: 2 + rank], LOGIT_SCALE)
            results["ragged_raises"] = False
        except ShapeError as err:
            results["ragged_raises"] = "rank 1: (3, 6)" in str(err)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_two_gloo_processes_match_single_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=_WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(_WORLD)]
    assert all(r["ragged_raises"] for r in ranks)

    img, txt = _global_batch(_ROWS, _DIM, dtype=torch.float32, seed=4)
    tol = {"rtol": 0, "atol": 1e-5}
    for name, make in _CASES.items():
        expected = _single_process(make(), img, txt)
        got = [r[name] for r in ranks]
        # DDP's view: the mean of the rank losses and of the replicated scalars' gradients.
        assert torch.allclose(torch.stack([g["loss"] for g in got]).mean(), expected["loss"], **tol), name
        assert torch.allclose(torch.stack([g["scale"] for g in got]).mean(), expected["scale"], **tol), name
        if name == "siglip":
            assert torch.allclose(torch.stack([g["bias"] for g in got]).mean(), expected["bias"], **tol)
        if name.startswith("clip_global"):
            for g in got:  # every rank computes the whole global loss
                assert torch.allclose(g["loss"], expected["loss"], **tol), name
        # Feature gradients: with the gather's gradient the rank sum is divided by W like DDP does;
        # without it each rank holds only its own rows' exact gradient (the documented 1/W scaling).
        divide = 1 if name.endswith("nograd") else _WORLD
        for key in ("img", "txt"):
            stacked = torch.cat([g[key] for g in got], dim=0) / divide
            assert torch.allclose(stacked, expected[key], **tol), (name, key)
