"""Video encoder: an image tower on every frame, then attention over time.

``frames (B, T, C, H, W)`` -> the frame encoder on the real frames only -> ``(B, T, D)`` frame features
-> a learned position per frame (without it attention pooling sees a set of frames, and a shape moving
left is the same set as one moving right) -> optionally one self-attention layer so each frame sees the
others (Vaswani et al. 2017, with the padded frames masked as keys) -> additive attention pooling
(``polymodal.nn.AdditiveAttention``, Bahdanau et al. 2015 / Yang et al. 2016) over the real frames.
A video without any real frame (a missing modality) pools to zeros with zero weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from polymodal.errors import ConfigError, ShapeError
from polymodal.nn import AdditiveAttention, LearnedPositionalEmbedding, MultiHeadAttention

__all__ = ["VideoEncoder", "VideoEncoding"]


@dataclass
class VideoEncoding:
    """What :class:`VideoEncoder` returns.

    Attributes:
        embedding: ``(B, D)`` pooled video embedding; zeros for a video without real frames.
        weights: ``(B, T)`` attention weights over frames; 0 at padded frames, rows sum to 1 (or 0).
        frame_features: ``(B, T, D)`` per-frame features after the temporal layers; zeros at padded frames.
    """

    embedding: Tensor
    weights: Tensor
    frame_features: Tensor


class VideoEncoder(nn.Module):
    """Per-frame image tower plus temporal attention pooling.

    Args:
        frame_encoder: maps images ``(N, C, H, W)`` to features ``(N, dim)`` (any image tower).
        dim: width ``D`` of the frame features.
        max_frames: most frames per video (size of the position table).
        attn_dim: width of the additive attention's hidden layer; ``None`` means ``dim``.
        heads: heads of a self-attention layer across frames before pooling; 0 leaves it out.
        positions: add a learned embedding per frame position.
    """

    def __init__(
        self,
        frame_encoder: nn.Module,
        dim: int,
        *,
        max_frames: int = 32,
        attn_dim: int | None = None,
        heads: int = 0,
        positions: bool = True,
    ) -> None:
        super().__init__()
        if dim <= 0 or max_frames <= 0 or heads < 0:
            raise ConfigError(
                f"VideoEncoder: need dim > 0, max_frames > 0, heads >= 0; got {dim}, {max_frames}, {heads}"
            )
        self.dim = dim
        self.max_frames = max_frames
        self.frame_encoder = frame_encoder
        self.positions = LearnedPositionalEmbedding(dim, max_frames) if positions else None
        self.temporal = MultiHeadAttention(dim, heads) if heads else None
        self.temporal_norm = nn.LayerNorm(dim) if heads else None
        self.pool = AdditiveAttention(dim, attn_dim or dim, bias=True)

    def forward(self, frames: Tensor, mask: Tensor | None = None) -> VideoEncoding:
        """Encode a batch of videos.

        Args:
            frames: ``(B, T, C, H, W)`` float frames, preprocessed for the frame encoder.
            mask: bool ``(B, T)``, True at real frames (``Batch.video_mask``); ``None`` means all real.

        Returns:
            :class:`VideoEncoding`.
        """
        if frames.ndim != 5 or not frames.is_floating_point():
            raise ShapeError(
                f"VideoEncoder: frames must be a float (B, T, C, H, W) tensor, got {frames.dtype} {tuple(frames.shape)}"
            )
        b, t = frames.shape[:2]
        if t > self.max_frames:
            raise ShapeError(f"VideoEncoder: {t} frames exceed max_frames={self.max_frames}")
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=frames.device)
        if mask.dtype != torch.bool or tuple(mask.shape) != (b, t):
            raise ShapeError(
                f"VideoEncoder: mask must be a bool ({b}, {t}) tensor, got {mask.dtype} {tuple(mask.shape)}"
            )

        # Only real frames go through the (expensive) image tower; padding stays zero.
        real = frames[mask]  # (N, C, H, W)
        feats = frames.new_zeros(b, t, self.dim)  # (B, T, D)
        if real.shape[0]:
            encoded = self.frame_encoder(real)
            if encoded.shape != (real.shape[0], self.dim):
                raise ShapeError(
                    f"VideoEncoder: frame_encoder must map (N, C, H, W) to (N, {self.dim}), got {tuple(encoded.shape)}"
                )
            feats = feats.masked_scatter(mask[..., None], encoded.to(feats.dtype))  # (B, T, D)
        h = feats if self.positions is None else self.positions(feats)
        if self.temporal is not None and self.temporal_norm is not None:
            # A video without real frames would leave every key masked (NaN softmax): let it see its
            # padding instead; pooling gives it zero weight anyway.
            empty = ~mask.any(dim=1, keepdim=True)  # (B, 1)
            key_padding = ~mask & ~empty  # (B, T), True = ignored as a key
            h = self.temporal_norm(
                h + self.temporal(h, key_padding_mask=key_padding).output
            )  # post-norm residual
        h = h * mask[..., None].to(h.dtype)  # (B, T, D), zero at padding
        pooled = self.pool(h, mask)
        return VideoEncoding(embedding=pooled.context, weights=pooled.weights, frame_features=h)
