"""Tensor fusion (TFN; Zadeh et al. 2017, "Tensor Fusion Network for Multimodal Sentiment Analysis")."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from polymodal.fusion.base import Fusion

__all__ = ["TensorFusion"]


class TensorFusion(Fusion):
    """Outer product of the modality vectors, each extended by a constant 1 (TFN eq. 2), then a linear map.

    The appended 1 keeps every unimodal and lower-order term inside the product: with two modalities
    ``[x;1] (x) [y;1]`` holds ``x``, ``y`` and ``x y^T``. The product has ``prod_m (D_m + 1)`` entries,
    so keep the modality widths small.

    Args:
        dims: width of each modality.
        out_dim: width of the output.
        dropout: dropout on the flattened product.
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, *, dropout: float = 0.0) -> None:
        super().__init__(dims, out_dim)
        size = 1
        for d in self.dims.values():
            size *= d + 1
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(size, out_dim)

    def forward(
        self, features: Mapping[str, Tensor], present: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """Fuse; arguments as :meth:`polymodal.fusion.EarlyFusion.forward`. Returns ``(B, out_dim)``."""
        v = self.vectors(features, present, masks)
        prod = None
        for m in self.modalities:
            x = v[m]
            z = torch.cat([x, torch.ones_like(x[:, :1])], dim=-1)  # (B, D_m + 1)
            # (B, P) x (B, D_m + 1) -> (B, P * (D_m + 1)): the running outer product, flattened
            prod = z if prod is None else (prod[:, :, None] * z[:, None, :]).flatten(1)
        assert prod is not None
        return self.proj(self.dropout(prod))
