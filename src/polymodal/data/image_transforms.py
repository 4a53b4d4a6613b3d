"""Per-tower image preprocessing and training augmentations, as PIL and torch operations.

:class:`EvalTransform` is the deterministic path (resize the shorter side, centre-crop, normalise);
:class:`TrainTransform` is the training path (random resized crop, flip, small rotation, optional colour
jitter, then the same normalisation). Both turn a PIL image into a float32 ``(3, size, size)`` tensor.
Randomness comes only from the ``torch.Generator`` passed to each call, so the loader can seed every
record's augmentation from (seed, epoch, index) and get the same views whatever the number of workers.

The normalisations are :class:`Normalization` constants in pixel units (0..255): EfficientNet-Lite's
``(x - 127) / 128``, ImageNet's and CLIP's per-channel mean and std.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageEnhance

from polymodal.errors import ConfigError, DataError

__all__ = [
    "CLIP",
    "EFFNET",
    "IMAGENET",
    "ColorJitter",
    "EvalTransform",
    "Normalization",
    "TrainTransform",
    "to_float_tensor",
]

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Normalization:
    """``(x - mean) / std`` per channel, with ``x``, ``mean`` and ``std`` in pixel units (0..255).

    Args:
        mean: RGB means.
        std: RGB standard deviations (> 0).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3 or not all(s > 0 for s in self.std):
            raise ConfigError(
                f"Normalization needs three means and three positive stds, got {self.mean}, {self.std}"
            )

    @classmethod
    def from_unit(cls, mean: tuple[float, float, float], std: tuple[float, float, float]) -> Normalization:
        """From statistics of pixels scaled to [0, 1] (how ImageNet and CLIP publish them)."""
        return cls(tuple(255.0 * m for m in mean), tuple(255.0 * s for s in std))  # type: ignore[arg-type]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a float ``(3, H, W)`` or ``(B, 3, H, W)`` tensor of pixel values."""
        mean = torch.tensor(self.mean, dtype=x.dtype).reshape(3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).reshape(3, 1, 1)
        return (x - mean) / std


EFFNET = Normalization((127.0, 127.0, 127.0), (128.0, 128.0, 128.0))  # EfficientNet-Lite: one mean for int8
IMAGENET = Normalization.from_unit((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP = Normalization.from_unit((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))


def to_float_tensor(img: Image.Image) -> torch.Tensor:
    """RGB pixels as float32 ``(3, H, W)`` in 0..255."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # (3, H, W)


def _check_image(img: object, owner: str) -> Image.Image:
    if not isinstance(img, Image.Image):
        raise DataError(None, f"{owner}: expected a PIL.Image.Image, got {type(img).__name__}")
    if img.width < 1 or img.height < 1:
        raise DataError(getattr(img, "filename", None) or None, f"{owner}: image has no pixels ({img.size})")
    return img.convert("RGB")


def _check_size(size: int, owner: str) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ConfigError(f"{owner}.size must be a positive int, got {size!r}")


# ---------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalTransform:
    """Resize the shorter side to ``resize``, centre-crop ``size x size``, normalise.

    Args:
        size: output side in pixels.
        resize: shorter side before cropping; ``None`` means ``size`` (crop the central square).
        normalization: the tower's normalisation.
        resample: "nearest", "bilinear", "bicubic" or "lanczos".
        round_long_side: round the longer side after resizing (as :mod:`polymodal.towers.preprocess`
            does) instead of truncating it (torchvision's ``Resize`` and Hugging Face image processors).
    """

    size: int = 224
    resize: int | None = None
    normalization: Normalization = EFFNET
    resample: str = "bicubic"
    round_long_side: bool = False

    def __post_init__(self) -> None:
        _check_size(self.size, "EvalTransform")
        if self.resize is not None and (not isinstance(self.resize, int) or self.resize < self.size):
            raise ConfigError(f"EvalTransform.resize must be an int >= size={self.size}, got {self.resize!r}")
        if self.resample not in _RESAMPLE:
            raise ConfigError(
                f"EvalTransform.resample must be one of {sorted(_RESAMPLE)}, got {self.resample!r}"
            )

    @classmethod
    def effnet(cls, size: int = 224) -> EvalTransform:
        """The TF EfficientNet eval pipeline: shorter side to ``size + 32``, centre crop, ``(x - 127) / 128``.

        Equal to :func:`polymodal.towers.preprocess.image_to_tensor`.
        """
        return cls(
            size=size, resize=size + 32, normalization=EFFNET, resample="bicubic", round_long_side=True
        )

    @classmethod
    def clip(cls, size: int = 224) -> EvalTransform:
        """OpenAI CLIP's: shorter side to ``size`` (bicubic), centre crop, CLIP mean and std.

        Equal to ``transformers.CLIPImageProcessor`` with ``shortest_edge = crop = size`` (PIL backend).
        """
        return cls(size=size, resize=size, normalization=CLIP, resample="bicubic")

    def _long_side(self, exact: float) -> int:
        return max(self.resize or self.size, round(exact) if self.round_long_side else int(exact))

    def __call__(self, img: Image.Image, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Preprocess one image.

        Args:
            img: any PIL image (converted to RGB).
            generator: ignored (the same signature as :class:`TrainTransform`).

        Returns:
            float32 ``(3, size, size)``.
        """
        img = _check_image(img, "EvalTransform")
        short = self.resize or self.size
        if img.width <= img.height:
            w, h = short, self._long_side(img.height * short / img.width)
        else:
            w, h = self._long_side(img.width * short / img.height), short
        if (w, h) != img.size:
            img = img.resize((w, h), _RESAMPLE[self.resample])
        left, top = (w - self.size) // 2, (h - self.size) // 2
        img = img.crop((left, top, left + self.size, top + self.size))
        return self.normalization(to_float_tensor(img))


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
        _check_size(self.size, "TrainTransform")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ConfigError(f"TrainTransform.scale must satisfy 0 < lo <= hi <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ConfigError(f"TrainTransform.ratio must satisfy 0 < lo <= hi, got {self.ratio}")
        if not 0 <= self.hflip <= 1:
            raise ConfigError(f"TrainTransform.hflip must be a probability, got {self.hflip}")
        if not 0 <= self.degrees <= 180:
            raise ConfigError(f"TrainTransform.degrees must be in [0, 180], got {self.degrees}")
        if self.resample not in _RESAMPLE:
            raise ConfigError(
                f"TrainTransform.resample must be one of {sorted(_RESAMPLE)}, got {self.resample!r}"
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
        img = _check_image(img, "TrainTransform")
        left, top, w, h = self.crop_box(img.width, img.height, generator)
        img = img.resize((self.size, self.size), _RESAMPLE[self.resample], box=(left, top, left + w, top + h))
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
