"""Late fusion: a head per modality, then an average (uniform or learned weights) of their outputs."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from polymodal.errors import ConfigError
from polymodal.fusion.base import Fusion

__all__ = ["LateFusion"]


class LateFusion(Fusion):
    """``out = sum_m w_m head_m(x_m)``, ``w = softmax(a)`` learned or ``1/M`` fixed.

    Each modality decides on its own; the classifier's final linear layer after the average keeps it a
    late fusion, since a linear map of an average is the average of the linear maps.

    Args:
        dims: width of each modality.
        out_dim: width of each head's output.
        weighting: "mean" (uniform) or "learned" (softmax over a learned logit per modality).
        dropout: dropout inside the heads.
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, *, weighting: str = "learned", dropout: float = 0.0) -> None:
        super().__init__(dims, out_dim)
        if weighting not in ("mean", "learned"):
            raise ConfigError(f"LateFusion weighting must be 'mean' or 'learned', got {weighting!r}")
        self.weighting = weighting
        self.heads = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(d, out_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(out_dim, out_dim)) for m, d in self.dims.items()}
        )
        if weighting == "learned":
            self.weight_logits = nn.Parameter(torch.zeros(len(self.dims)))

    def forward(
        self, features: Mapping[str, Tensor], present: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """Fuse; arguments as :meth:`polymodal.fusion.EarlyFusion.forward`. Returns ``(B, out_dim)``."""
        v = self.vectors(features, present, masks)
        outs = torch.stack([self.heads[m](v[m]) for m in self.modalities], dim=1)  # (B, M, out)
        if self.weighting == "learned":
            w = self.weight_logits.softmax(dim=0)
        else:
            w = torch.full((len(self.modalities),), 1.0 / len(self.modalities), dtype=outs.dtype, device=outs.device)
        return (outs * w[None, :, None]).sum(dim=1)
