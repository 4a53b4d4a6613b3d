"""A small CNN tower over log-mel spectrograms: ``(B, n_mels, frames)`` -> ``(B, dim)``.

The spectrogram is an image with one channel: conv blocks (3x3 conv, per-position channel norm, GELU,
2x2 max pooling) halve frequency and time, then a masked mean over the valid frames and a mean over
frequency give one vector per clip. Variable lengths are handled exactly: padded frames are zeroed
before every conv and left out of every statistic, so a clip's embedding is the same alone or padded
inside a batch (tests/test_audio.py checks this).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from polymodal.errors import ConfigError, ShapeError

__all__ = ["AudioCNN"]


def _frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """``(B, frames)`` bool, true on valid frames."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


class _ChannelNorm(nn.Module):
    """LayerNorm over channels at each (frequency, time) position.

    Unlike BatchNorm or GroupNorm it pools nothing across positions, so padding cannot leak into the
    statistics of valid frames.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # (B, C, F, T)


class _Block(nn.Module):
    """3x3 conv, channel norm, GELU; then 2x2 max pooling (ceil mode, so no valid frame is dropped)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm = _ChannelNorm(out_channels)
        self.act = nn.GELU()
        self.pool = nn.MaxPool2d(2, ceil_mode=True)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm(self.conv(x)))
        # Padded frames hold -inf before pooling, so a window that straddles the end takes the max over
        # its valid frames only, the same as ceil-mode pooling of the unpadded clip.
        x = x.masked_fill(~valid[:, None, None, :], float("-inf"))
        return self.pool(x)


class AudioCNN(nn.Module):
    """Embed log-mel spectrograms with a few conv blocks and masked global pooling.

    The input is normalised per clip (zero mean, unit variance over its valid cells), so raw dB values
    from :func:`polymodal.data.audio.log_mel` can go in directly and recording gain matters less.

    Args:
        n_mels: mel bands of the input.
        dim: size of the output embedding.
        channels: output channels of each conv block; each block halves frequency and time.
        dropout: dropout before the output projection.
    """

    def __init__(
        self, n_mels: int, dim: int, *, channels: Sequence[int] = (32, 64, 128), dropout: float = 0.0
    ) -> None:
        super().__init__()
        if isinstance(n_mels, bool) or not isinstance(n_mels, int) or n_mels <= 0:
            raise ConfigError(f"AudioCNN n_mels must be a positive int, got {n_mels!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ConfigError(f"AudioCNN dim must be a positive int, got {dim!r}")
        if not channels or any(not isinstance(c, int) or c <= 0 for c in channels):
            raise ConfigError(f"AudioCNN channels must be positive ints, got {channels!r}")
        if not 0 <= dropout < 1:
            raise ConfigError(f"AudioCNN dropout must be in [0, 1), got {dropout}")
        self.n_mels = n_mels
        self.dim = dim
        widths = [1, *channels]
        self.blocks = nn.ModuleList(_Block(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(widths[-1], dim)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Embed a batch.

        Args:
            features: ``(B, n_mels, frames)`` log-mel spectrograms, padded at the end.
            lengths: ``(B,)`` valid frames per clip; ``None`` means all frames are valid.

        Returns:
            ``(B, dim)`` embeddings.
        """
        if features.ndim != 3 or features.shape[1] != self.n_mels:
            raise ShapeError(
                f"features must be (B, n_mels={self.n_mels}, frames), got {tuple(features.shape)}"
            )
        b, _, frames = features.shape
        if lengths is None:
            lengths = torch.full((b,), frames, dtype=torch.int64, device=features.device)
        elif lengths.shape != (b,):
            raise ShapeError(f"lengths must have shape ({b},), got {tuple(lengths.shape)}")
        if bool((lengths < 1).any()) or bool((lengths > frames).any()):
            raise ShapeError(f"lengths must be in [1, {frames}], got {lengths.tolist()}")
        lengths = lengths.to(features.device)
        valid = _frame_mask(lengths, frames)  # (B, T)
        x = features[:, None]  # (B, 1, M, T)
        cells = valid[:, None, None, :].to(x.dtype)  # (B, 1, 1, T)
        count = cells.sum(dim=(1, 2, 3)) * self.n_mels  # valid cells per clip, (B,)
        mean = (x * cells).sum(dim=(1, 2, 3)) / count
        var = (((x - mean[:, None, None, None]) * cells) ** 2).sum(dim=(1, 2, 3)) / count
        x = (x - mean[:, None, None, None]) / (var[:, None, None, None] + 1e-5).sqrt()
        for block in self.blocks:
            x = x.masked_fill(~valid[:, None, None, :], 0.0)  # zero padding, as the unpadded conv sees
            x = block(x, valid)
            lengths = (lengths + 1) // 2  # ceil-mode pooling
            valid = _frame_mask(lengths, x.shape[-1])
        x = x.masked_fill(~valid[:, None, None, :], 0.0)
        pooled = x.sum(dim=-1) / lengths[:, None, None].to(x.dtype)  # masked mean over time, (B, C, F)
        pooled = pooled.mean(dim=-1)  # (B, C)
        return self.proj(self.dropout(pooled))
