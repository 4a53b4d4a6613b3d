"""Dot-product attention as a soft lookup table, and multi-head attention.

The lecture (``docs/lecture-multimodal.md``, "Attention is weighted averaging, which lets you do
lookups!"): the *query* matches every *key* softly, to a weight between 0 and 1, and the keys' *values*
are multiplied by those weights and summed. A lookup table is the limit in which the query matches
exactly one key and returns its value. Transformers use the scaled form of Vaswani et al. (2017, eq. 1),
``Attention(Q, K, V) = softmax(Q Kᵀ / √d_k) V``, run in several heads side by side (eq. 4-5; the
lecture: "multi-head attention looks at different aspects of the inputs").

Mask conventions follow the code each piece is compared with:

* :func:`dot_product_attention` takes ``mask`` with ``True`` = *may attend* (as
  ``torch.nn.functional.scaled_dot_product_attention``);
* :class:`MultiHeadAttention` takes ``key_padding_mask`` and bool ``attn_mask`` with ``True`` = *masked
  out* (as ``torch.nn.MultiheadAttention``), so masks built for torch layers work unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from polymodal.errors import CheckpointError, ConfigError, ShapeError
from polymodal.nn._checks import check_bool_mask, check_features, describe

# ---------------------------------------------------------------------------------------------------
# Outputs and cache
# ---------------------------------------------------------------------------------------------------


@dataclass
class AttentionOutput:
    """What an attention call returns.

    Attributes:
        output: The attended values, ``(..., T, Dv)`` from :func:`dot_product_attention` and
            ``(B, T, D)`` from :class:`MultiHeadAttention`.
        weights: The attention distribution over keys, ``(..., T, S)`` or per head ``(B, H, T, S)``;
            rows sum to 1 (0 for a query that may attend to no key). ``None`` when not requested.
    """

    output: Tensor
    weights: Tensor | None


@dataclass
class KVCache:
    """Projected keys and values kept between incremental decoding steps of one attention layer.

    Attributes:
        key: Keys seen so far, ``(B, H, S, Dh)``; ``None`` before the first step.
        value: Values seen so far, ``(B, H, S, Dh)``; ``None`` before the first step.
        static: ``True`` for encoder-decoder (cross) attention: the memory's keys and values are
            projected once on the first step and reused; ``False`` for self-attention, where each step's
            new keys and values are appended.
    """

    key: Tensor | None = None
    value: Tensor | None = None
    static: bool = False

    @property
    def length(self) -> int:
        """Number of cached key positions ``S`` (0 when empty)."""
        return 0 if self.key is None else int(self.key.shape[-2])


# ---------------------------------------------------------------------------------------------------
# The soft lookup table
# ---------------------------------------------------------------------------------------------------


def dot_product_attention(
    q: Tensor, k: Tensor, v: Tensor, *, temperature: float = 1.0, mask: Tensor | None = None
) -> AttentionOutput:
    """Soft lookup of ``v`` by matching ``q`` against ``k`` (lecture: attention is weighted averaging).

    ``weights = softmax(q kᵀ / (√d · temperature))`` and ``output = weights v``. With ``temperature = 1``
    this is the scaled dot-product attention of Vaswani et al. (2017, eq. 1). As the temperature goes to
    0 the softmax becomes an argmax and the call turns into the lecture's lookup table: each query
    returns the value of its best-matching key. ``temperature = 0`` computes that limit exactly (a tie
    between keys shares the weight equally, as the limit of the softmax does).

    Args:
        q: Queries ``(..., T, D)``.
        k: Keys ``(..., S, D)``; leading dimensions equal to those of ``q``.
        v: Values ``(..., S, Dv)``.
        temperature: Divides the scores; ``>= 0``.
        mask: Either bool, ``True`` = this query may attend to this key, or floating, added to the
            scores (``-inf`` blocks a key). Broadcastable to ``(..., T, S)``. A query with no allowed
            key gets all-zero weights and a zero output.

    Returns:
        :class:`AttentionOutput` with ``output`` ``(..., T, Dv)`` and ``weights`` ``(..., T, S)``.
    """
    owner = "dot_product_attention"
    if not all(isinstance(t, Tensor) and t.ndim >= 2 and t.is_floating_point() for t in (q, k, v)):
        raise ShapeError(f"{owner}: q, k and v must be floating tensors with at least 2 dims")
    if q.shape[:-2] != k.shape[:-2] or k.shape[:-1] != v.shape[:-1] or q.shape[-1] != k.shape[-1]:
        raise ShapeError(
            f"{owner}: expected q (..., T, D), k (..., S, D), v (..., S, Dv) with equal leading dims; "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if not temperature >= 0.0:
        raise ConfigError(f"{owner}: temperature must be >= 0; got {temperature}")

    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (..., T, S)
    if mask is not None:
        if not isinstance(mask, Tensor) or not (mask.dtype == torch.bool or mask.is_floating_point()):
            raise ShapeError(f"{owner}: mask must be a bool or floating tensor; got {type(mask).__name__}")
        try:
            fits = torch.broadcast_shapes(mask.shape, scores.shape) == scores.shape
        except RuntimeError:
            fits = False
        if not fits:
            raise ShapeError(
                f"{owner}: mask must broadcast to (..., T, S) = {tuple(scores.shape)}; got {describe(mask)}"
            )
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask

    # A query whose keys are all blocked sees nothing: give it zero weights rather than the 0/0 = NaN of
    # the softmax (as scaled_dot_product_attention does); fill its scores first so no NaN reaches autograd.
    empty = torch.isneginf(scores).all(dim=-1, keepdim=True)  # (..., T, 1)
    scores = scores.masked_fill(empty, 0.0)
    if temperature == 0.0:
        best = scores == scores.amax(dim=-1, keepdim=True)  # (..., T, S) the argmax keys
        weights = best.to(scores.dtype) / best.sum(dim=-1, keepdim=True)
    else:
        weights = torch.softmax(scores / temperature, dim=-1)
    weights = weights.masked_fill(empty, 0.0)
    return AttentionOutput(output=weights @ v, weights=weights)


# ---------------------------------------------------------------------------------------------------
# Multi-head attention
# ---------------------------------------------------------------------------------------------------


class MultiHeadAttention(nn.Module):
    """Multi-head self- or cross-attention (Vaswani et al. 2017, eq. 4-5) on ``scaled_dot_product_attention``.

    ``MultiHead(Q, K, V) = Concat(head_1, ..., head_H) W_o`` with ``head_h = Attention(Q W_q^h, K W_k^h,
    V W_v^h)``. The parameters are laid out as in ``torch.nn.MultiheadAttention``: ``in_proj`` holds
    ``[W_q; W_k; W_v]`` stacked into one ``(3D, D)`` weight and ``out_proj`` is ``W_o``, so
    :meth:`from_torch` / :func:`load_torch_mha_state` copy four tensors. Inputs are batch-first.

    Args:
        dim: Model width ``D`` of queries, keys and values.
        heads: Number of heads ``H``; ``D`` must be divisible by ``H``.
        bias: Learn biases in the input and output projections.
        dropout: Dropout probability on the attention weights, applied in training mode only.
    """

    def __init__(self, dim: int, heads: int, *, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if dim <= 0 or heads <= 0 or dim % heads != 0:
            raise ConfigError(
                f"MultiHeadAttention: dim ({dim}) must be a positive multiple of heads ({heads})"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"MultiHeadAttention: dropout must be in [0, 1); got {dropout}")
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.in_proj = nn.Linear(dim, 3 * dim, bias=bias)  # rows [W_q; W_k; W_v]
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        # Same initialisation as torch.nn.MultiheadAttention, so swapping one for the other keeps training.
        nn.init.xavier_uniform_(self.in_proj.weight)
        if bias:
            nn.init.zeros_(self.in_proj.bias)
            nn.init.zeros_(self.out_proj.bias)

    @classmethod
    def from_torch(cls, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """Build a copy of a ``torch.nn.MultiheadAttention`` with the same weights, dtype and device.

        Args:
            mha: A torch layer with ``kdim == vdim == embed_dim`` and no ``add_bias_kv``/``add_zero_attn``.
        """
        ours = cls(mha.embed_dim, mha.num_heads, bias=mha.in_proj_bias is not None, dropout=mha.dropout)
        ours = ours.to(device=mha.out_proj.weight.device, dtype=mha.out_proj.weight.dtype)
        load_torch_mha_state(ours, mha)
        return ours

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        causal: bool = False,
        need_weights: bool = False,
        cache: KVCache | None = None,
    ) -> AttentionOutput:
        """Attend from ``query`` to ``key``/``value`` (self-attention when ``key`` is omitted).

        Args:
            query: ``(B, T, D)``.
            key: ``(B, S, D)``; defaults to ``query`` (self-attention).
            value: ``(B, S, D)``; defaults to ``key``.
            key_padding_mask: Bool ``(B, S)``, ``True`` = padding, ignored as a key (torch convention).
                With a self-attention cache, ``S`` counts the cached positions too.
            attn_mask: ``(T, S)``, ``(B, T, S)`` or ``(B | 1, H | 1, T, S)``; bool with ``True`` =
                *not* allowed (torch convention), or floating (query dtype) added to the scores. Unlike
                torch, a 3-dim mask is per batch element, not ``(B·H, T, S)``.
            causal: Query ``i`` may only attend to keys ``j <= i + S - T`` (the usual triangle when
                ``S == T``; aligned to the last key when a cache holds earlier positions).
            need_weights: Also return the per-head weights ``(B, H, T, S)``, computed explicitly
                (slower; for attention maps). They are the weights before dropout.
            cache: Keys/values of earlier decoding steps; updated in place (see :class:`KVCache`).

        Returns:
            :class:`AttentionOutput` with ``output`` ``(B, T, D)`` and ``weights`` or ``None``.
        """
        owner = "MultiHeadAttention"
        is_self = key is None
        key = query if key is None else key
        value = key if value is None else value
        check_features(owner, "query", query, dim=self.dim)
        check_features(owner, "key", key, dim=self.dim)
        check_features(owner, "value", value, dim=self.dim)
        if key.shape[:2] != value.shape[:2] or key.shape[0] != query.shape[0]:
            raise ShapeError(
                f"{owner}: query (B, T, D), key and value (B, S, D) must share B, and key and value S; "
                f"got query {tuple(query.shape)}, key {tuple(key.shape)}, value {tuple(value.shape)}"
            )
        if not query.dtype == key.dtype == value.dtype:
            raise ShapeError(
                f"{owner}: query, key and value must share a dtype; got {query.dtype}, {key.dtype}, {value.dtype}"
            )

        w_q, w_k, w_v = self.in_proj.weight.chunk(3)
        b_q, b_k, b_v = self.in_proj.bias.chunk(3) if self.in_proj.bias is not None else (None, None, None)

        def split(t: Tensor) -> Tensor:
            return rearrange(t, "b t (h d) -> b h t d", h=self.heads)  # (B, T, D) -> (B, H, T, Dh)

        if is_self and cache is None:
            q, k, v = map(split, self.in_proj(query).chunk(3, dim=-1))  # 3 x (B, H, T, Dh)
        else:
            q = split(F.linear(query, w_q, b_q))  # (B, H, T, Dh)
            if cache is not None and cache.static and cache.key is not None and cache.value is not None:
                k, v = cache.key, cache.value  # memory projected on the first step
            else:
                k = split(F.linear(key, w_k, b_k))  # (B, H, S, Dh)
                v = split(F.linear(value, w_v, b_v))
            if cache is not None:
                if not cache.static and cache.key is not None and cache.value is not None:
                    if cache.key.shape[0] != query.shape[0]:
                        raise ShapeError(
                            f"{owner}: cache holds batch {cache.key.shape[0]}, query has {query.shape[0]}"
                        )
                    k = torch.cat([cache.key, k], dim=2)  # (B, H, S_past + S, Dh)
                    v = torch.cat([cache.value, v], dim=2)
                cache.key, cache.value = k, v

        batch, length, source = query.shape[0], query.shape[1], k.shape[2]
        # A plain causal triangle goes to the fused kernel via is_causal; anything else becomes one mask.
        only_causal = causal and length == source and key_padding_mask is None and attn_mask is None
        mask = (
            None
            if only_causal
            else self._merge_masks(batch, length, source, key_padding_mask, attn_mask, causal, query)
        )
        dropout = self.dropout if self.training else 0.0
        if need_weights:
            # The explicit path, same mask semantics (bool True = may attend); weights kept for maps.
            attended = dot_product_attention(
                q, k, v, mask=_causal_allowed(length, source, q) if only_causal else mask
            )
            weights = attended.weights  # (B, H, T, S)
            assert weights is not None  # dot_product_attention always returns its weights
            out = attended.output if dropout == 0.0 else F.dropout(weights, dropout, training=True) @ v
        else:
            weights = None
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=only_causal
            )
        out = rearrange(out, "b h t d -> b t (h d)")
        return AttentionOutput(output=self.out_proj(out), weights=weights)

    def _merge_masks(
        self,
        batch: int,
        length: int,
        source: int,
        key_padding_mask: Tensor | None,
        attn_mask: Tensor | None,
        causal: bool,
        query: Tensor,
    ) -> Tensor | None:
        """Fold the three masks into one for scaled_dot_product_attention: bool ``True`` = may attend, or
        float added to the scores; broadcastable to ``(B, H, T, S)``; ``None`` when there is no mask."""
        owner = "MultiHeadAttention"
        pad = None
        if key_padding_mask is not None:
            check_bool_mask(
                owner, "key_padding_mask", key_padding_mask, shape=(batch, source), meaning="True = pad"
            )
            pad = key_padding_mask[:, None, None, :]  # (B, 1, 1, S)
        merged = None if attn_mask is None else self._attn_mask_4d(attn_mask, batch, length, source, query)
        if merged is None and pad is None and not causal:
            return None
        if merged is not None and merged.is_floating_point():
            if pad is not None:
                merged = torch.where(pad, float("-inf"), merged)
            if causal:
                merged = torch.where(_causal_allowed(length, source, query), merged, float("-inf"))
            return merged
        allowed = torch.ones(1, 1, 1, 1, dtype=torch.bool, device=query.device) if merged is None else ~merged
        if pad is not None:
            allowed = allowed & ~pad
        if causal:
            allowed = allowed & _causal_allowed(length, source, query)
        return allowed

    def _attn_mask_4d(self, attn_mask: Tensor, batch: int, length: int, source: int, query: Tensor) -> Tensor:
        """Check ``attn_mask`` and view it as ``(B | 1, H | 1, T, S)``."""
        if not isinstance(attn_mask, Tensor):
            raise ShapeError(
                f"MultiHeadAttention: attn_mask must be a tensor; got {type(attn_mask).__name__}"
            )
        ok_dtype = attn_mask.dtype == torch.bool or attn_mask.dtype == query.dtype
        shape = tuple(attn_mask.shape)
        ok_shape = (
            (len(shape) == 2 and shape == (length, source))
            or (len(shape) == 3 and shape == (batch, length, source))
            or (
                len(shape) == 4
                and shape[0] in (1, batch)
                and shape[1] in (1, self.heads)
                and shape[2:] == (length, source)
            )
        )
        if not (ok_dtype and ok_shape):
            raise ShapeError(
                f"MultiHeadAttention: attn_mask must be bool or {str(query.dtype).removeprefix('torch.')} with "
                f"shape (T, S), (B, T, S) or (B|1, H|1, T, S) for B={batch}, H={self.heads}, T={length}, "
                f"S={source}; got {describe(attn_mask)}"
            )
        if attn_mask.ndim == 2:
            return attn_mask[None, None]  # (1, 1, T, S)
        if attn_mask.ndim == 3:
            return attn_mask[:, None]  # (B, 1, T, S)
        return attn_mask


def _causal_allowed(length: int, source: int, like: Tensor) -> Tensor:
    """Bool ``(T, S)``: query ``i`` may see key ``j`` iff ``j <= i + S - T`` (aligned to the last key)."""
    return torch.ones(length, source, dtype=torch.bool, device=like.device).tril(diagonal=source - length)


# ---------------------------------------------------------------------------------------------------
# Converter
# ---------------------------------------------------------------------------------------------------


def load_torch_mha_state(ours: MultiHeadAttention, theirs: nn.MultiheadAttention) -> None:
    """Copy the weights of a ``torch.nn.MultiheadAttention`` into ``ours`` (in place).

    Args:
        ours: The destination; same ``dim``, ``heads`` and ``bias`` as ``theirs``.
        theirs: The source; ``kdim == vdim == embed_dim``, no ``add_bias_kv`` and no ``add_zero_attn``.
    """
    if not theirs._qkv_same_embed_dim or theirs.bias_k is not None or theirs.add_zero_attn:
        raise CheckpointError(
            "load_torch_mha_state: only torch MultiheadAttention with kdim == vdim == embed_dim, "
            "add_bias_kv=False and add_zero_attn=False can be converted"
        )
    if (theirs.embed_dim, theirs.num_heads) != (ours.dim, ours.heads):
        raise CheckpointError(
            f"load_torch_mha_state: torch layer has embed_dim={theirs.embed_dim}, num_heads={theirs.num_heads}; "
            f"ours has dim={ours.dim}, heads={ours.heads}"
        )
    if (theirs.in_proj_bias is None) != (ours.in_proj.bias is None):
        raise CheckpointError("load_torch_mha_state: one layer has biases and the other has none")
    with torch.no_grad():
        ours.in_proj.weight.copy_(theirs.in_proj_weight)
        ours.out_proj.weight.copy_(theirs.out_proj.weight)
        if ours.in_proj.bias is not None:
            ours.in_proj.bias.copy_(theirs.in_proj_bias)
            ours.out_proj.bias.copy_(theirs.out_proj.bias)
