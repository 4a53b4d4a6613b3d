"""A small text-conditioned U-Net velocity field for 32x32 images (conditional flow matching).

The network predicts the velocity ``v(x_t, t, c)`` of :mod:`polymodal.generate.flow`. Conditioning
follows the usual diffusion U-Net recipe (Ho et al. 2020; Dhariwal & Nichol 2021): the time ``t`` goes
through a sinusoidal embedding and an MLP, the text embedding ``c`` (the frozen MiniLM sentence vector,
384-d) through a linear layer; their sum scales and shifts every residual block's normalised activations
(FiLM / adaptive group norm). A learned "null" text vector stands for "no condition": it is used when the
condition is dropped in training and for the unconditional branch of classifier-free guidance.

A model folder holds ``config.json`` (``kind: "text2image"``) and ``model.safetensors``; ``polymodal.save`` /
``polymodal.load`` write and read it (through :func:`write_folder` / :func:`read_folder`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from polymodal.core.checkpoint import load_weights, save_weights
from polymodal.data.pixels import ImagePreprocess, Normalization
from polymodal.errors import CheckpointError, ConfigError, ShapeError
from polymodal.towers.minilm import MiniLMTextTower

__all__ = ["KIND", "FlowUNet", "GeneratorConfig", "from_pil", "image_preprocess", "read_folder", "to_pil", "write_folder"]

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


def from_pil(images: Sequence[Image.Image], size: int = 32) -> Tensor:
    """``(N, 3, size, size)`` in [-1, 1], RGB, area-downsampled (LANCZOS).

    Args:
        images: PIL images.
        size: Output side.
    """
    return image_preprocess(size)(images)


def to_pil(images: Tensor) -> list[Image.Image]:
    """Inverse of :func:`from_pil`.

    Args:
        images: ``(N, 3, S, S)`` in [-1, 1].
    """
    arr = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()  # (N, S, S, 3)
    return [Image.fromarray(a) for a in arr]


@lru_cache(maxsize=1)
def _text_tower() -> MiniLMTextTower:
    return MiniLMTextTower.pretrained()


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

    kind = KIND

    def __init__(self, config: GeneratorConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or GeneratorConfig()
        self.extra: dict[str, Any] = {}  # config.json entries besides the model's own (polymodal.save / load)
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

    # ---------------------------------------------------------------- prompts and pictures
    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        """PIL images as the model's ``(N, 3, S, S)`` tensors in [-1, 1] (training targets)."""
        return from_pil(images, size=self.config.image_size)

    def encode_prompts(self, prompts: Sequence[str]) -> Tensor:
        """The ``(N, 384)`` unit-norm MiniLM sentence vectors the model is conditioned on.

        Args:
            prompts: Texts.
        """
        if self.config.cond_dim != 384:
            raise ConfigError(f"this generator is conditioned on {self.config.cond_dim}-d vectors, not MiniLM's 384; "
                              "pass its own condition vectors to sample_images")
        return _text_tower().encode(list(prompts), normalize=True)

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        *,
        num: int = 1,
        steps: int = 20,
        guidance: float = 2.0,
        generator: torch.Generator | None = None,
    ) -> list[Image.Image]:
        """``num`` images per prompt, prompt by prompt (an unconditional model ignores the words).

        Args:
            prompts: Texts.
            num: Images per prompt.
            steps: Euler steps.
            guidance: Classifier-free guidance weight.
            generator: Random source of the starting noise.
        """
        from polymodal.generate.flow import sample_images  # (it imports this module)

        cond = self.encode_prompts(prompts).repeat_interleave(num, 0) if self.config.conditional else None
        x = sample_images(self, cond, num=num * len(prompts), steps=steps, guidance=guidance, generator=generator)
        return to_pil(x)

    # ---------------------------------------------------------------- the network
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


# The "text2image" row of polymodal.models.build.KINDS: polymodal.save / polymodal.load.


def write_folder(model: FlowUNet, path: Path) -> dict[str, Any]:
    """Write ``path/model.safetensors``; return the ``config.json`` entries.

    Args:
        model: The generator.
        path: An existing folder.
    """
    save_weights(path / "model.safetensors", model.state_dict(), metadata={"format": "polymodal"})
    return {"model": asdict(model.config)}


def read_folder(path: Path, cfg: dict[str, Any]) -> FlowUNet:
    """The generator of a folder :func:`write_folder` wrote, given its parsed ``config.json``.

    Args:
        path: The folder.
        cfg: Its ``config.json``.

    Raises:
        CheckpointError: a config that does not parse, or weights that do not fit it.
    """
    try:
        model = FlowUNet(GeneratorConfig(**cfg["model"]))
    except KeyError as e:
        raise CheckpointError(f"{path / 'config.json'}: missing {e}") from None
    except (TypeError, ConfigError) as e:
        raise CheckpointError(f"{path / 'config.json'}: {e}") from None
    try:
        model.load_state_dict(load_weights(path / "model.safetensors"))
    except RuntimeError as e:
        raise CheckpointError(f"{path / 'model.safetensors'}: weights do not fit the config ({str(e).splitlines()[0]})") from None
    return model
