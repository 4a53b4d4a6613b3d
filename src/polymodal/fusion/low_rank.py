"""Low-rank multimodal fusion (LMF; Liu et al. 2018, "Efficient Low-rank Multimodal Fusion with
Modality-Specific Factors")."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from polymodal.errors import ConfigError
from polymodal.fusion.base import Fusion

__all__ = ["LowRankFusion"]


class LowRankFusion(Fusion):
    """TFN's weight tensor factorised into ``rank`` modality-specific factors (LMF eq. 6):

    ``h = sum_r w_r prod_m ([x_m; 1] W_m^(r)) + b``, computed without ever forming the outer product.

    The factors live in an ``nn.ParameterList``, so they are trained, moved with ``.to()`` and saved.
    (MultiBench's ``LowRankTensorFusion`` keeps them in a plain Python list, so they are none of those.)

    Args:
        dims: width of each modality.
        out_dim: width of the output.
        rank: number of factors ``r``.
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, *, rank: int = 4) -> None:
        super().__init__(dims, out_dim)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
            raise ConfigError(f"LowRankFusion rank must be a positive int, got {rank!r}")
        self.rank = rank
        self.factors = nn.ParameterList(
            # Xavier-normal per factor, as the LMF reference code
            nn.Parameter(nn.init.xavier_normal_(torch.empty(rank, d + 1, out_dim)))
            for d in self.dims.values()
        )
        self.fusion_weights = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, rank)))
        self.fusion_bias = nn.Parameter(torch.zeros(out_dim))

    def forward(
        self, features: Mapping[str, Tensor], present: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """Fuse; arguments as :meth:`polymodal.fusion.EarlyFusion.forward`. Returns ``(B, out_dim)``."""
        v = self.vectors(features, present, masks)
        fused = None
        for m, factor in zip(self.modalities, self.factors, strict=True):
            x = v[m]
            z = torch.cat([x, torch.ones_like(x[:, :1])], dim=-1)  # (B, D_m + 1)
            proj = torch.einsum("bd,rdo->rbo", z, factor)  # (r, B, out)
            fused = proj if fused is None else fused * proj
        assert fused is not None
        out = torch.einsum("xr,rbo->bo", self.fusion_weights, fused)  # (B, out)
        return out + self.fusion_bias
