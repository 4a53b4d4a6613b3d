"""Checks that turn the embeddings and labels given to the metrics into tensors of a known shape.

Every metric in ``polymodal.eval`` accepts torch tensors or numpy arrays; these helpers convert them once
and raise :class:`~polymodal.errors.ShapeError` naming the argument when a shape or value cannot work.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from polymodal.errors import ShapeError


def as_matrix(x: Any, *, name: str) -> torch.Tensor:
    """Return ``x`` as a float32 CPU matrix (rows, columns), checked finite.

    Args:
        x: A torch tensor, numpy array or nested list with two dimensions.
        name: The argument name, used in the error message.
    """
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    t = t.detach().to(device="cpu", dtype=torch.float32)
    if t.ndim != 2:
        raise ShapeError(f"{name}: expected a 2-D (rows, dim) array, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        # A diverged model gives NaN embeddings; ranking NaNs would return meaningless numbers silently.
        raise ShapeError(f"{name}: contains NaN or infinite values")
    return t


def as_labels(y: Any, *, name: str, length: int | None = None, num_classes: int | None = None) -> torch.Tensor:
    """Return ``y`` as a 1-D int64 CPU tensor, optionally checked for length and range ``[0, num_classes)``.

    Args:
        y: Integer labels as a torch tensor, numpy array or list.
        name: The argument name, used in the error message.
        length: The length ``y`` must have, if given.
        num_classes: Labels must lie in ``[0, num_classes)``, if given.
    """
    t = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).detach().cpu()
    if t.ndim != 1:
        raise ShapeError(f"{name}: expected a 1-D array of integer labels, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ShapeError(f"{name}: expected integer labels, got dtype {t.dtype}")
    t = t.to(torch.int64)
    if length is not None and t.numel() != length:
        raise ShapeError(f"{name}: expected {length} labels, got {t.numel()}")
    if t.numel() and int(t.min()) < 0:
        raise ShapeError(f"{name}: labels must be >= 0, found {int(t.min())}")
    if num_classes is not None and t.numel() and int(t.max()) >= num_classes:
        raise ShapeError(f"{name}: label {int(t.max())} is out of range for {num_classes} classes")
    return t
