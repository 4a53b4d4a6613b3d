"""Positional encodings: the lecture's fixed sinusoids and a learned table.

The lecture: "Self-attention is permutation invariant (looks at the input as a set of elements). We use
positional encoding to add the position information to the input embedding vectors", with

    PE(pos, i) = sin(pos / 10000^(i / d))        if i is even,
    PE(pos, i) = cos(pos / 10000^((i - 1) / d))  if i is odd,

(Vaswani et al. 2017, sec. 3.5). Both modules add the encoding to ``x`` of shape ``(B, T, D)``; an
``offset`` shifts the positions for incremental decoding, where step ``t`` holds position ``offset + t``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polymodal.errors import ConfigError, ShapeError
from polymodal.nn._checks import check_features


def sinusoidal_table(max_len: int, dim: int) -> Tensor:
    """The lecture's table ``PE`` of shape ``(max_len, dim)`` in float32 (computed in float64).

    Args:
        max_len: Number of positions ``0 .. max_len - 1``.
        dim: Model width ``d``; may be odd (the last column is then a sine).
    """
    if max_len <= 0 or dim <= 0:
        raise ConfigError(
            f"sinusoidal_table: max_len and dim must be positive; got max_len={max_len}, dim={dim}"
        )
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]  # (L, 1)
    i = torch.arange(dim)
    # Even i uses exponent i / d, odd i the exponent of its even neighbour, (i - 1) / d.
    exponent = (i - i % 2).to(torch.float64) / dim  # (D,)
    angle = pos / torch.pow(10000.0, exponent)  # (L, D)
    table = torch.where(i % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.to(torch.float32)


def _check_positions(owner: str, x: Tensor, dim: int, offset: int, max_len: int) -> None:
    check_features(owner, "x", x, dim=dim)
    if offset < 0 or offset + x.shape[1] > max_len:
        raise ShapeError(
            f"{owner}: positions {offset} .. {offset + x.shape[1] - 1} do not fit max_len={max_len} "
            f"(x has T={x.shape[1]}, offset={offset})"
        )


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the lecture's fixed sinusoidal encoding ``PE(pos, i)`` to token embeddings.

    The table is a non-persistent buffer: it is recomputed, not stored in checkpoints.

    Args:
        dim: Model width ``d``.
        max_len: Longest sequence (plus offset) that can be encoded.
    """

    table: Tensor

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        self.dim = dim
        self.max_len = max_len
        self.register_buffer("table", sinusoidal_table(max_len, dim), persistent=False)  # (L, D)

    def forward(self, x: Tensor, *, offset: int = 0) -> Tensor:
        """Return ``x + PE[offset : offset + T]``.

        Args:
            x: Embeddings ``(B, T, D)``.
            offset: Position of ``x[:, 0]``.
        """
        _check_positions("SinusoidalPositionalEncoding", x, self.dim, offset, self.max_len)
        return x + self.table[offset : offset + x.shape[1]].to(x.dtype)  # (B, T, D)


class LearnedPositionalEmbedding(nn.Module):
    """Adds a learned vector per position (as BERT, GPT-2 and ViT do) to token embeddings.

    Args:
        dim: Model width ``D``.
        max_len: Number of positions in the table.
        init_std: Standard deviation of the truncated-normal initialisation (0.02 as in BERT/ViT).
    """

    def __init__(self, dim: int, max_len: int, *, init_std: float = 0.02) -> None:
        super().__init__()
        if max_len <= 0 or dim <= 0:
            raise ConfigError(
                f"LearnedPositionalEmbedding: max_len and dim must be positive; got {max_len}, {dim}"
            )
        self.dim = dim
        self.max_len = max_len
        self.weight = nn.Parameter(torch.empty(max_len, dim))  # (L, D)
        nn.init.trunc_normal_(self.weight, std=init_std, a=-2 * init_std, b=2 * init_std)

    def forward(self, x: Tensor, *, offset: int = 0) -> Tensor:
        """Return ``x + weight[offset : offset + T]``.

        Args:
            x: Embeddings ``(B, T, D)``.
            offset: Position of ``x[:, 0]``.
        """
        _check_positions("LearnedPositionalEmbedding", x, self.dim, offset, self.max_len)
        return x + self.weight[offset : offset + x.shape[1]]  # (B, T, D)
