"""Training augmentations of images, as PIL and torch operations.

:class:`TrainTransform` is the training path (random resized crop, flip, small rotation, optional colour
jitter, then the tower's normalisation); it turns a PIL image into a float32 ``(3, size, size)`` tensor.
Randomness comes only from the ``torch.Generator`` passed to each call, so the loader can seed every
record's augmentation from (seed, epoch, index) and get the same views whatever the number of workers.

The deterministic path, and the normalisation constants (:data:`EFFNET`, :data:`IMAGENET`, :data:`CLIP`),
are :mod:`polymodal.data.pixels`: an :class:`~polymodal.data.pixels.ImagePreprocess` is also a per-record
transform (:meth:`~polymodal.data.pixels.ImagePreprocess.one`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageEnhance

from polymodal.data.pixels import CLIP, EFFNET, IMAGENET, RESAMPLES, Normalization, check_image
from polymodal.errors import ConfigError

__all__ = [
    "CLIP",
    "EFFNET",
    "IMAGENET",
    "ColorJitter",
    "Normalization",
    "TrainTransform",
    "to_float_tensor",
]


def to_float_tensor(img: Image.Image) -> torch.Tensor:
    """RGB pixels as float32 ``(3, H, W)`` in 0..255."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # (3, H, W)


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColorJitter:
    """Random brightness, contrast and saturation factors in ``[1 - x, 1 + x]``, applied in random order.

    Hue is left out on purpose: captions name colours ("a red circle"), and a hue shift would make them false.

    Args:
        brightness: largest relative change of brightness.
        contrast: largest relative change of contrast.
        saturation: largest relative change of saturation.
    """

    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"ColorJitter.{name} must be in [0, 1), got {getattr(self, name)}")

    def __call__(self, img: Image.Image, generator: torch.Generator | None) -> Image.Image:
        ops = (
            (ImageEnhance.Brightness, self.brightness),
            (ImageEnhance.Contrast, self.contrast),
            (ImageEnhance.Color, self.saturation),
        )
        order = torch.randperm(3, generator=generator).tolist()
        factors = (
            1.0
            + (2.0 * torch.rand(3, generator=generator, dtype=torch.float64) - 1.0)
            * torch.tensor([o[1] for o in ops])
        ).tolist()
        for i in order:
            if ops[i][1] > 0:
                img = ops[i][0](img).enhance(factors[i])
        return img


@dataclass(frozen=True)
class TrainTransform:
    """Random resized crop, horizontal flip, small rotation, optional colour jitter, then normalise.

    The crop follows Szegedy et al. (2015, "Going deeper with convolutions") as torchvision's
    ``RandomResizedCrop`` implements it: area fraction ``s ~ U(scale)`` and log-uniform aspect ratio
    ``r ~ exp(U(log ratio))``, up to 10 tries to fit the image, else a central crop at the nearest allowed ratio.

    Args:
        size: output side in pixels.
        scale: range of the crop's area as a fraction of the image.
        ratio: range of the crop's aspect ratio (width / height).
        hflip: probability of a horizontal flip.
        degrees: rotation angle drawn from ``U(-degrees, degrees)``; 0 turns it off.
        jitter: colour jitter, or ``None``.
        normalization: the tower's normalisation.
        fill: RGB colour of the corners a rotation uncovers.
        resample: "nearest", "bilinear", "bicubic" or "lanczos".
    """

    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    degrees: float = 0.0
    jitter: ColorJitter | None = None
    normalization: Normalization = EFFNET
    fill: tuple[int, int, int] = field(default=(0, 0, 0))
    resample: str = "bicubic"

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ConfigError(f"TrainTransform.size must be a positive int, got {self.size!r}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ConfigError(f"TrainTransform.scale must satisfy 0 < lo <= hi <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ConfigError(f"TrainTransform.ratio must satisfy 0 < lo <= hi, got {self.ratio}")
        if not 0 <= self.hflip <= 1:
            raise ConfigError(f"TrainTransform.hflip must be a probability, got {self.hflip}")
        if not 0 <= self.degrees <= 180:
            raise ConfigError(f"TrainTransform.degrees must be in [0, 180], got {self.degrees}")
        if self.resample not in RESAMPLES:
            raise ConfigError(
                f"TrainTransform.resample must be one of {sorted(RESAMPLES)}, got {self.resample!r}"
            )

    def crop_box(
        self, width: int, height: int, generator: torch.Generator | None
    ) -> tuple[int, int, int, int]:
        """The random crop ``(left, top, w, h)`` for an image of ``width x height``."""
        area = width * height
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
            target = area * (self.scale[0] + u[0] * (self.scale[1] - self.scale[0]))
            aspect = math.exp(log_lo + u[1] * (log_hi - log_lo))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
                left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
                return left, top, w, h
        # fallback: the largest central crop whose ratio is within range
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            h, w = height, round(height * self.ratio[1])
        else:
            w, h = width, height
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, img: Image.Image, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment one image.

        Args:
            img: any PIL image (converted to RGB).
            generator: source of randomness; ``None`` uses torch's global generator.

        Returns:
            float32 ``(3, size, size)``.
        """
        img = check_image(img, "TrainTransform").convert("RGB")
        left, top, w, h = self.crop_box(img.width, img.height, generator)
        img = img.resize((self.size, self.size), RESAMPLES[self.resample], box=(left, top, left + w, top + h))
        if self.degrees > 0:
            angle = (
                2.0 * float(torch.rand((), generator=generator, dtype=torch.float64)) - 1.0
            ) * self.degrees
            img = img.rotate(angle, resample=Image.Resampling.BILINEAR, fillcolor=tuple(self.fill))
        if float(torch.rand((), generator=generator, dtype=torch.float64)) < self.hflip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.jitter is not None:
            img = self.jitter(img, generator)
        return self.normalization(to_float_tensor(img))
