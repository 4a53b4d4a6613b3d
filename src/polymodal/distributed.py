"""Small helpers for data-parallel training with ``torch.distributed``.

On one process (the common case on CPU) every helper is a no-op: ``world_size()`` is 1, ``rank()`` is 0
and the gathers return their input. Under ``torch.distributed`` (gloo on CPU, NCCL on GPUs) they gather
the per-process batch so that a contrastive loss can score every local example against the negatives of
the whole global batch, as OpenCLIP's ``ClipLoss`` does (Ilharco et al. 2021; Radford et al. 2021).

Losses call these helpers through the module (``distributed.world_size()``), so tests can patch them.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from polymodal.errors import ShapeError

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
