"""Input checks shared by the layers in ``polymodal.nn``.

Each check raises :class:`polymodal.errors.ShapeError` with one message that names the module, the
argument, what was expected and what arrived, so a wrong mask fails at the call that passed it and not
as a broadcasting error three functions deeper.
"""

from __future__ import annotations

import torch
from torch import Tensor

from polymodal.errors import ShapeError


def describe(t: Tensor) -> str:
    """Return ``"float32 tensor of shape (2, 5, 8)"`` for error messages.

    Args:
        t: Any tensor.
    """
    return f"{str(t.dtype).removeprefix('torch.')} tensor of shape {tuple(t.shape)}"


def check_features(owner: str, name: str, t: Tensor, *, dim: int, ndim: int = 3) -> None:
    """Check that ``t`` is a floating tensor with ``ndim`` dimensions and ``dim`` features last.

    Args:
        owner: Module or function name used in the message.
        name: Argument name used in the message.
        t: The tensor to check.
        dim: Expected size of the last dimension.
        ndim: Expected number of dimensions.
    """
    if not isinstance(t, Tensor):
        raise ShapeError(f"{owner}: {name} must be a tensor; got {type(t).__name__}")
    if t.ndim != ndim or t.shape[-1] != dim or not t.is_floating_point():
        expected = "(B, T, D)" if ndim == 3 else f"{ndim} dims"
        raise ShapeError(
            f"{owner}: {name} must be a floating tensor of shape {expected} with D = {dim}; got {describe(t)}"
        )


def check_bool_mask(owner: str, name: str, mask: Tensor, *, shape: tuple[int, ...], meaning: str) -> None:
    """Check that ``mask`` is a bool tensor of exactly ``shape``.

    Args:
        owner: Module or function name used in the message.
        name: Argument name used in the message.
        mask: The mask to check.
        shape: The required shape.
        meaning: What ``True`` means, e.g. ``"True = pad"``, repeated in the message.
    """
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != shape:
        got = describe(mask) if isinstance(mask, Tensor) else type(mask).__name__
        raise ShapeError(f"{owner}: {name} must be a bool tensor of shape {shape} ({meaning}); got {got}")
