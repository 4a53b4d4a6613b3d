"""Run a pre-norm transformer encoder when only one token of its output is read.

CLIP's towers read a single position off the last layer: the class token of the ViT, the EOT token of the
text transformer. In the last layer every other position's output is thrown away, so only that position
needs its query, attention, output projection and MLP; the other positions still contribute keys and
values. This is exact (the same numbers as the full stack at that position) and skips about 5/6 of the
last layer's multiply-adds: of the ``12 D²`` per position (``4 D²`` attention projections, ``8 D²`` MLP
with ``mlp_dim = 4 D``) only the ``2 D²`` of the key and value projections remain.

    layers[:-1] on all T positions ─ last layer: K, V from all T; Q, attention, MLP at one position
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from polymodal.errors import ConfigError
from polymodal.nn import TransformerEncoder, TransformerEncoderLayer


def encode_one_position(encoder: TransformerEncoder, x: Tensor, index: Tensor, *, causal: bool) -> Tensor:
    """The encoder's output at position ``index[b]`` of each row ``b``, ``(B, D)``, before any final norm.

    Args:
        encoder: A pre-norm stack (``norm_first=True``).
        x: Its input ``(B, T, D)``.
        index: ``(B,)`` int64, the position read from each row.
        causal: Causal self-attention; in the last layer the read position then sees keys ``<= index``,
            so positions after it (right padding) are ignored there as in every layer before.
    """
    layers = list(encoder.layers)
    last = layers[-1]
    if not isinstance(last, TransformerEncoderLayer) or not last.norm_first:
        raise ConfigError("encode_one_position: needs a pre-norm TransformerEncoder")
    for layer in layers[:-1]:
        x = layer(x, causal=causal)

    batch, length, _ = x.shape
    rows = torch.arange(batch, device=x.device)
    attn = last.self_attn
    dim = attn.dim
    h = last.norm1(x)  # (B, T, D) every position feeds the keys and values
    w, b = attn.in_proj.weight, attn.in_proj.bias
    q = F.linear(h[rows, index], w[:dim], None if b is None else b[:dim])  # (B, D)
    kv = F.linear(h, w[dim:], None if b is None else b[dim:])  # (B, T, 2D)
    q = rearrange(q, "b (h d) -> b h 1 d", h=attn.heads)  # (B, H, 1, Dh)
    k, v = rearrange(kv, "b t (two h d) -> two b h t d", two=2, h=attn.heads)  # 2 x (B, H, T, Dh)
    mask = None
    if causal and bool((index != length - 1).any()):
        mask = (torch.arange(length, device=x.device)[None, :] <= index[:, None])[:, None, None, :]  # (B, 1, 1, T)
    dropout = attn.dropout if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # (B, H, 1, Dh)
    out = attn.out_proj(rearrange(out, "b h 1 d -> b (h d)"))  # (B, D)
    y = x[rows, index] + last.drop(out)
    return y + last.drop(last.mlp(last.norm2(y)))  # (B, D)


__all__ = ["encode_one_position"]
