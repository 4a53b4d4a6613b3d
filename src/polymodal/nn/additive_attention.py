"""Attention pooling over encoder outputs: the lecture's five steps.

From the lecture's attention slide (``docs/lecture-multimodal.md``), for encoder (RNN) outputs
``h_1 .. h_T``:

1. get the encoder output values ``h_t``;
2. transform them (dimension reduction): ``u_t = tanh(W h_t)``, ``W`` trainable;
3. score them (dot-product similarity): ``e_t = qᵀ u_t``, ``q`` trainable;
4. ``[a_1 .. a_T] = softmax([e_1 .. e_T])``;
5. the context is the attention-weighted sum ``Σ_t a_t h_t``.

This is the word-attention layer of Yang et al. (2016, "Hierarchical Attention Networks", eq. 5-7),
with a trainable context vector ``q`` in place of a decoder state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from polymodal.errors import ConfigError
from polymodal.nn._checks import check_bool_mask, check_features


@dataclass
class AttentionPooling:
    """The pooled context and the weights that made it.

    Attributes:
        context: ``Σ_t a_t h_t``, shape ``(B, D)``.
        weights: ``a``, shape ``(B, T)``; 0 exactly at padded positions, rows sum to 1.
    """

    context: Tensor
    weights: Tensor


class AdditiveAttention(nn.Module):
    """Pools ``(B, T, D)`` encoder outputs into ``(B, D)`` with the lecture's five attention steps.

    Args:
        dim: Width ``D`` of the encoder outputs ``h_t``.
        attn_dim: Width of ``u_t`` (the "dimension reduction" of step 2).
        bias: Add a bias inside the tanh, ``tanh(W h_t + b)`` as in Yang et al. (2016); the lecture has none.
    """

    def __init__(self, dim: int, attn_dim: int, *, bias: bool = False) -> None:
        super().__init__()
        if dim <= 0 or attn_dim <= 0:
            raise ConfigError(f"AdditiveAttention: dim and attn_dim must be positive; got {dim}, {attn_dim}")
        self.dim = dim
        self.proj = nn.Linear(dim, attn_dim, bias=bias)  # W of step 2
        self.query = nn.Parameter(torch.randn(attn_dim) / attn_dim**0.5)  # q of step 3

    def forward(self, h: Tensor, mask: Tensor | None = None) -> AttentionPooling:
        """Pool ``h`` over time.

        Args:
            h: Encoder outputs ``(B, T, D)`` (step 1).
            mask: Bool ``(B, T)``, ``True`` = real token, ``False`` = padding. A row without any real
                token gets zero weights and a zero context.

        Returns:
            :class:`AttentionPooling` with ``context`` ``(B, D)`` and ``weights`` ``(B, T)``.
        """
        check_features("AdditiveAttention", "h", h, dim=self.dim)
        u = torch.tanh(self.proj(h))  # (B, T, A)  step 2
        e = u @ self.query  # (B, T)  step 3
        if mask is not None:
            check_bool_mask(
                "AdditiveAttention", "mask", mask, shape=tuple(h.shape[:2]), meaning="True = real token"
            )
            # exp(-inf) = 0, so padded steps get weight exactly 0; an all-padding row is kept finite
            # (scores 0) and zeroed after the softmax so no NaN reaches the gradients.
            empty = ~mask.any(dim=1, keepdim=True)  # (B, 1)
            e = e.masked_fill(~mask, float("-inf")).masked_fill(empty, 0.0)
        a = torch.softmax(e, dim=1)  # (B, T)  step 4
        if mask is not None:
            a = a.masked_fill(empty, 0.0)
        context = (a.unsqueeze(-1) * h).sum(dim=1)  # (B, D)  step 5
        return AttentionPooling(context=context, weights=a)
