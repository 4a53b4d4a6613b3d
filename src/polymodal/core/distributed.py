"""Data-parallel training with ``torch.distributed``: the process group, the gathers, who logs.

On one process (the common case on CPU) every helper is a no-op: ``world_size()`` is 1, ``rank()`` is 0
and the gathers return their input. Under ``torch.distributed`` (gloo on CPU, NCCL on GPUs) they gather
the per-process batch so that a contrastive loss can score every local example against the negatives of
the whole global batch, as OpenCLIP's ``ClipLoss`` does (Ilharco et al. 2021; Radford et al. 2021).

Losses call these helpers through the module (``distributed.world_size()``), so tests can patch them.

``torchrun --nproc-per-node N -m polymodal train ...`` starts N copies of the CLI with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment.
:func:`distributed_session` turns that environment into a ``torch.distributed`` process group (gloo on
CPUs, NCCL on GPUs) with a timeout, so a rank that dies or hangs stops the job with a one-line error
instead of leaving the others blocked in a collective forever. Without those variables (or with
``WORLD_SIZE=1``) nothing is initialised and every helper here is a no-op: one process is the plain
single-process run.

The helpers are the pieces the trainer needs and ``DistributedDataParallel`` would otherwise hide:

* :func:`rank_slices` splits a global batch by index, so rank ``r`` gets a contiguous slice and the
  rank-ordered concatenation is the global batch in its original order.
* :func:`gather_rows` all-gathers per-rank rows of *unequal* counts with gradients (pad, gather, trim),
  so a ragged last batch stays exact.
* :func:`all_reduce_grads` sums the trainable gradients over ranks in one flat buffer: the
  gradient all-reduce of DDP (Li et al. 2020, "PyTorch Distributed"), done once per optimiser step,
  which is DDP's ``no_sync`` behaviour under gradient accumulation.
* :func:`broadcast_params` makes every rank start from rank 0's weights, as DDP does at wrap time.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from polymodal.errors import ConfigError, PolymodalError, ShapeError

# ---------------------------------------------------------------------------------------------------------
# Process-group queries
# ---------------------------------------------------------------------------------------------------------


def is_dist() -> bool:
    """Whether a ``torch.distributed`` process group is available and initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the default group; 0 when not distributed."""
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    """Number of processes in the default group; 1 when not distributed."""
    return dist.get_world_size() if is_dist() else 1


# ---------------------------------------------------------------------------------------------------------
# Gathers
# ---------------------------------------------------------------------------------------------------------


def _check_same_shape(tensor: Tensor, *, name: str) -> None:
    """Raise ``ShapeError`` on every rank when the ranks' tensors differ in shape.

    ``all_gather`` needs equal shapes; without this check a ragged last batch either hangs or fails deep
    inside the backend. The check costs one tiny collective.
    """
    shape = torch.tensor(tensor.shape, dtype=torch.long, device=tensor.device)
    shapes = [torch.empty_like(shape) for _ in range(dist.get_world_size())]
    dist.all_gather(shapes, shape)
    if any(not torch.equal(s, shapes[0]) for s in shapes):
        listed = ", ".join(f"rank {r}: {tuple(s.tolist())}" for r, s in enumerate(shapes))
        raise ShapeError(
            f"{name}: every process must pass the same shape to the all-gather (drop the last "
            f"incomplete batch, e.g. DataLoader(drop_last=True)); got {listed}"
        )


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward routes gradients back to the rank that sent each chunk.

    Every rank's loss may depend on every rank's chunk, so the gradient of the summed loss
    ``sum_r L_r`` w.r.t. the local chunk is the sum over ranks of each rank's gradient on that slice:
    an all-reduce (sum) of the full gradient, then the local slice. ``torch.distributed.nn.all_gather``
    does the same with a reduce-scatter; all-reduce is used here because every backend, gloo included,
    implements it.
    """

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        ctx.rank = dist.get_rank()
        ctx.rows = tensor.shape[0]
        chunks = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(chunks, tensor.contiguous())
        return torch.cat(chunks, dim=0)  # (W * n, ...)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        # Clone: all_reduce works in place and autograd may share ``grad`` with other consumers.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.rows
        return grad[start : start + ctx.rows]  # (n, ...)


def all_gather_with_grad(tensor: Tensor, *, name: str = "tensor") -> Tensor:
    """Concatenate ``tensor`` from every process along dim 0, keeping the autograd graph.

    The backward pass sums, over processes, the gradient each process's loss puts on this process's
    chunk. So if every rank ``r`` computes ``L_r`` and calls ``backward``, the local chunk receives
    ``d(sum_r L_r)/d chunk``; DDP's averaging of parameter gradients (divide by ``W``) then yields the
    gradient of ``mean_r L_r``, the loss of the global batch.

    Args:
        tensor: ``(n, ...)`` local tensor; every process must pass the same shape.
        name: argument name used in the error message when the shapes differ.

    Returns:
        ``(W * n, ...)``: the chunks of ranks ``0 .. W-1`` in order; the input itself when not
        distributed.
    """
    if not is_dist() or dist.get_world_size() == 1:
        return tensor
    _check_same_shape(tensor, name=name)
    return _AllGatherWithGrad.apply(tensor)


def all_gather_chunks(tensor: Tensor, *, name: str = "tensor") -> list[Tensor]:
    """Gather ``tensor`` from every process without gradients.

    Args:
        tensor: ``(n, ...)`` local tensor; every process must pass the same shape.
        name: argument name used in the error message when the shapes differ.

    Returns:
        One ``(n, ...)`` tensor per rank, in rank order, detached from the graph; ``[tensor]`` when not
        distributed. Callers that want the local gradient put ``tensor`` back at index ``rank()``.
    """
    if not is_dist() or dist.get_world_size() == 1:
        return [tensor]
    _check_same_shape(tensor, name=name)
    chunks = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(chunks, tensor.detach().contiguous())
    return chunks


# ---------------------------------------------------------------------------------------------------------
# Launching under torchrun
# ---------------------------------------------------------------------------------------------------------

DEFAULT_TIMEOUT_S = 600.0  # a collective that waits longer than this fails the job instead of hanging


class DistributedError(PolymodalError):
    """Another process of the job failed or stopped answering; this process stops too."""


# ---------------------------------------------------------------------------------------------------------
# The process group
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LaunchEnv:
    """What ``torchrun`` (or Slurm via ``torchrun``) put in the environment.

    Args:
        rank: global rank of this process.
        world_size: number of processes in the job.
        local_rank: rank on this machine (selects the GPU under NCCL).
    """

    rank: int
    world_size: int
    local_rank: int

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size or self.local_rank < 0:
            raise ConfigError(
                f"torchrun environment: RANK={self.rank}, WORLD_SIZE={self.world_size}, "
                f"LOCAL_RANK={self.local_rank} do not fit together"
            )


def launch_env() -> LaunchEnv:
    """The launcher's variables; one process (rank 0 of 1) when they are absent."""

    def _int(name: str, default: int) -> int:
        raw = os.environ.get(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None

    return LaunchEnv(_int("RANK", 0), _int("WORLD_SIZE", 1), _int("LOCAL_RANK", 0))


def timeout_seconds() -> float:
    """``$POLYMODAL_DIST_TIMEOUT`` (seconds) or :data:`DEFAULT_TIMEOUT_S`."""
    raw = os.environ.get("POLYMODAL_DIST_TIMEOUT", "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"POLYMODAL_DIST_TIMEOUT={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise ConfigError(f"POLYMODAL_DIST_TIMEOUT must be positive, got {value}")
    return value


def _backend() -> str:
    # NCCL only moves CUDA tensors; the trainer's tensors are on the CPU unless CUDA is there.
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def _is_comm_failure(e: BaseException) -> bool:
    """Whether ``e`` is a collective that failed because a peer died, hung up or timed out."""
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(
        s in text for s in ("connection closed", "connection reset", "timed out", "timeout", "gloo", "nccl",
                            "broken pipe", "socket", "peer")
    )


@contextlib.contextmanager
def distributed_session(*, timeout_s: float | None = None) -> Iterator[LaunchEnv]:
    """Initialise the process group from the launcher's environment for the duration of a command.

    Under one process this yields ``LaunchEnv(0, 1, 0)`` and does nothing else. Under ``torchrun`` it
    initialises gloo (CPU) or NCCL (GPU, one per ``LOCAL_RANK``) with ``timeout_s`` on every collective,
    and on the way out destroys the group. A collective that fails because another rank died or timed
    out becomes a :class:`DistributedError` naming this rank, which the CLI prints as one line and
    exits non-zero; ``torchrun`` then stops the remaining processes.

    Args:
        timeout_s: collective timeout; default :func:`timeout_seconds`.
    """
    env = launch_env()
    if env.world_size == 1 or is_dist():
        yield env
        return
    backend = _backend()
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    timeout = datetime.timedelta(seconds=timeout_s if timeout_s is not None else timeout_seconds())
    try:
        dist.init_process_group(backend=backend, timeout=timeout)
    except Exception as e:  # rendezvous errors come as several types; all mean "cannot form the job"
        raise DistributedError(f"rank {env.rank}: cannot join the process group ({type(e).__name__}: {e})") from None
    try:
        yield env
    except PolymodalError:
        raise
    except Exception as e:
        if _is_comm_failure(e):
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DistributedError(
                f"rank {env.rank} of {env.world_size}: another process failed or stopped answering "
                f"({first[:200]}); the job stops. Fix the cause and rerun with --resume to continue from "
                "the last checkpoint, with any number of processes"
            ) from None
        raise
    finally:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def is_main() -> bool:
    """True on rank 0 (and on a single process): the one process that logs and writes files."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank; a no-op on one process."""
    if is_dist():
        dist.barrier()


def main_print(*args: object, file: Any = None) -> None:
    """``print`` on rank 0 only, so N processes do not repeat every line."""
    if is_main():
        print(*args, file=file or sys.stdout, flush=True)


# ---------------------------------------------------------------------------------------------------------
# Splitting a global batch and gathering it back
# ---------------------------------------------------------------------------------------------------------


def rank_slices(n: int, world: int) -> list[slice]:
    """Contiguous, near-equal slices of ``range(n)``, one per rank in rank order (the first ``n % world``
    ranks get one row more), so concatenating the ranks' rows gives back ``range(n)`` in order."""
    base, extra = divmod(n, world)
    out, start = [], 0
    for r in range(world):
        stop = start + base + (1 if r < extra else 0)
        out.append(slice(start, stop))
        start = stop
    return out


def gather_rows(x: Tensor, counts: Sequence[int], *, name: str = "features") -> Tensor:
    """All ranks' rows in rank order, with gradients, when ranks hold different numbers of rows.

    ``all_gather`` needs one shape on every rank, so each rank pads its ``(counts[rank], ...)`` rows to
    ``max(counts)``, gathers through :func:`all_gather_with_grad` and drops the
    padding. The padding rows get no gradient; every real row gets the sum over ranks of the gradient
    their losses put on it.

    Args:
        x: ``(counts[rank], ...)`` this rank's rows. It should require grad on every rank when any rank's
            does: the backward pass of the gather is itself a collective that every rank must join.
        counts: rows per rank, known to every rank (they follow from the global batch).
        name: argument name for error messages.

    Returns:
        ``(sum(counts), ...)`` the global rows in rank order; ``x`` itself on one process.
    """
    if not is_dist() or len(counts) == 1:
        return x
    me = rank()
    if x.shape[0] != counts[me]:
        raise ValueError(f"{name}: rank {me} has {x.shape[0]} rows but counts says {counts[me]}")
    width = max(counts)
    if x.shape[0] < width:
        pad = x.new_zeros(width - x.shape[0], *x.shape[1:])
        x = torch.cat([x, pad])  # (width, ...)
    full = all_gather_with_grad(x, name=name)  # (W * width, ...)
    return torch.cat([full[r * width : r * width + c] for r, c in enumerate(counts)])  # (sum(counts), ...)


# ---------------------------------------------------------------------------------------------------------
# Keeping the replicas identical
# ---------------------------------------------------------------------------------------------------------


def all_reduce_grads(params: Sequence[Tensor]) -> None:
    """Sum ``p.grad`` over ranks in place, through one flat buffer (one collective per step).

    A parameter without a gradient on this rank contributes zeros, so every rank joins the same
    collective with the same buffer size whatever its data touched.
    """
    if not is_dist() or world_size() == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])  # (P,)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


@torch.no_grad()
def broadcast_params(params: Sequence[Tensor]) -> None:
    """Copy rank 0's values of ``params`` to every rank (DDP does this when it wraps a model)."""
    if not is_dist() or world_size() == 1:
        return
    flat = torch.cat([p.detach().reshape(-1) for p in params])  # (P,)
    dist.broadcast(flat, src=0)
    offset = 0
    for p in params:
        p.copy_(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()


def all_reduce_sum(value: float) -> float:
    """A Python float summed over ranks (the value itself on one process)."""
    if not is_dist():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def gather_to_main(obj: object) -> list[object] | None:
    """Every rank's ``obj`` on rank 0, in rank order (``None`` on the other ranks); ``[obj]`` alone."""
    if not is_dist():
        return [obj]
    out: list[object] | None = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


# ---------------------------------------------------------------------------------------------------------
# Fault injection, for the tests that kill a rank mid-run
# ---------------------------------------------------------------------------------------------------------


def maybe_fail(step: int) -> None:
    """Kill this process at global optimiser step ``step`` when ``$POLYMODAL_FAIL_RANK`` names this rank
    and ``$POLYMODAL_FAIL_STEP`` equals ``step``: a crash with no clean-up, like an out-of-memory kill."""
    want_rank, want_step = os.environ.get("POLYMODAL_FAIL_RANK"), os.environ.get("POLYMODAL_FAIL_STEP")
    if want_rank is None or want_step is None:
        return
    if int(want_rank) == rank() and int(want_step) == step:
        sys.stderr.write(f"rank {rank()}: injected failure at step {step}\n")
        sys.stderr.flush()
        os._exit(17)
