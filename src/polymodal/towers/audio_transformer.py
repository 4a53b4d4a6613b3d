"""Audio Spectrogram Transformer (Gong et al., 2021): a ViT over log-mel patches.

A log-mel spectrogram ``(B, n_mels, frames)`` is cut into ``patch_freq x patch_time`` patches (stride may
be smaller than the patch, AST overlaps them), each linearly embedded; a [CLS] token and factorised
positional embeddings (one per frequency row plus one per time column, so any clip length up to
``max_frames`` works) go in front of a pre-norm transformer encoder. Padded frames are masked out of
attention, so a clip's embedding is the same alone or padded inside a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from polymodal.errors import ConfigError, ShapeError
from polymodal.nn.transformer import TransformerEncoder


@dataclass
class ASTConfig:
    n_mels: int = 64
    patch_freq: int = 16
    patch_time: int = 16
    stride_freq: int = 16  # AST uses 10 (overlapping patches); equal to the patch for speed here
    stride_time: int = 16
    dim: int = 192
    depth: int = 4
    heads: int = 3
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    max_frames: int = 2048  # longest spectrogram the time embedding covers
    pooling: str = "cls"  # "cls" or "mean" over real patches

    def __post_init__(self) -> None:
        if self.n_mels < self.patch_freq or self.patch_freq < 1 or self.patch_time < 1:
            raise ConfigError(f"ASTConfig: need 1 <= patch_freq <= n_mels, got {self.patch_freq} and {self.n_mels}")
        if not (1 <= self.stride_freq <= self.patch_freq and 1 <= self.stride_time <= self.patch_time):
            raise ConfigError("ASTConfig: strides must be in 1..patch size")
        if self.dim % self.heads:
            raise ConfigError(f"ASTConfig: dim {self.dim} is not divisible by heads {self.heads}")
        if self.pooling not in ("cls", "mean"):
            raise ConfigError(f"ASTConfig: pooling must be 'cls' or 'mean', got {self.pooling!r}")

    @property
    def freq_patches(self) -> int:
        return (self.n_mels - self.patch_freq) // self.stride_freq + 1

    def time_patches(self, frames: int) -> int:
        return max(0, (frames - self.patch_time) // self.stride_time + 1)


class AudioSpectrogramTransformer(nn.Module):
    """``forward(features (B, n_mels, T), lengths (B,) | None) -> (B, dim)``."""

    def __init__(self, config: ASTConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or ASTConfig()
        self.patch = nn.Conv2d(1, c.dim, (c.patch_freq, c.patch_time), stride=(c.stride_freq, c.stride_time))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.freq_pos = nn.Parameter(torch.randn(c.freq_patches, c.dim) * 0.02)
        self.time_pos = nn.Parameter(torch.randn(c.time_patches(c.max_frames), c.dim) * 0.02)
        self.encoder = TransformerEncoder(c.dim, c.heads, c.depth, mlp_ratio=c.mlp_ratio, dropout=c.dropout)
        nn.init.normal_(self.cls_token, std=0.02)

    def forward(self, features: Tensor, lengths: Tensor | None = None) -> Tensor:
        c = self.config
        if features.ndim != 3 or features.shape[1] != c.n_mels:
            raise ShapeError(f"features: expected (B, {c.n_mels}, T), got {tuple(features.shape)}")
        b, _, frames = features.shape
        nt = c.time_patches(frames)
        if nt == 0:
            raise ShapeError(f"features: {frames} frames is shorter than one patch ({c.patch_time})")
        if nt > self.time_pos.shape[0]:
            raise ShapeError(f"features: {frames} frames is over max_frames={c.max_frames}")
        if lengths is None:
            lengths = torch.full((b,), frames, dtype=torch.long, device=features.device)
        if lengths.shape != (b,):
            raise ShapeError(f"lengths: expected shape ({b},), got {tuple(lengths.shape)}")
        # Zero the padding so no patch that straddles the end sees another clip's leftovers.
        valid = torch.arange(frames, device=features.device)[None, :] < lengths[:, None]  # (B, T)
        x = self.patch((features * valid[:, None, :]).unsqueeze(1))  # (B, D, nf, nt)
        nf = x.shape[2]
        x = x + self.freq_pos[:nf].T[None, :, :, None] + self.time_pos[:nt].T[None, :, None, :]
        tokens = x.flatten(2).transpose(1, 2)  # (B, nf*nt, D), frequency-major
        # A time column is real only if its whole patch lies inside the clip: the same columns the clip
        # has when it is encoded alone, unpadded.
        ends = torch.arange(nt, device=features.device) * c.stride_time + c.patch_time  # (nt,)
        pad_cols = ends[None, :] > lengths[:, None]  # (B, nt)
        pad = pad_cols[:, None, :].expand(b, nf, nt).reshape(b, nf * nt)
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=pad.device), pad], dim=1)
        h = self.encoder(tokens, key_padding_mask=pad)  # (B, 1 + nf*nt, D)
        if c.pooling == "cls":
            return h[:, 0]
        keep = (~pad[:, 1:]).unsqueeze(-1).to(h.dtype)
        return (h[:, 1:] * keep).sum(1) / keep.sum(1).clamp(min=1)
