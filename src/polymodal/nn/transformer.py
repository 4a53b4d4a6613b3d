"""Transformer encoder and decoder layers and their stacks.

The lecture: "Transformers are connected by two self-attention blocks (one for encoder, one for decoder)
and an encoder-decoder attention block (similar to the original attention)". An encoder layer is
self-attention then a position-wise MLP; a decoder layer is (causal) self-attention, encoder-decoder
(cross) attention over the encoder's output ``memory``, then the MLP (Vaswani et al. 2017, sec. 3.1).
Each sub-layer sits in a residual connection, normalised either

* after the sum, ``x = norm(x + drop(f(x)))`` (post-norm, the original paper and torch's default), or
* before the sub-layer, ``x = x + drop(f(norm(x)))`` (pre-norm, ``norm_first=True``; GPT-2, ViT, CLIP;
  better-behaved gradients at depth, Xiong et al. 2020). Pre-norm stacks end with a final norm.

Parameter names follow ``torch.nn.TransformerEncoderLayer`` (``self_attn``, ``norm1``...) where they
exist, so the converters in :mod:`polymodal.nn.torch_convert` are short.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from torch import Tensor, nn

from polymodal.errors import ConfigError
from polymodal.nn.attention import AttentionOutput, KVCache, MultiHeadAttention
from polymodal.nn.mlp import Mlp

NormFactory = Callable[[int], nn.Module]
ActFactory = Callable[[], nn.Module]

# ---------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------


class _ResidualLayer(nn.Module):
    """What encoder and decoder layers share: the residual wiring and the MLP."""

    def __init__(
        self,
        dim: int,
        *,
        mlp_ratio: float,
        mlp_dim: int | None,
        dropout: float,
        norm_first: bool,
        act_layer: ActFactory,
        bias: bool,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"{type(self).__name__}: dropout must be in [0, 1); got {dropout}")
        self.norm_first = norm_first
        self.mlp = Mlp(dim, mlp_dim, mlp_ratio=mlp_ratio, act_layer=act_layer, dropout=dropout, bias=bias)
        self.drop = nn.Dropout(dropout)  # on each sub-layer's output before the residual sum

    def _sublayer(self, x: Tensor, norm: nn.Module, fn: Callable[[Tensor], Tensor]) -> Tensor:
        """One residual sub-layer: pre-norm ``x + drop(fn(norm(x)))`` or post-norm ``norm(x + drop(fn(x)))``."""
        if self.norm_first:
            return x + self.drop(fn(norm(x)))
        return norm(x + self.drop(fn(x)))


class TransformerEncoderLayer(_ResidualLayer):
    """Self-attention and an MLP, each in a residual connection.

    Args:
        dim: Model width ``D``.
        heads: Attention heads.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        mlp_dim: MLP hidden width, overriding ``mlp_ratio`` (torch's ``dim_feedforward``).
        dropout: Dropout on sub-layer outputs and inside the MLP.
        attn_dropout: Dropout on attention weights; defaults to ``dropout`` (as in torch).
        norm_first: Pre-norm (``True``) or post-norm (``False``, torch's default).
        act_layer: Zero-argument factory of the MLP activation, e.g. ``nn.GELU`` or ``nn.ReLU``.
        norm_layer: Factory ``norm_layer(dim)`` of the normalisation.
        bias: Learn biases in the attention and MLP projections.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        mlp_ratio: float = 4.0,
        mlp_dim: int | None = None,
        dropout: float = 0.0,
        attn_dropout: float | None = None,
        norm_first: bool = True,
        act_layer: ActFactory = nn.GELU,
        norm_layer: NormFactory = nn.LayerNorm,
        bias: bool = True,
    ) -> None:
        super().__init__(
            dim,
            mlp_ratio=mlp_ratio,
            mlp_dim=mlp_dim,
            dropout=dropout,
            norm_first=norm_first,
            act_layer=act_layer,
            bias=bias,
        )
        attn_p = dropout if attn_dropout is None else attn_dropout
        self.self_attn = MultiHeadAttention(dim, heads, bias=bias, dropout=attn_p)
        self.norm1 = norm_layer(dim)
        self.norm2 = norm_layer(dim)

    def forward(
        self,
        x: Tensor,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        causal: bool = False,
    ) -> Tensor:
        """Encode ``x``.

        Args:
            x: ``(B, T, D)``.
            key_padding_mask: Bool ``(B, T)``, ``True`` = padding (torch convention).
            attn_mask: See :meth:`MultiHeadAttention.forward`.
            causal: Each position sees only itself and earlier ones.

        Returns:
            ``(B, T, D)``.
        """

        def attend(h: Tensor) -> Tensor:
            return self.self_attn(
                h, key_padding_mask=key_padding_mask, attn_mask=attn_mask, causal=causal
            ).output

        x = self._sublayer(x, self.norm1, attend)
        return self._sublayer(x, self.norm2, self.mlp)

    def attention_weights(
        self,
        x: Tensor,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        causal: bool = False,
    ) -> Tensor:
        """The self-attention weights ``(B, H, T, T)`` this layer computes for input ``x`` (attention maps).

        Args:
            x: The layer's input ``(B, T, D)``.
            key_padding_mask: As in :meth:`forward`.
            attn_mask: As in :meth:`forward`.
            causal: As in :meth:`forward`.
        """
        h = self.norm1(x) if self.norm_first else x
        out = self.self_attn(
            h, key_padding_mask=key_padding_mask, attn_mask=attn_mask, causal=causal, need_weights=True
        )
        assert out.weights is not None
        return out.weights


@dataclass
class DecoderLayerCache:
    """Keys and values one decoder layer keeps between incremental decoding steps."""

    self_attn: KVCache = field(default_factory=KVCache)
    cross_attn: KVCache = field(default_factory=lambda: KVCache(static=True))


class TransformerDecoderLayer(_ResidualLayer):
    """Self-attention, encoder-decoder (cross) attention over ``memory``, and an MLP.

    Args:
        dim: Model width ``D`` (of both the decoder input and ``memory``).
        heads: Attention heads (self and cross).
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        mlp_dim: MLP hidden width, overriding ``mlp_ratio`` (torch's ``dim_feedforward``).
        dropout: Dropout on sub-layer outputs and inside the MLP.
        attn_dropout: Dropout on attention weights; defaults to ``dropout`` (as in torch).
        norm_first: Pre-norm (``True``) or post-norm (``False``, torch's default).
        act_layer: Zero-argument factory of the MLP activation.
        norm_layer: Factory ``norm_layer(dim)`` of the normalisation.
        bias: Learn biases in the attention and MLP projections.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        mlp_ratio: float = 4.0,
        mlp_dim: int | None = None,
        dropout: float = 0.0,
        attn_dropout: float | None = None,
        norm_first: bool = True,
        act_layer: ActFactory = nn.GELU,
        norm_layer: NormFactory = nn.LayerNorm,
        bias: bool = True,
    ) -> None:
        super().__init__(
            dim,
            mlp_ratio=mlp_ratio,
            mlp_dim=mlp_dim,
            dropout=dropout,
            norm_first=norm_first,
            act_layer=act_layer,
            bias=bias,
        )
        attn_p = dropout if attn_dropout is None else attn_dropout
        self.self_attn = MultiHeadAttention(dim, heads, bias=bias, dropout=attn_p)
        self.cross_attn = MultiHeadAttention(dim, heads, bias=bias, dropout=attn_p)
        self.norm1 = norm_layer(dim)
        self.norm2 = norm_layer(dim)
        self.norm3 = norm_layer(dim)

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        *,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: DecoderLayerCache | None = None,
    ) -> Tensor:
        """Decode ``x`` attending to ``memory``.

        Args:
            x: Decoder input ``(B, T, D)``; with a cache, only the new positions.
            memory: Encoder output ``(B, S, D)``.
            causal: Causal self-attention (for autoregressive decoding).
            key_padding_mask: Bool ``(B, T)`` (``T`` including cached positions), ``True`` = padding.
            attn_mask: Self-attention mask, see :meth:`MultiHeadAttention.forward`.
            memory_key_padding_mask: Bool ``(B, S)``, ``True`` = padded memory position.
            memory_mask: Cross-attention mask ``(T, S)`` etc.
            cache: Keys/values of earlier steps, updated in place.

        Returns:
            ``(B, T, D)``.
        """
        x = self._sublayer(
            x, self.norm1, lambda h: self._self_attend(h, causal, key_padding_mask, attn_mask, cache)
        )
        x = self._sublayer(
            x,
            self.norm2,
            lambda h: self._cross_attend(h, memory, memory_key_padding_mask, memory_mask, cache).output,
        )
        return self._sublayer(x, self.norm3, self.mlp)

    def cross_attention_weights(
        self,
        x: Tensor,
        memory: Tensor,
        *,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
    ) -> Tensor:
        """The encoder-decoder attention weights ``(B, H, T, S)`` for layer input ``x`` (e.g. which image
        patches each caption token looks at). Arguments as in :meth:`forward`."""
        x = self._sublayer(
            x, self.norm1, lambda h: self._self_attend(h, causal, key_padding_mask, attn_mask, None)
        )
        h = self.norm2(x) if self.norm_first else x
        weights = self._cross_attend(
            h, memory, memory_key_padding_mask, memory_mask, None, need_weights=True
        ).weights
        assert weights is not None
        return weights

    def _self_attend(
        self,
        h: Tensor,
        causal: bool,
        pad: Tensor | None,
        mask: Tensor | None,
        cache: DecoderLayerCache | None,
    ) -> Tensor:
        kv = None if cache is None else cache.self_attn
        return self.self_attn(h, key_padding_mask=pad, attn_mask=mask, causal=causal, cache=kv).output

    def _cross_attend(
        self,
        h: Tensor,
        memory: Tensor,
        pad: Tensor | None,
        mask: Tensor | None,
        cache: DecoderLayerCache | None,
        *,
        need_weights: bool = False,
    ) -> AttentionOutput:
        kv = None if cache is None else cache.cross_attn
        return self.cross_attn(
            h, memory, key_padding_mask=pad, attn_mask=mask, cache=kv, need_weights=need_weights
        )


# ---------------------------------------------------------------------------------------------------
# Stacks
# ---------------------------------------------------------------------------------------------------


def _final_norm(final_norm: bool | None, norm_first: bool, norm_layer: NormFactory, dim: int) -> nn.Module:
    # Pre-norm leaves the residual stream unnormalised, so its stacks end with a norm (GPT-2, ViT).
    return norm_layer(dim) if (norm_first if final_norm is None else final_norm) else nn.Identity()


class TransformerEncoder(nn.Module):
    """``depth`` encoder layers and an optional final norm.

    Args:
        dim: Model width ``D``.
        heads: Attention heads.
        depth: Number of layers.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        mlp_dim: MLP hidden width, overriding ``mlp_ratio``.
        dropout: Dropout on sub-layer outputs and inside the MLP.
        attn_dropout: Dropout on attention weights; defaults to ``dropout``.
        norm_first: Pre-norm or post-norm layers.
        act_layer: Zero-argument factory of the MLP activation.
        norm_layer: Factory ``norm_layer(dim)`` of the normalisation.
        bias: Learn biases in the projections.
        final_norm: Normalise the output; defaults to ``norm_first``.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        depth: int,
        *,
        mlp_ratio: float = 4.0,
        mlp_dim: int | None = None,
        dropout: float = 0.0,
        attn_dropout: float | None = None,
        norm_first: bool = True,
        act_layer: ActFactory = nn.GELU,
        norm_layer: NormFactory = nn.LayerNorm,
        bias: bool = True,
        final_norm: bool | None = None,
    ) -> None:
        super().__init__()
        if depth <= 0:
            raise ConfigError(f"TransformerEncoder: depth must be positive; got {depth}")
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(
                dim, heads, mlp_ratio=mlp_ratio, mlp_dim=mlp_dim, dropout=dropout, attn_dropout=attn_dropout,
                norm_first=norm_first, act_layer=act_layer, norm_layer=norm_layer, bias=bias,
            )
            for _ in range(depth)
        )  # fmt: skip
        self.norm = _final_norm(final_norm, norm_first, norm_layer, dim)

    def forward(
        self,
        x: Tensor,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        causal: bool = False,
    ) -> Tensor:
        """Encode ``x`` ``(B, T, D)``; masks as in :meth:`TransformerEncoderLayer.forward`.

        Args:
            x: ``(B, T, D)``.
            key_padding_mask: Bool ``(B, T)``, ``True`` = padding.
            attn_mask: See :meth:`MultiHeadAttention.forward`.
            causal: Causal self-attention in every layer.
        """
        for layer in self.layers:
            x = layer(x, key_padding_mask=key_padding_mask, attn_mask=attn_mask, causal=causal)
        return self.norm(x)

    def attention_maps(
        self,
        x: Tensor,
        *,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        causal: bool = False,
    ) -> list[Tensor]:
        """Per-layer self-attention weights, each ``(B, H, T, T)`` (for attention maps and rollout).

        Args:
            x: ``(B, T, D)``.
            key_padding_mask: As in :meth:`forward`.
            attn_mask: As in :meth:`forward`.
            causal: As in :meth:`forward`.
        """
        maps = []
        for layer in cast(list[TransformerEncoderLayer], self.layers):
            maps.append(
                layer.attention_weights(
                    x, key_padding_mask=key_padding_mask, attn_mask=attn_mask, causal=causal
                )
            )
            x = layer(x, key_padding_mask=key_padding_mask, attn_mask=attn_mask, causal=causal)
        return maps


@dataclass
class DecoderCache:
    """Incremental decoding state of a :class:`TransformerDecoder`: one entry per layer."""

    layers: list[DecoderLayerCache]

    @property
    def length(self) -> int:
        """Number of positions decoded so far (the offset of the next step's positions)."""
        return self.layers[0].self_attn.length


class TransformerDecoder(nn.Module):
    """``depth`` decoder layers and an optional final norm.

    Args:
        dim: Model width ``D``.
        heads: Attention heads.
        depth: Number of layers.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        mlp_dim: MLP hidden width, overriding ``mlp_ratio``.
        dropout: Dropout on sub-layer outputs and inside the MLP.
        attn_dropout: Dropout on attention weights; defaults to ``dropout``.
        norm_first: Pre-norm or post-norm layers.
        act_layer: Zero-argument factory of the MLP activation.
        norm_layer: Factory ``norm_layer(dim)`` of the normalisation.
        bias: Learn biases in the projections.
        final_norm: Normalise the output; defaults to ``norm_first``.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        depth: int,
        *,
        mlp_ratio: float = 4.0,
        mlp_dim: int | None = None,
        dropout: float = 0.0,
        attn_dropout: float | None = None,
        norm_first: bool = True,
        act_layer: ActFactory = nn.GELU,
        norm_layer: NormFactory = nn.LayerNorm,
        bias: bool = True,
        final_norm: bool | None = None,
    ) -> None:
        super().__init__()
        if depth <= 0:
            raise ConfigError(f"TransformerDecoder: depth must be positive; got {depth}")
        self.layers = nn.ModuleList(
            TransformerDecoderLayer(
                dim, heads, mlp_ratio=mlp_ratio, mlp_dim=mlp_dim, dropout=dropout, attn_dropout=attn_dropout,
                norm_first=norm_first, act_layer=act_layer, norm_layer=norm_layer, bias=bias,
            )
            for _ in range(depth)
        )  # fmt: skip
        self.norm = _final_norm(final_norm, norm_first, norm_layer, dim)

    def new_cache(self) -> DecoderCache:
        """An empty cache for incremental decoding; pass it to every :meth:`forward` call of one sequence."""
        return DecoderCache(layers=[DecoderLayerCache() for _ in self.layers])

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        *,
        causal: bool = False,
        key_padding_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        """Decode ``x`` against ``memory``; arguments as in :meth:`TransformerDecoderLayer.forward`.

        With ``cache``, ``x`` holds only the new positions (their positional encodings start at
        ``cache.length``) and earlier positions' keys and values are reused; with ``causal=True`` the
        outputs equal those of one full causal call.

        Args:
            x: ``(B, T, D)``.
            memory: ``(B, S, D)``.
            causal: Causal self-attention.
            key_padding_mask: Bool ``(B, T)``, ``True`` = padding.
            attn_mask: Self-attention mask.
            memory_key_padding_mask: Bool ``(B, S)``, ``True`` = padded memory position.
            memory_mask: Cross-attention mask.
            cache: From :meth:`new_cache`, updated in place.
        """
        if cache is not None and len(cache.layers) != len(self.layers):
            raise ConfigError(
                f"TransformerDecoder: cache has {len(cache.layers)} layers, decoder has {len(self.layers)}"
            )
        for i, layer in enumerate(self.layers):
            x = layer(
                x,
                memory,
                causal=causal,
                key_padding_mask=key_padding_mask,
                attn_mask=attn_mask,
                memory_key_padding_mask=memory_key_padding_mask,
                memory_mask=memory_mask,
                cache=None if cache is None else cache.layers[i],
            )
        return self.norm(x)
