"""Vision Transformer image tower, trained from scratch or loaded from a CLIP checkpoint.

Dosovitskiy et al. (2021): cut the image into ``P × P`` patches, embed each linearly (a convolution with
stride ``P``), add a position embedding, run a transformer encoder over the patch tokens and read one
vector off the result, either a learned class token prepended to the patches (ViT, CLIP) or the mean of
the patch tokens. CLIP's variant (Radford et al. 2021) adds a LayerNorm before the encoder (``ln_pre``),
normalises the pooled token (``ln_post``) and projects it into the joint space without a bias:

    image (B, 3, S, S) ─ patch_embed ─ [cls] + patches + pos ─ ln_pre ─ encoder ─ pool ─ ln_post ─ proj

Parameter names are mapped one to one onto Hugging Face's ``CLIPVisionModel`` by
:mod:`polymodal.models.hf_clip`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from polymodal.errors import ConfigError, ShapeError
from polymodal.nn import LearnedPositionalEmbedding, SinusoidalPositionalEncoding, TransformerEncoder
from polymodal.nn.mlp import activation_layer
from polymodal.towers.pooled_encoder import encode_one_position

POOLS = ("cls", "mean")
POSITIONS = ("learned", "sinusoidal")


@dataclass
class ViTConfig:
    """Shape of a :class:`VisionTransformer`."""

    image_size: int = 32  # input side S in pixels; a multiple of patch_size
    patch_size: int = 4
    width: int = 192  # token width D
    layers: int = 6
    heads: int = 3
    mlp_dim: int | None = None  # MLP hidden width; None: 4 * width
    pool: str = "cls"  # "cls": a learned class token (ViT, CLIP); "mean": mean of the patch tokens
    pos_embedding: str = "learned"  # "learned" table, or the fixed "sinusoidal" one of Vaswani et al.
    ln_pre: bool = True  # CLIP's LayerNorm between the embeddings and the encoder
    patch_bias: bool = False  # CLIP's patch convolution has no bias
    proj_bias: bool = False  # CLIP's projection into the joint space has no bias
    act: str = "gelu"  # MLP activation; "quick_gelu" for OpenAI's checkpoints
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.image_size <= 0 or self.patch_size <= 0 or self.image_size % self.patch_size:
            raise ConfigError(
                f"ViTConfig: image_size ({self.image_size}) must be a positive multiple of patch_size ({self.patch_size})"
            )
        if self.width <= 0 or self.heads <= 0 or self.width % self.heads or self.layers <= 0:
            raise ConfigError(
                f"ViTConfig: width ({self.width}) must be a positive multiple of heads ({self.heads}), layers > 0"
            )
        if self.mlp_dim is not None and self.mlp_dim <= 0:
            raise ConfigError(f"ViTConfig: mlp_dim must be positive; got {self.mlp_dim}")
        if self.pool not in POOLS:
            raise ConfigError(f"ViTConfig: pool must be one of {POOLS}; got {self.pool!r}")
        if self.pos_embedding not in POSITIONS:
            raise ConfigError(f"ViTConfig: pos_embedding must be one of {POSITIONS}; got {self.pos_embedding!r}")
        activation_layer(self.act)  # raises ConfigError for an unknown name
        if not 0 < self.norm_eps < 1:
            raise ConfigError(f"ViTConfig: norm_eps must be in (0, 1); got {self.norm_eps}")

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """Sequence length: the patches, plus the class token when pooling by it."""
        return self.grid**2 + (1 if self.pool == "cls" else 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ViTConfig:
        """Build from a dict, refusing unknown keys.

        Args:
            d: Keys as the fields.
        """
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"ViTConfig: unknown keys {unknown}")
        return cls(**d)


class VisionTransformer(nn.Module):
    """The image tower: ``(B, 3, S, S)`` pixels to ``(B, output_dim)`` features.

    Args:
        config: Its shape.
        output_dim: Width of the projection into the joint space.
    """

    def __init__(self, config: ViTConfig, *, output_dim: int) -> None:
        super().__init__()
        if output_dim <= 0:
            raise ConfigError(f"VisionTransformer: output_dim must be positive; got {output_dim}")
        self.config = c = config
        self.output_dim = output_dim
        scale = c.width**-0.5
        self.patch_embed = nn.Conv2d(3, c.width, c.patch_size, stride=c.patch_size, bias=c.patch_bias)
        self.class_token = nn.Parameter(scale * torch.randn(c.width)) if c.pool == "cls" else None
        if c.pos_embedding == "learned":
            self.pos: nn.Module = LearnedPositionalEmbedding(c.width, c.num_tokens)
            nn.init.normal_(self.pos.weight, std=scale)  # CLIP's initialisation
        else:
            self.pos = SinusoidalPositionalEncoding(c.width, c.num_tokens)
        norm = partial(nn.LayerNorm, eps=c.norm_eps)
        self.ln_pre = norm(c.width) if c.ln_pre else nn.Identity()
        # Pre-norm layers; the final norm is ln_post, applied after pooling (to one token, not all T).
        self.encoder = TransformerEncoder(
            c.width, c.heads, c.layers, mlp_dim=c.mlp_dim or 4 * c.width, norm_first=True,
            act_layer=activation_layer(c.act), norm_layer=norm, final_norm=False,
        )  # fmt: skip
        self.ln_post = norm(c.width)
        self.proj = nn.Linear(c.width, output_dim, bias=c.proj_bias)
        nn.init.normal_(self.proj.weight, std=scale)

    # ------------------------------------------------------------------------------------------ stages
    def _check(self, x: Tensor) -> None:
        s = self.config.image_size
        if not isinstance(x, Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s) or not x.is_floating_point():
            got = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ShapeError(f"VisionTransformer: images must be a float tensor (B, 3, {s}, {s}); got {got}")

    def embed(self, x: Tensor) -> Tensor:
        """Pixels ``(B, 3, S, S)`` to the encoder's input tokens ``(B, T, D)`` (after ``ln_pre``).

        Args:
            x: Normalised pixels.
        """
        self._check(x)
        tokens = self.patch_embed(x.to(self.patch_embed.weight.dtype))  # (B, D, g, g)
        tokens = tokens.flatten(2).transpose(1, 2)  # (B, N, D), patches in row-major order
        if self.class_token is not None:
            cls = self.class_token.to(tokens.dtype).expand(tokens.shape[0], 1, -1)  # (B, 1, D)
            tokens = torch.cat([cls, tokens], dim=1)  # (B, 1 + N, D)
        return self.ln_pre(self.pos(tokens))

    def pooled(self, x: Tensor) -> Tensor:
        """The tower's features before the projection, ``(B, D)``.

        With a class token only its output is read, so the last layer runs at that one position
        (:func:`~polymodal.towers.pooled_encoder.encode_one_position`; exact) and ``ln_post`` normalises that
        token alone (LayerNorm is per token).

        Args:
            x: Pixels ``(B, 3, S, S)``.
        """
        tokens = self.embed(x)  # (B, T, D)
        if self.config.pool == "cls":
            index = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
            return self.ln_post(encode_one_position(self.encoder, tokens, index, causal=False))
        return self.ln_post(self.encoder(tokens)).mean(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Pixels ``(B, 3, S, S)`` to unnormalised features ``(B, output_dim)``.

        Args:
            x: Normalised pixels.
        """
        return self.proj(self.pooled(x))

    @torch.no_grad()
    def attention_maps(self, x: Tensor) -> Tensor:
        """Self-attention weights of every layer, ``(L, B, H, T, T)``.

        Args:
            x: Pixels ``(B, 3, S, S)``.
        """
        return torch.stack(self.encoder.attention_maps(self.embed(x)))


def patch_grid_attention(maps: Tensor, *, has_cls: bool, grid: int, rollout: bool = False) -> Tensor:
    """Per image, how much the pooled output attends to each patch, as a ``(B, grid, grid)`` map.

    With a class token: the class token's attention row over the patches. Without one (mean pooling):
    the attention every patch receives, averaged over queries. ``rollout=True`` multiplies the layers'
    head-averaged attention, each mixed with the identity for the residual path (attention rollout, Abnar
    & Zuidema 2020, eq. 1), instead of reading the last layer alone.

    Args:
        maps: ``(L, B, H, T, T)`` from :meth:`VisionTransformer.attention_maps`.
        has_cls: Token 0 is a class token.
        grid: Patches per side.
        rollout: Use attention rollout through all layers.
    """
    attn = maps.mean(dim=2)  # (L, B, T, T), heads averaged
    if rollout:
        eye = torch.eye(attn.shape[-1], dtype=attn.dtype)
        joint = eye.expand_as(attn[0]).clone()  # (B, T, T)
        for layer in attn:
            mixed = 0.5 * layer + 0.5 * eye
            joint = (mixed / mixed.sum(dim=-1, keepdim=True)) @ joint
        attn_last = joint
    else:
        attn_last = attn[-1]  # (B, T, T)
    start = 1 if has_cls else 0
    if has_cls:
        weights = attn_last[:, 0, start:]  # (B, N)
    else:
        weights = attn_last[:, :, start:].mean(dim=1)  # (B, N)
    if weights.shape[-1] != grid * grid:
        raise ShapeError(f"patch_grid_attention: {weights.shape[-1]} patches do not form a {grid}x{grid} grid")
    weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return weights.reshape(-1, grid, grid)  # (B, g, g)


def vit_flops(config: ViTConfig) -> int:
    """Multiply-adds ×2 of one forward pass for one image (linear layers and attention products).

    Args:
        config: The tower's shape (projection excluded, it is negligible).
    """
    t, d = config.num_tokens, config.width
    hidden = config.mlp_dim or 4 * d
    per_layer = t * (4 * d * d + 2 * d * hidden) + 2 * t * t * d
    patches = config.grid**2 * 3 * config.patch_size**2 * d
    return 2 * (config.layers * per_layer + patches)


__all__ = ["ViTConfig", "VisionTransformer", "patch_grid_attention", "vit_flops"]
