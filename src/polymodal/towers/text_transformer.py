"""Text transformer tower, trained from scratch or loaded from a CLIP checkpoint.

CLIP's text encoder (Radford et al. 2021, sec. 2.4; a GPT-2-style stack): token embedding plus a learned
position embedding, pre-norm transformer layers with *causal* self-attention, a final LayerNorm, and the
sentence vector read off the EOT token, then projected into the joint space without a bias:

    ids (B, T) ─ token_embed + pos ─ encoder (causal) ─ take EOT ─ ln_final ─ proj

Options for from-scratch models: bidirectional attention, mean pooling over the real tokens, and the fixed
sinusoidal positions of Vaswani et al.

Padding. Rows arrive right-padded with ``mask`` = 1 on real tokens (BOS ... EOT). With causal attention
and EOT pooling no real token attends to a later position, so padding cannot reach the pooled vector and
no padding mask is built at all: the encoder runs the plain causal kernel. The batch is also cut to its
longest real row first. Bidirectional attention or mean pooling use the mask as a key-padding mask.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any, cast

import torch
from torch import Tensor, nn

from polymodal.errors import ConfigError, ShapeError
from polymodal.nn import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from polymodal.nn._checks import describe
from polymodal.nn.mlp import activation_layer
from polymodal.towers.pooled_encoder import encode_one_position

POOLS = ("eot", "mean")
POSITIONS = ("learned", "sinusoidal")


@dataclass
class TextTransformerConfig:
    """Shape of a :class:`TextTransformer`."""

    context_length: int = 32  # longest token row, BOS and EOT included
    vocab_size: int = 4096  # rows of the token embedding; the tokenizer's vocabulary must fit
    width: int = 192
    layers: int = 4
    heads: int = 3
    mlp_dim: int | None = None  # MLP hidden width; None: 4 * width
    causal: bool = True  # CLIP's causal mask; False: bidirectional (BERT-like)
    pool: str = "eot"  # "eot": the last real token (CLIP); "mean": mean over real tokens
    pos_embedding: str = "learned"
    proj_bias: bool = False
    act: str = "gelu"
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.context_length < 2 or self.vocab_size < 4:
            raise ConfigError(
                f"TextTransformerConfig: need context_length >= 2 and vocab_size >= 4; got "
                f"{self.context_length}, {self.vocab_size}"
            )
        if self.width <= 0 or self.heads <= 0 or self.width % self.heads or self.layers <= 0:
            raise ConfigError(
                f"TextTransformerConfig: width ({self.width}) must be a positive multiple of heads ({self.heads}), "
                f"layers > 0"
            )
        if self.mlp_dim is not None and self.mlp_dim <= 0:
            raise ConfigError(f"TextTransformerConfig: mlp_dim must be positive; got {self.mlp_dim}")
        if self.pool not in POOLS:
            raise ConfigError(f"TextTransformerConfig: pool must be one of {POOLS}; got {self.pool!r}")
        if self.pos_embedding not in POSITIONS:
            raise ConfigError(
                f"TextTransformerConfig: pos_embedding must be one of {POSITIONS}; got {self.pos_embedding!r}"
            )
        activation_layer(self.act)
        if not 0 < self.norm_eps < 1:
            raise ConfigError(f"TextTransformerConfig: norm_eps must be in (0, 1); got {self.norm_eps}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextTransformerConfig:
        """Build from a dict, refusing unknown keys.

        Args:
            d: Keys as the fields.
        """
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"TextTransformerConfig: unknown keys {unknown}")
        return cls(**d)


class TextTransformer(nn.Module):
    """The text tower: token ids ``(B, T)`` and mask to ``(B, output_dim)`` features.

    Args:
        config: Its shape.
        output_dim: Width of the projection into the joint space.
    """

    def __init__(self, config: TextTransformerConfig, *, output_dim: int) -> None:
        super().__init__()
        if output_dim <= 0:
            raise ConfigError(f"TextTransformer: output_dim must be positive; got {output_dim}")
        self.config = c = config
        self.output_dim = output_dim
        self.token_embed = nn.Embedding(c.vocab_size, c.width)
        if c.pos_embedding == "learned":
            self.pos: nn.Module = LearnedPositionalEmbedding(c.width, c.context_length)
        else:
            self.pos = SinusoidalPositionalEncoding(c.width, c.context_length)
        norm = partial(nn.LayerNorm, eps=c.norm_eps)
        hidden = c.mlp_dim or 4 * c.width
        self.encoder = TransformerEncoder(
            c.width, c.heads, c.layers, mlp_dim=hidden, norm_first=True,
            act_layer=activation_layer(c.act), norm_layer=norm, final_norm=False,
        )  # fmt: skip
        self.ln_final = norm(c.width)
        self.proj = nn.Linear(c.width, output_dim, bias=c.proj_bias)
        self._init_clip()

    def _init_clip(self) -> None:
        """CLIP's text initialisation (OpenAI's ``initialize_parameters``): small embeddings, and residual
        branch outputs scaled by ``(2 L)^-1/2`` so the stream's variance does not grow with depth."""
        c = self.config
        nn.init.normal_(self.token_embed.weight, std=0.02)
        if isinstance(self.pos, LearnedPositionalEmbedding):
            nn.init.normal_(self.pos.weight, std=0.01)
        proj_std = c.width**-0.5 * (2 * c.layers) ** -0.5
        for layer in cast(list[TransformerEncoderLayer], list(self.encoder.layers)):
            nn.init.normal_(layer.self_attn.in_proj.weight, std=c.width**-0.5)
            nn.init.normal_(layer.self_attn.out_proj.weight, std=proj_std)
            nn.init.normal_(layer.mlp.fc1.weight, std=(2 * c.width) ** -0.5)
            nn.init.normal_(layer.mlp.fc2.weight, std=proj_std)
        nn.init.normal_(self.proj.weight, std=c.width**-0.5)

    # ------------------------------------------------------------------------------------------ input checks
    def _check(self, ids: Tensor, mask: Tensor | None) -> Tensor:
        """Validate ids and mask; return the mask as bool ``(B, T)`` (all True when not given)."""
        c = self.config
        if not isinstance(ids, Tensor) or ids.ndim != 2 or ids.dtype not in (torch.int64, torch.int32):
            got = describe(ids) if isinstance(ids, Tensor) else type(ids).__name__
            raise ShapeError(f"TextTransformer: input_ids must be an int64 tensor (B, T); got {got}")
        if ids.shape[1] > c.context_length:
            raise ShapeError(
                f"TextTransformer: input_ids has T={ids.shape[1]} tokens; the context length is {c.context_length}"
            )
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= c.vocab_size):
            raise ShapeError(
                f"TextTransformer: token ids must be in [0, {c.vocab_size}); got [{int(ids.min())}, {int(ids.max())}]"
            )
        if mask is None:
            return torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
        if not isinstance(mask, Tensor) or mask.shape != ids.shape or mask.is_floating_point() or mask.is_complex():
            got = describe(mask) if isinstance(mask, Tensor) else type(mask).__name__
            raise ShapeError(
                f"TextTransformer: attention_mask must be a bool or integer tensor of shape {tuple(ids.shape)} "
                f"(1 = token, 0 = padding); got {got}"
            )
        mask = mask.bool()
        if mask.shape[1] and not bool(mask[:, 0].all()):
            raise ShapeError("TextTransformer: attention_mask must mark right padding (every row starts with a token)")
        return mask

    # ------------------------------------------------------------------------------------------ forward
    def _embed(self, ids: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Checked, trimmed embeddings ``(B, T', D)``, bool mask ``(B, T')`` and lengths ``(B,)``."""
        bool_mask = self._check(ids, mask)
        lengths = bool_mask.sum(dim=1)  # (B,)
        if ids.shape[0] and int(lengths.min()) == 0:
            raise ShapeError("TextTransformer: every row needs at least one token (its attention_mask is all 0)")
        longest = int(lengths.max()) if ids.shape[0] else ids.shape[1]
        ids, bool_mask = ids[:, :longest], bool_mask[:, :longest]  # padding columns cost compute, drop them
        return self.pos(self.token_embed(ids)), bool_mask, lengths  # (B, T', D)

    def hidden_states(self, ids: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encoder output at every position ``(B, T', D)`` and bool mask ``(B, T')``, ``T'`` the longest
        real row (padding positions hold values that no real position depends on).

        Args:
            ids: ``(B, T)`` token ids, right-padded.
            mask: ``(B, T)``, 1 for tokens, 0 for padding; ``None`` means no padding.
        """
        x, bool_mask, _ = self._embed(ids, mask)
        c = self.config
        if bool(bool_mask.all()) or (c.causal and c.pool == "eot"):
            return self.encoder(x, causal=c.causal), bool_mask  # no real position can see the padding
        return self.encoder(x, causal=c.causal, key_padding_mask=~bool_mask), bool_mask

    def pooled(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """Features before the projection, ``(B, D)``.

        EOT pooling with causal attention (CLIP) reads one position, so the last layer runs only there
        (:func:`~polymodal.towers.pooled_encoder.encode_one_position`; exact), and ``ln_final`` normalises
        that token alone.

        Args:
            ids: ``(B, T)`` token ids, right-padded.
            mask: ``(B, T)``, 1 for tokens, 0 for padding.
        """
        c = self.config
        if c.pool == "eot":
            x, bool_mask, lengths = self._embed(ids, mask)
            eot = lengths - 1  # (B,) the last real token is EOT: truncation keeps it
            if c.causal or bool(bool_mask.all()):
                return self.ln_final(encode_one_position(self.encoder, x, eot, causal=c.causal))
            h = self.encoder(x, key_padding_mask=~bool_mask)
            return self.ln_final(h[torch.arange(h.shape[0], device=h.device), eot])  # (B, D)
        h, bool_mask = self.hidden_states(ids, mask)
        h = self.ln_final(h)
        w = bool_mask.unsqueeze(-1).to(h.dtype)  # (B, T', 1)
        return (h * w).sum(dim=1) / w.sum(dim=1)

    def forward(self, ids: Tensor, mask: Tensor | None = None) -> Tensor:
        """Token ids to unnormalised features ``(B, output_dim)``.

        Args:
            ids: ``(B, T)`` token ids, right-padded.
            mask: ``(B, T)``, 1 for tokens, 0 for padding.
        """
        return self.proj(self.pooled(ids, mask))


def text_flops(config: TextTransformerConfig, length: int | None = None) -> int:
    """Multiply-adds ×2 of one forward pass for one text of ``length`` tokens (default: the context).

    Args:
        config: The tower's shape.
        length: Tokens processed.
    """
    t, d = length or config.context_length, config.width
    hidden = config.mlp_dim or 4 * d
    per_layer = t * (4 * d * d + 2 * d * hidden) + 2 * t * t * d
    return 2 * config.layers * per_layer


__all__ = ["TextTransformer", "TextTransformerConfig", "text_flops"]
