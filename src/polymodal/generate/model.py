"""A small text-conditioned U-Net velocity field for 32x32 images (conditional flow matching).

The network predicts the velocity ``v(x_t, t, c)`` of :mod:`polymodal.generate.flow`. Conditioning
follows the usual diffusion U-Net recipe (Ho et al. 2020; Dhariwal & Nichol 2021): the time ``t`` goes
through a sinusoidal embedding and an MLP, the text embedding ``c`` (the frozen MiniLM sentence vector,
384-d) through a linear layer; their sum scales and shifts every residual block's normalised activations
(FiLM / adaptive group norm). A learned "null" text vector stands for "no condition": it is used when the
condition is dropped in training and for the unconditional branch of classifier-free guidance.

A model folder holds ``config.json`` (``kind: "text2image"``) and ``model.safetensors``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymodal.core.checkpoint import atomic_write_json, load_weights, read_folder_config, save_weights
from polymodal.data.pixels import ImagePreprocess, Normalization
from polymodal.errors import CheckpointError, ConfigError, ShapeError

__all__ = ["FlowUNet", "GeneratorConfig", "image_preprocess", "load_generator", "save_generator"]

KIND = "text2image"


def image_preprocess(size: int = 32) -> ImagePreprocess:
    """The generator's pixel space: RGB, the whole image resized to ``size x size`` (Lanczos, an area
    downsampling for photos and emoji), ``x / 127.5 - 1`` in [-1, 1].

    Args:
        size: the image side.
    """
    ones = (1.0, 1.0, 1.0)
    return ImagePreprocess(size=size, fit="squash", resample="lanczos", normalization=Normalization(ones, ones, 127.5))


@dataclass
class GeneratorConfig:
    """Sizes of a :class:`FlowUNet`.

    Args:
        image_size: Side of the square images (divisible by 4).
        channels: Width at full resolution; 2x at 1/2 and 1/4 resolution.
        cond_dim: Width of the text embedding (384 for MiniLM).
        emb_dim: Width of the time/text embedding fed to the blocks.
        conditional: False builds the unconditional baseline (the text is ignored).
    """

    image_size: int = 32
    channels: int = 32
    cond_dim: int = 384
    emb_dim: int = 128
    conditional: bool = True

    def __post_init__(self) -> None:
        if self.image_size < 8 or self.image_size % 4:
            raise ConfigError(f"GeneratorConfig.image_size: must be >= 8 and divisible by 4, got {self.image_size}")
        for name in ("channels", "cond_dim", "emb_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"GeneratorConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if self.channels % 8:
            raise ConfigError(f"GeneratorConfig.channels: must be divisible by 8 (group norm), got {self.channels}")


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding ``(B, dim)`` of times ``t`` in [0, 1] (Vaswani et al. 2017, scaled by 1000).

    Args:
        t: ``(B,)``.
        dim: Even width.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = 1000.0 * t[:, None].float() * freqs[None]  # (B, half)
    return torch.cat([args.sin(), args.cos()], dim=-1)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, FiLM from the embedding after the first norm, residual."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(8, c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = nn.GroupNorm(8, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stable early training
        nn.init.zeros_(self.conv2.bias)  # type: ignore[arg-type]
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class FlowUNet(nn.Module):
    """Velocity field ``v(x, t, c)`` on ``(B, 3, S, S)`` images in [-1, 1].

    Args:
        config: Sizes.
    """

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or GeneratorConfig()
        ch, e = c.channels, c.emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.cond_proj = nn.Linear(c.cond_dim, e)
        self.null_cond = nn.Parameter(torch.zeros(c.cond_dim))
        self.inp = nn.Conv2d(3, ch, 3, padding=1)
        self.down1 = _ResBlock(ch, ch, e)
        self.down2 = _ResBlock(ch, 2 * ch, e)  # at 1/2
        self.mid = _ResBlock(2 * ch, 2 * ch, e)  # at 1/4
        self.up2 = _ResBlock(4 * ch, 2 * ch, e)  # at 1/2, with the skip
        self.up1 = _ResBlock(3 * ch, ch, e)  # at 1/1, with the skip
        self.out = nn.Sequential(nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, 3, 3, padding=1))

    @property
    def image_preprocess(self) -> ImagePreprocess:
        """How images enter this model's pixel space (training data; :func:`image_preprocess`)."""
        return image_preprocess(self.config.image_size)

    def embed(self, t: Tensor, cond: Tensor | None) -> Tensor:
        """Block embedding ``(B, emb_dim)`` of time and condition (``None`` rows = the null condition)."""
        emb = self.time_mlp(timestep_embedding(t, self.config.emb_dim))
        if cond is None or not self.config.conditional:
            cond = self.null_cond.expand(t.shape[0], -1)
        return emb + self.cond_proj(cond)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        """Velocity ``(B, 3, S, S)``.

        Args:
            x: ``(B, 3, S, S)`` noisy images.
            t: ``(B,)`` times in [0, 1].
            cond: ``(B, cond_dim)`` text embeddings, or ``None`` for unconditional.
        """
        s = self.config.image_size
        if x.dim() != 4 or x.shape[1:] != (3, s, s):
            raise ShapeError(f"x: expected (B, 3, {s}, {s}), got {tuple(x.shape)}")
        emb = self.embed(t, cond)
        h1 = self.down1(self.inp(x), emb)  # (B, ch, S, S)
        h2 = self.down2(F.avg_pool2d(h1, 2), emb)  # (B, 2ch, S/2, S/2)
        h = self.mid(F.avg_pool2d(h2, 2), emb)  # (B, 2ch, S/4, S/4)
        h = self.up2(torch.cat([F.interpolate(h, scale_factor=2.0), h2], 1), emb)  # (B, 2ch, S/2, S/2)
        h = self.up1(torch.cat([F.interpolate(h, scale_factor=2.0), h1], 1), emb)  # (B, ch, S, S)
        return self.out(h)


def save_generator(model: FlowUNet, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``path/config.json`` and ``path/model.safetensors``.

    Args:
        model: The generator.
        path: Folder (created).
        extra: More JSON keys for ``config.json``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_weights(path / "model.safetensors", model.state_dict(), metadata={"format": "polymodal"})
    atomic_write_json(path / "config.json", {"kind": KIND, "model": asdict(model.config), **(extra or {})})
    return path


def load_generator(path: str | Path) -> FlowUNet:
    """Read a folder written by :func:`save_generator`; eval mode.

    Args:
        path: The folder.

    Raises:
        CheckpointError: not a generator folder, or weights that do not fit.
    """
    path = Path(path)
    cfg = read_folder_config(path, what="generator", kinds=[KIND])
    try:
        model = FlowUNet(GeneratorConfig(**cfg["model"]))
        model.load_state_dict(load_weights(path / "model.safetensors"))
    except (KeyError, TypeError, ConfigError, RuntimeError) as e:
        raise CheckpointError(f"{path}: {e}") from None
    return model.eval()
