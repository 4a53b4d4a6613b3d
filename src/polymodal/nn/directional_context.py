"""Directional context over a feature grid: what lies left of, right of, above and below each cell.

Each cell of a ``(B, D, H, W)`` map gets the summed (gated) features of every cell in the columns to
its left, the columns to its right, the rows above and the rows below, mixed back into it by a linear
map. This is the four-direction context of the Inside-Outside Net (Bell et al. 2016, "Inside-Outside
Net: Detecting Objects in Context with Skip Pooling and Recurrent Neural Networks", which sweeps a
recurrent net left, right, up and down) in its simplest, closed form: a cumulative sum in each direction.

Why: a relation such as "is the circle above the star?" holds when the circle's row is smaller than the
star's, whatever their columns. With these sums the star's own token already says "a circle is in a row
above me", so the question can be answered by finding one cell and reading one of its features, the
same two steps as "what colour is the star?", instead of fetching two positions and comparing them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["DirectionalContext", "directional_sums"]


def directional_sums(x: Tensor) -> Tensor:
    """Sums of the cells strictly left of, right of, above and below each cell.

    Args:
        x: ``(B, D, H, W)``.

    Returns:
        ``(B, 4 * D, H, W)``: [left, right, above, below], each ``(B, D, H, W)``. "Left of" is every cell
        in a smaller column, any row; "above" every cell in a smaller row, any column.
    """
    h, w = x.shape[-2:]
    cols = x.sum(dim=2)  # (B, D, W): one sum per column
    rows = x.sum(dim=3)  # (B, D, H): one sum per row
    left = cols.cumsum(dim=-1) - cols  # exclusive prefix sums: columns < j
    right = cols.sum(dim=-1, keepdim=True) - cols.cumsum(dim=-1)  # columns > j
    above = rows.cumsum(dim=-1) - rows  # rows < i
    below = rows.sum(dim=-1, keepdim=True) - rows.cumsum(dim=-1)  # rows > i
    return torch.cat(
        [
            left[:, :, None, :].expand(-1, -1, h, -1),
            right[:, :, None, :].expand(-1, -1, h, -1),
            above[:, :, :, None].expand(-1, -1, -1, w),
            below[:, :, :, None].expand(-1, -1, -1, w),
        ],
        dim=1,
    )


class DirectionalContext(nn.Module):
    """``x + W_out [Σ_left g, Σ_right g, Σ_above g, Σ_below g]`` with ``g = GELU(W_in x)``.

    The gate ``g`` lets an empty cell contribute nothing to its neighbours' sums (with a plain sum every
    background cell would add its own features, more of them near the edges).

    Args:
        dim: channels of the map.
        hidden: channels of ``g``.
    """

    def __init__(self, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or dim
        self.gate = nn.Conv2d(dim, hidden, 1)
        self.out = nn.Conv2d(4 * hidden, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, D, H, W) -> (B, D, H, W)``."""
        return x + self.out(directional_sums(nn.functional.gelu(self.gate(x))))
