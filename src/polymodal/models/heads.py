"""Projection heads that map a tower's features into the shared embedding space."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """A linear map, optionally preceded by a residual MLP, from tower features to the joint space.

    Args:
        in_dim: width of the tower's pooled features.
        out_dim: width of the joint embedding space.
        hidden: width of the residual MLP; 0 for a plain linear head.
        dropout: dropout on the tower features during training (a regulariser on a small dataset).
        identity_init: start as the identity (needs ``in_dim == out_dim``). Used for the text head so the
            joint space starts as the pretrained sentence space and keeps its semantics for zero-shot labels.
    """

    def __init__(
        self, in_dim: int, out_dim: int, *, hidden: int = 0, dropout: float = 0.0, identity_init: bool = False
    ) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.mlp: nn.Module | None = None
        if hidden:
            # Residual so the head starts close to a linear map and cannot lose the tower's signal.
            self.mlp = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, in_dim))
            last = self.mlp[-1]
            assert isinstance(last, nn.Linear)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.proj = nn.Linear(in_dim, out_dim, bias=False)
        if identity_init:
            if in_dim != out_dim:
                raise ValueError(f"identity_init needs in_dim == out_dim, got {in_dim} and {out_dim}")
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(out_dim))

    def forward(self, x: Tensor) -> Tensor:
        x = self.dropout(x)
        if self.mlp is not None:
            x = x + self.mlp(x)
        return self.proj(x)
