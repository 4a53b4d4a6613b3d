"""Gated fusion: a gated multimodal unit (Arevalo et al. 2017, "Gated Multimodal Units for Information
Fusion"), generalised from two modalities to any number with a softmax gate."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from polymodal.fusion.base import Fusion

__all__ = ["GatedFusion"]


class GatedFusion(Fusion):
    """``h_m = tanh(W_m x_m)``, ``z = softmax(W_z [x_1; ...; x_M])`` per output unit, ``h = sum_m z_m h_m``.

    The gate sees all modalities, so it can learn to lean on one when another is absent or noisy
    (GMU eq. 1-4; with two modalities the softmax is the paper's sigmoid ``z`` and ``1 - z``).

    Args:
        dims: width of each modality.
        out_dim: width of the output.
        dropout: dropout on the output.
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, *, dropout: float = 0.0) -> None:
        super().__init__(dims, out_dim)
        self.proj = nn.ModuleDict({m: nn.Linear(d, out_dim) for m, d in self.dims.items()})
        self.gate = nn.Linear(sum(self.dims.values()), out_dim * len(self.dims))
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, features: Mapping[str, Tensor], present: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """Fuse; arguments as :meth:`polymodal.fusion.EarlyFusion.forward`. Returns ``(B, out_dim)``."""
        v = self.vectors(features, present, masks)
        h = torch.stack([torch.tanh(self.proj[m](v[m])) for m in self.modalities], dim=1)  # (B, M, out)
        logits = self.gate(torch.cat([v[m] for m in self.modalities], dim=-1))  # (B, M * out)
        z = logits.view(-1, len(self.modalities), self.out_dim).softmax(dim=1)  # (B, M, out)
        return self.dropout((z * h).sum(dim=1))
