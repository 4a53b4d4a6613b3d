"""Cross-modal transformer fusion in the style of MulT (Tsai et al. 2019, "Multimodal Transformer for
Unaligned Multimodal Language Sequences"): each modality's tokens attend to the other modalities' tokens.

This is also the co-attention of VQA models (a question attending to image regions, e.g. Lu et al. 2016;
Tan & Bansal 2019, LXMERT's cross-modality encoder): with ``{"text", "image"}`` the question tokens query
the image's feature-map cells and the image cells query the question.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from polymodal.errors import ConfigError
from polymodal.fusion.base import Fusion, masked_mean
from polymodal.nn.transformer import TransformerDecoderLayer

__all__ = ["POOLS", "CrossModalFusion"]

POOLS: tuple[str, ...] = ("mean", "query")


class CrossModalFusion(Fusion):
    """For each target modality ``m``: ``depth`` blocks of self-attention, cross-attention to the
    concatenated tokens of every other modality (keys/values), and an MLP (MulT's crossmodal
    transformer, sec. 3.2, with all sources at once); then one vector per modality, concatenation and a
    linear map.

    The vector per modality is either the masked mean of its tokens (``pool="mean"``, MulT) or the output
    of a learned query token prepended to its tokens (``pool="query"``, BERT's ``[CLS]``, Devlin et al.
    2019; the VQA models' pooled output, e.g. LXMERT). The query token self-attends to every token of
    its modality and cross-attends to the other modalities in each block, so a question like "is the
    circle above the star?" can fetch the two shapes' cells with different heads in one block and
    compare them, where the mean over question tokens averages away which shape was named first.

    Args:
        dims: width of each modality's tokens.
        out_dim: width of the output.
        model_dim: width inside the transformer (each modality is projected to it).
        heads: attention heads.
        depth: blocks per target modality.
        dropout: dropout in the blocks.
        pool: "mean" (masked mean over the tokens) or "query" (a learned ``[CLS]`` token per modality).
    """

    uses_tokens = True

    def __init__(
        self,
        dims: Mapping[str, int],
        out_dim: int,
        *,
        model_dim: int = 64,
        heads: int = 4,
        depth: int = 2,
        dropout: float = 0.0,
        pool: str = "mean",
    ) -> None:
        super().__init__(dims, out_dim)
        if len(self.dims) < 2:
            raise ConfigError("CrossModalFusion needs at least two modalities")
        if model_dim % heads:
            raise ConfigError(f"CrossModalFusion model_dim={model_dim} must be divisible by heads={heads}")
        if depth <= 0:
            raise ConfigError(f"CrossModalFusion depth must be positive, got {depth}")
        if pool not in POOLS:
            raise ConfigError(f"CrossModalFusion pool must be one of {POOLS}, got {pool!r}")
        self.model_dim = model_dim
        self.pool = pool
        self.inputs = nn.ModuleDict({m: nn.Linear(d, model_dim) for m, d in self.dims.items()})
        # A learned type embedding per modality, so a target can tell which source a key came from.
        self.type_embed = nn.ParameterDict({m: nn.Parameter(torch.randn(model_dim) * 0.02) for m in self.dims})
        self.blocks = nn.ModuleDict(
            {
                m: nn.ModuleList(TransformerDecoderLayer(model_dim, heads, mlp_ratio=2.0, dropout=dropout) for _ in range(depth))
                for m in self.dims
            }
        )
        if pool == "query":  # only then, so models saved with mean pooling load unchanged
            self.query = nn.ParameterDict({m: nn.Parameter(torch.randn(model_dim) * 0.02) for m in self.dims})
        self.norm = nn.LayerNorm(model_dim)
        self.out = nn.Linear(model_dim * len(self.dims), out_dim)

    def forward(
        self, features: Mapping[str, Tensor], present: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """Fuse.

        Args:
            features: ``(B, N_m, D_m)`` tokens (or ``(B, D_m)``, one token) per modality.
            present: ``(B,)`` bool per modality; an absent modality's tokens all become its missing embedding.
            masks: optional ``(B, N_m)`` bool, true on valid tokens.

        Returns:
            ``(B, out_dim)``.
        """
        self.check(features, present)
        tokens: dict[str, Tensor] = {}
        valid: dict[str, Tensor] = {}
        for m in self.modalities:
            x, valid[m] = self.tokens(features, present, masks, m)  # (B, N, D_m), (B, N)
            tokens[m] = self.inputs[m](x) + self.type_embed[m]  # (B, N, d)
        pooled = []
        for m in self.modalities:
            others = [o for o in self.modalities if o != m]
            memory = torch.cat([tokens[o] for o in others], dim=1)  # (B, sum N_o, d)
            memory_pad = ~torch.cat([valid[o] for o in others], dim=1)  # (B, sum N_o), True = padding
            x, keep = tokens[m], valid[m]
            if self.pool == "query":  # the query token first; it is a target only, never another's memory
                q = self.query[m].expand(x.shape[0], 1, -1)  # (B, 1, d)
                x = torch.cat([q, x], dim=1)  # (B, 1 + N, d)
                keep = torch.cat([torch.ones_like(keep[:, :1]), keep], dim=1)  # (B, 1 + N)
            for block in self.blocks[m]:  # type: ignore[attr-defined]
                x = block(x, memory, key_padding_mask=~keep, memory_key_padding_mask=memory_pad)
            x = self.norm(x)
            pooled.append(x[:, 0] if self.pool == "query" else masked_mean(x, keep))  # (B, d)
        return self.out(torch.cat(pooled, dim=-1))
