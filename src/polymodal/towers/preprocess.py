"""The input contract of the EfficientNet-Lite0 tower, as an :class:`~polymodal.data.pixels.ImagePreprocess`.

This mirrors the TensorFlow EfficientNet evaluation pipeline the weights were trained for: take the
central ``size / (size + 32)`` of the shorter side (i.e. resize the shorter side to size / 0.875 = 256
for 224 and centre-crop), bicubic resampling, RGB, and the Lite normalisation (x - 127) / 128 (the Lite
models use one mean and std for all channels so the input maps to int8 cleanly).

``fit="pad"`` keeps the whole picture instead: the image is padded to a square with its own border colour
and resized to ``size``. A centre crop cuts the ends off a wide object cut out on a plain background (a
car photographed side-on came out as "can opener"); padding raised ImageNet-transfer zero-shot on the
validation photographs from 0.41 to 0.53 (docs/aligner.md). Square emoji are the same either way.

``preprocess_id`` names these choices in one string, so caches of tower outputs can key on it and be
invalidated when the pipeline changes.
"""

from __future__ import annotations

from polymodal.data.pixels import ImagePreprocess
from polymodal.errors import ConfigError

__all__ = ["CROP_PADDING", "FITS", "PREPROCESS_ID", "effnet_preprocess", "preprocess_id"]

CROP_PADDING = 32  # TF EfficientNet eval: crop size / (size + 32) of the shorter side
FITS = ("crop", "pad")


def effnet_preprocess(size: int = 224, fit: str = "crop") -> ImagePreprocess:
    """The tower's preprocessing at ``size`` pixels.

    Args:
        size: Output side length in pixels.
        fit: ``"crop"`` (the TF evaluation crop) or ``"pad"`` (the whole image, padded to a square).

    Raises:
        ConfigError: If ``fit`` is not one of :data:`FITS` or ``size`` is not positive.
    """
    if fit not in FITS:
        raise ConfigError(f"fit: must be one of {', '.join(FITS)}, got {fit!r}")
    return ImagePreprocess.effnet(size, fit)


def preprocess_id(size: int = 224, fit: str = "crop") -> str:
    """Short id of the preprocessing at ``size`` pixels, for cache keys (unchanged since the tower's first
    caches, so they stay valid).

    Args:
        size: Output side length in pixels.
        fit: ``"crop"`` (the TF evaluation crop) or ``"pad"`` (the whole image, padded to a square).
    """
    framing = f"center{size + CROP_PADDING}" if fit == "crop" else "padsquare"
    return f"effnet-lite0:{size}:bicubic:{framing}:x-127/128"


PREPROCESS_ID = preprocess_id(224)
