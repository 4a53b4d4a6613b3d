"""Early fusion: concatenate the modality vectors and mix them with an MLP."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from polymodal.fusion.base import Fusion

__all__ = ["EarlyFusion"]


class EarlyFusion(Fusion):
    """``out = W2 act(W1 [x_1; ...; x_M])`` (MultiBench ``Concat`` followed by the first MLP layers).

    Args:
        dims: width of each modality.
        out_dim: width of the output.
        hidden_dim: width of the hidden layer; defaults to ``out_dim``.
        dropout: dropout after the activation.
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, *, hidden_dim: int | None = None, dropout: float = 0.0) -> None:
        super().__init__(dims, out_dim)
        hidden = hidden_dim or out_dim
        self.mlp = nn.Sequential(
            nn.Linear(sum(self.dims.values()), hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
        )

    def forward(
        self, features: Mapping[str, Tensor], present: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """Fuse.

        Args:
            features: ``(B, D_m)`` or ``(B, N_m, D_m)`` per modality.
            present: ``(B,)`` bool per modality.
            masks: optional ``(B, N_m)`` bool valid-token masks.

        Returns:
            ``(B, out_dim)``.
        """
        v = self.vectors(features, present, masks)
        return self.mlp(torch.cat([v[m] for m in self.modalities], dim=-1))  # (B, sum D_m)
