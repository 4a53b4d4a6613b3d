"""Small per-modality encoders of the multimodal classifier, each ``input -> (tokens, valid mask)``.

Tokens are ``(B, N, D)``; vector fusions mean-pool them, the cross-modal fusion attends over them.

- image: a few conv blocks; the last feature map's cells are the tokens (with learned positions, so
  "left of" can be read off; optionally with coordinate channels, CoordConv, and with the directional
  context of each cell, what lies left of, right of, above and below it);
- audio: :class:`polymodal.towers.AudioCNN` over log-mels, one token per clip;
- text: word embeddings with learned positions and a small transformer encoder;
- video: :class:`polymodal.towers.VideoEncoder` over the frames (the image encoder above on every
  frame, a learned position per frame, temporal self-attention, additive attention pooling), one token
  per frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from polymodal.data.pixels import ImagePreprocess, Normalization
from polymodal.errors import ConfigError, ShapeError
from polymodal.nn.directional_context import DirectionalContext
from polymodal.nn.transformer import TransformerEncoder
from polymodal.towers.audio_cnn import AudioCNN
from polymodal.towers.video import VideoEncoder as VideoTower

__all__ = [
    "IMAGE_CONTEXTS",
    "IMAGE_POSITIONS",
    "AudioEncoder",
    "AudioEncoderConfig",
    "EncodedModality",
    "ImageEncoder",
    "ImageEncoderConfig",
    "TextEncoder",
    "TextEncoderConfig",
    "VideoEncoder",
    "VideoEncoderConfig",
    "encoder_config_from_dict",
]


def _positive(owner: str, **values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(f"{owner}.{name} must be a positive int, got {v!r}")


@dataclass(frozen=True)
class EncodedModality:
    """One modality's encoding: ``tokens`` ``(B, N, D)``, ``mask`` ``(B, N)`` bool (true = valid) and
    ``pooled`` ``(B, D)``, the one vector the vector fusions take."""

    tokens: Tensor
    mask: Tensor
    pooled: Tensor


IMAGE_POSITIONS: tuple[str, ...] = ("cells", "rows_cols")
IMAGE_CONTEXTS: tuple[str, ...] = ("none", "directions")


@dataclass(frozen=True)
class ImageEncoderConfig:
    """Conv image encoder.

    Args:
        dim: token width.
        channels: input channels (1 grey, 3 RGB).
        image_size: input side in pixels (images are resized to it).
        widths: conv widths; each block halves the side.
        coords: append two coordinate channels (x and y in [-1, 1]) to the input of every conv block
            (CoordConv, Liu et al. 2018, "An intriguing failing of convolutional neural networks and the
            CoordConv solution"), so each cell's features say where it is, not only the added positions.
        positions: the learned positions added to the tokens: "cells" (one vector per token) or
            "rows_cols" (a row vector plus a column vector, the factorised 2-D embedding of ViT,
            Dosovitskiy et al. 2021, appendix D.4, summed instead of concatenated): every token of a
            column shares its column part, so "left of" is a comparison of one learned part.
        position_std: standard deviation of the positions at initialisation. ViT's 0.02 (the default,
            and the presets') leaves them at about 1/15 of the norm of these CNN cell features, and the
            shapes VQA models never grew them. Starting them near the features' scale (0.5) made them a
            first-order part of every key and value, but did not make the relation questions learnable
            and scored lower on the full VQA recipe (docs/fusion.md), so it stays an option.
        context: "none", or "directions": after the projection each cell also gets the gated sums of
            the cells left of, right of, above and below it (:class:`polymodal.nn.DirectionalContext`),
            so a cell's token says what lies in each direction from it.
    """

    kind: str = "image_cnn"
    dim: int = 32
    channels: int = 1
    image_size: int = 28
    widths: tuple[int, ...] = (16, 32)
    coords: bool = False
    positions: str = "cells"
    position_std: float = 0.02
    context: str = "none"

    def __post_init__(self) -> None:
        _positive("ImageEncoderConfig", dim=self.dim, channels=self.channels, image_size=self.image_size)
        object.__setattr__(self, "widths", tuple(self.widths))
        if not self.widths:
            raise ConfigError("ImageEncoderConfig.widths must not be empty")
        _positive("ImageEncoderConfig", **{f"widths[{i}]": w for i, w in enumerate(self.widths)})
        if not isinstance(self.coords, bool):
            raise ConfigError(f"ImageEncoderConfig.coords must be true or false, got {self.coords!r}")
        if self.image_size % (2 ** len(self.widths)):
            raise ConfigError(f"ImageEncoderConfig.image_size={self.image_size} must be divisible by 2**{len(self.widths)}")
        if self.positions not in IMAGE_POSITIONS:
            raise ConfigError(f"ImageEncoderConfig.positions must be one of {IMAGE_POSITIONS}, got {self.positions!r}")
        if isinstance(self.position_std, bool) or not isinstance(self.position_std, (int, float)) or not self.position_std > 0:
            raise ConfigError(f"ImageEncoderConfig.position_std must be a number > 0, got {self.position_std!r}")
        object.__setattr__(self, "position_std", float(self.position_std))
        if self.context not in IMAGE_CONTEXTS:
            raise ConfigError(f"ImageEncoderConfig.context must be one of {IMAGE_CONTEXTS}, got {self.context!r}")

    @property
    def image_preprocess(self) -> ImagePreprocess:
        """How an image enters this encoder: grey or RGB, resized to ``image_size`` squared (bilinear), in [0, 1]."""
        c = 1 if self.channels == 1 else 3
        return ImagePreprocess(size=self.image_size, fit="squash", resample="bilinear", channels=c,
                               normalization=Normalization((0.0,) * c, (1.0,) * c, scale=255.0))

    @property
    def token_grid(self) -> int:
        """Tokens per side: each block halves the side, so a token covers ``2**len(widths)`` pixels."""
        return self.image_size // 2 ** len(self.widths)

    @property
    def num_tokens(self) -> int:
        return self.token_grid**2


@dataclass(frozen=True)
class AudioEncoderConfig:
    """Log-mel CNN audio encoder; the log-mel settings are part of it so a saved model featurises alike.

    Args:
        dim: embedding width.
        sample_rate: rate the waveform is resampled to before featurising.
        seconds: clips are padded or cut to this length.
        n_fft: FFT size.
        hop_length: samples between frames.
        n_mels: mel bands.
        widths: AudioCNN block widths.
    """

    kind: str = "audio_cnn"
    dim: int = 32
    sample_rate: int = 8000
    seconds: float = 1.0
    n_fft: int = 256
    hop_length: int = 128
    n_mels: int = 32
    widths: tuple[int, ...] = (16, 32, 32)

    def __post_init__(self) -> None:
        _positive("AudioEncoderConfig", dim=self.dim, sample_rate=self.sample_rate, n_fft=self.n_fft,
                  hop_length=self.hop_length, n_mels=self.n_mels)  # fmt: skip
        object.__setattr__(self, "widths", tuple(self.widths))
        if not self.seconds > 0:
            raise ConfigError(f"AudioEncoderConfig.seconds must be > 0, got {self.seconds}")

    @property
    def num_samples(self) -> int:
        return int(round(self.sample_rate * self.seconds))


@dataclass(frozen=True)
class TextEncoderConfig:
    """Word-embedding transformer text encoder.

    Args:
        dim: token width.
        vocab: the words of the tokenizer (specials excluded), filled in from the training texts.
        max_length: tokens per text, ``<bos>``/``<eos>`` included.
        depth: transformer layers.
        heads: attention heads.
    """

    kind: str = "text_transformer"
    dim: int = 32
    vocab: tuple[str, ...] = field(default_factory=tuple)
    max_length: int = 16
    depth: int = 1
    heads: int = 4

    def __post_init__(self) -> None:
        _positive("TextEncoderConfig", dim=self.dim, max_length=self.max_length, depth=self.depth, heads=self.heads)
        object.__setattr__(self, "vocab", tuple(self.vocab))
        if self.dim % self.heads:
            raise ConfigError(f"TextEncoderConfig.dim={self.dim} must be divisible by heads={self.heads}")


@dataclass(frozen=True)
class VideoEncoderConfig:
    """Video encoder: the conv image encoder on every frame, then attention over time.

    Args:
        dim: frame feature and token width.
        channels: frame channels (1 grey, 3 RGB).
        image_size: frames are resized to this side.
        widths: the frame encoder's conv widths.
        num_frames: frames per video (videos with more are sampled uniformly, fewer padded and masked).
        heads: heads of the self-attention layer across frames; 0 leaves it out.
    """

    kind: str = "video_cnn"
    dim: int = 32
    channels: int = 1
    image_size: int = 32
    widths: tuple[int, ...] = (16, 32)
    num_frames: int = 10
    heads: int = 4

    def __post_init__(self) -> None:
        _positive("VideoEncoderConfig", dim=self.dim, num_frames=self.num_frames)
        object.__setattr__(self, "widths", tuple(self.widths))
        if isinstance(self.heads, bool) or not isinstance(self.heads, int) or self.heads < 0 or (self.heads and self.dim % self.heads):
            raise ConfigError(f"VideoEncoderConfig.heads must be an int >= 0 dividing dim={self.dim}, got {self.heads!r}")
        self.frame_config  # noqa: B018 - checks the frame encoder's settings

    @property
    def frame_config(self) -> ImageEncoderConfig:
        """The image encoder applied to every frame."""
        return ImageEncoderConfig(dim=self.dim, channels=self.channels, image_size=self.image_size, widths=self.widths)

    @property
    def image_preprocess(self) -> ImagePreprocess:
        """How a frame enters the frame encoder (the image encoder's preprocessing)."""
        return self.frame_config.image_preprocess


EncoderConfig = ImageEncoderConfig | AudioEncoderConfig | TextEncoderConfig | VideoEncoderConfig
_ENCODER_CONFIGS: dict[str, type[Any]] = {
    "image_cnn": ImageEncoderConfig,
    "audio_cnn": AudioEncoderConfig,
    "text_transformer": TextEncoderConfig,
    "video_cnn": VideoEncoderConfig,
}
MODALITY_OF_ENCODER = {"image_cnn": "image", "audio_cnn": "audio", "text_transformer": "text", "video_cnn": "video"}


def encoder_config_from_dict(d: dict[str, Any]) -> EncoderConfig:
    """An encoder config from its preset dict; ``kind`` picks the class."""
    kind = d.get("kind")
    if kind not in _ENCODER_CONFIGS:
        raise ConfigError(f"unknown encoder kind {kind!r}; known: {', '.join(_ENCODER_CONFIGS)}")
    cls = _ENCODER_CONFIGS[kind]
    unknown = set(d) - set(cls.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"encoder {kind!r}: unknown fields {sorted(unknown)}")
    return cls(**d)


def encoder_config_to_dict(c: EncoderConfig) -> dict[str, Any]:
    d = asdict(c)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _coordinates(x: Tensor) -> Tensor:
    """``(B, 2, H, W)``: the x and y coordinate of every pixel of ``x`` ``(B, C, H, W)``, in [-1, 1]."""
    b, _, h, w = x.shape
    ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=0)  # (2, H, W): x then y
    return grid.expand(b, 2, h, w)


class ImageEncoder(nn.Module):
    """Conv blocks (3x3 conv, GroupNorm, GELU, 2x2 max pool), a 1x1 projection, learned cell positions.

    Args:
        config: the settings.
    """

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        self.config = config
        extra = 2 if config.coords else 0
        stages: list[list[nn.Module]] = []
        prev = config.channels
        for w in config.widths:
            # GroupNorm, not BatchNorm: no running statistics, so the saved weights are the whole model
            stages.append([nn.Conv2d(prev + extra, w, 3, padding=1), nn.GroupNorm(min(8, w), w), nn.GELU(), nn.MaxPool2d(2)])
            prev = w
        # Without coordinates the blocks stay one flat Sequential: the parameter names of saved models.
        self.blocks: nn.Module = (
            nn.ModuleList(nn.Sequential(*st) for st in stages) if config.coords else nn.Sequential(*(m for st in stages for m in st))
        )
        self.proj = nn.Conv2d(prev, config.dim, 1)
        if config.context == "directions":  # only then, so models saved without it load unchanged
            self.context = DirectionalContext(config.dim)
        side = config.token_grid
        if config.positions == "rows_cols":
            self.pos_rows = nn.Parameter(torch.randn(side, config.dim) * config.position_std)
            self.pos_cols = nn.Parameter(torch.randn(side, config.dim) * config.position_std)
        else:  # "cells": the parameter name of models saved before the option existed
            self.pos = nn.Parameter(torch.randn(config.num_tokens, config.dim) * config.position_std)
        # The pooled vector is a linear map of all cells, not their mean: a mean over the cells of a
        # shallow CNN keeps which strokes occur but not where, and MNIST digits differ by where.
        self.pool = nn.Linear(config.num_tokens * config.dim, config.dim)

    def positions(self) -> Tensor:
        """The learned positions of the tokens, ``(h*w, D)`` in row-major order."""
        if self.config.positions == "rows_cols":
            grid = self.pos_rows[:, None, :] + self.pos_cols[None, :, :]  # (h, 1, D) + (1, w, D) -> (h, w, D)
            return grid.flatten(0, 1)  # (h*w, D)
        return self.pos

    def forward(self, images: Tensor) -> EncodedModality:
        """Encode ``(B, C, H, W)`` images in [0, 1]."""
        c = self.config
        if images.ndim != 4 or images.shape[1:] != (c.channels, c.image_size, c.image_size):
            raise ShapeError(f"ImageEncoder: images must be (B, {c.channels}, {c.image_size}, {c.image_size}), got {tuple(images.shape)}")
        x = images * 2.0 - 1.0
        if isinstance(self.blocks, nn.ModuleList):  # coords: each block sees the coordinates again
            for block in self.blocks:
                x = block(torch.cat([x, _coordinates(x)], dim=1))  # (B, C + 2, H, W) -> (B, w, H/2, W/2)
        else:
            x = self.blocks(x)
        x = self.proj(x)  # (B, D, h, w)
        if c.context == "directions":
            x = self.context(x)  # (B, D, h, w), each cell + what lies in each direction from it
        tokens = x.flatten(2).transpose(1, 2) + self.positions()  # (B, h*w, D), row-major cells
        pooled = self.pool(nn.functional.gelu(tokens).flatten(1))  # (B, h*w*D) -> (B, D)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncodedModality(tokens, mask, pooled)


class AudioEncoder(nn.Module):
    """:class:`polymodal.towers.AudioCNN` over ``(B, n_mels, frames)`` log-mels; one token per clip.

    Args:
        config: the settings.
    """

    def __init__(self, config: AudioEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.cnn = AudioCNN(config.n_mels, config.dim, channels=config.widths)

    def forward(self, log_mels: Tensor, lengths: Tensor | None = None) -> EncodedModality:
        """Encode log-mels with ``(B,)`` valid frame counts."""
        v = self.cnn(log_mels, lengths)  # (B, D)
        return EncodedModality(v[:, None, :], torch.ones(v.shape[0], 1, dtype=torch.bool, device=v.device), v)


class TextEncoder(nn.Module):
    """Token embeddings plus learned positions, then a pre-norm transformer encoder.

    Args:
        config: the settings; ``len(config.vocab) + 4`` ids (the tokenizer's specials first).
    """

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(len(config.vocab) + 4, config.dim, padding_idx=0)
        self.pos = nn.Parameter(torch.randn(config.max_length, config.dim) * 0.02)
        self.encoder = TransformerEncoder(config.dim, config.heads, config.depth, mlp_ratio=2.0)

    def forward(self, ids: Tensor) -> EncodedModality:
        """Encode ``(B, L)`` token ids (0 = padding)."""
        if ids.ndim != 2 or ids.shape[1] > self.config.max_length:
            raise ShapeError(f"TextEncoder: ids must be (B, L <= {self.config.max_length}), got {tuple(ids.shape)}")
        valid = ids != 0  # (B, L)
        # a fully padded row (an absent text) keeps one valid position so attention has a key
        valid = valid.clone()
        valid[:, 0] = True
        x = self.embed(ids) + self.pos[: ids.shape[1]]  # (B, L, D)
        tokens = self.encoder(x, key_padding_mask=~valid)  # (B, L, D)
        w = valid.to(tokens.dtype)[..., None]
        return EncodedModality(tokens, valid, (tokens * w).sum(1) / w.sum(1))


class _PooledFrames(nn.Module):
    """An :class:`ImageEncoder` as a frame tower: ``(N, C, H, W)`` -> its pooled ``(N, D)``."""

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        self.image = ImageEncoder(config)

    def forward(self, frames: Tensor) -> Tensor:
        return self.image(frames).pooled


class VideoEncoder(nn.Module):
    """:class:`polymodal.towers.VideoEncoder` with the conv image encoder as its frame tower; one token
    per frame, the attention-pooled vector as ``pooled``.

    Args:
        config: the settings.
    """

    def __init__(self, config: VideoEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.tower = VideoTower(_PooledFrames(config.frame_config), config.dim, max_frames=config.num_frames,
                                heads=config.heads)

    def forward(self, frames: Tensor, mask: Tensor | None = None) -> EncodedModality:
        """Encode ``(B, T, C, H, W)`` frames in [0, 1] with a ``(B, T)`` bool mask of real frames."""
        out = self.tower(frames, mask)
        b, t = frames.shape[:2]
        valid = torch.ones(b, t, dtype=torch.bool, device=frames.device) if mask is None else mask.clone()
        valid[:, 0] = True  # a video without frames (a missing modality) keeps one key for cross-modal attention
        return EncodedModality(out.frame_features, valid, out.embedding)
