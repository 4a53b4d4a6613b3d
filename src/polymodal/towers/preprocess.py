"""Image preprocessing for the EfficientNet-Lite0 tower.

This mirrors the TensorFlow EfficientNet evaluation pipeline the weights were trained for: take the
central ``size / (size + 32)`` of the shorter side (i.e. resize the shorter side to size / 0.875 = 256
for 224 and centre-crop), bicubic resampling, RGB, and the Lite normalisation (x - 127) / 128 (the Lite
models use one mean and std for all channels so the input maps to int8 cleanly).

``fit="pad"`` keeps the whole picture instead: the image is padded to a square with its own border colour
and resized to ``size``. A centre crop cuts the ends off a wide object cut out on a plain background (a
car photographed side-on came out as "can opener"); padding raised ImageNet-transfer zero-shot on the
validation photographs from 0.41 to 0.53 (docs/aligner.md). Square emoji are the same either way.

``PREPROCESS_ID`` names these choices in one string, so caches of tower outputs can key on it and be
invalidated when the pipeline changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from polymodal.errors import ConfigError, DataError

CROP_PADDING = 32  # TF EfficientNet eval: crop size / (size + 32) of the shorter side
MEAN = 127.0
STD = 128.0


FITS = ("crop", "pad")


def preprocess_id(size: int = 224, fit: str = "crop") -> str:
    """Short id of the preprocessing at ``size`` pixels, for cache keys.

    Args:
        size: Output side length in pixels.
        fit: ``"crop"`` (the TF evaluation crop) or ``"pad"`` (the whole image, padded to a square).
    """
    framing = f"center{size + CROP_PADDING}" if fit == "crop" else "padsquare"
    return f"effnet-lite0:{size}:bicubic:{framing}:x-127/128"


def pad_to_square(img: Image.Image) -> Image.Image:
    """The RGB image centred on a square of its border's median colour (the background, for a cut-out)."""
    img = img.convert("RGB")
    w, h = img.size
    if w == h:
        return img
    arr = np.asarray(img)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])  # (2w + 2h, 3)
    colour = tuple(int(c) for c in np.median(border, axis=0))
    side = max(w, h)
    out = Image.new("RGB", (side, side), colour)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


PREPROCESS_ID = preprocess_id(224)


def image_to_tensor(img: Image.Image, size: int = 224, fit: str = "crop") -> torch.Tensor:
    """Turn one PIL image into the tower's input.

    Args:
        img: Any PIL image; converted to RGB (alpha is dropped, greyscale replicated).
        size: Output side length in pixels.
        fit: ``"crop"`` the TF evaluation centre crop, ``"pad"`` the whole image padded to a square.

    Returns:
        float32 tensor (3, size, size) with values (x - 127) / 128.

    Raises:
        DataError: If ``img`` is not a PIL image or has no pixels.
        ConfigError: If ``size`` is not positive.
    """
    if size < 1:
        raise ConfigError(f"size: must be >= 1, got {size}")
    if fit not in FITS:
        raise ConfigError(f"fit: must be one of {', '.join(FITS)}, got {fit!r}")
    if not isinstance(img, Image.Image):
        raise DataError(None, f"img: expected a PIL.Image.Image, got {type(img).__name__}")
    if img.width < 1 or img.height < 1:
        raise DataError(getattr(img, "filename", None) or None, f"image has no pixels ({img.size})")
    img = img.convert("RGB")
    if fit == "pad":
        img = pad_to_square(img).resize((size, size), Image.Resampling.BICUBIC)
        return _normalise(img)
    # Resize so the shorter side is size + CROP_PADDING, then cut the central size x size square.
    short = size + CROP_PADDING
    scale = short / min(img.width, img.height)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    return _normalise(img.crop((left, top, left + size, top + size)))


def _normalise(img: Image.Image) -> torch.Tensor:
    arr = np.asarray(img, dtype=np.float32)  # (size, size, 3)
    x = torch.from_numpy((arr - MEAN) / STD)
    return x.permute(2, 0, 1).contiguous()  # (3, size, size)


def images_to_tensor(images: Sequence[Image.Image], size: int = 224, fit: str = "crop") -> torch.Tensor:
    """Batched ``image_to_tensor``.

    Args:
        images: PIL images of any sizes and modes.
        size: Output side length in pixels.
        fit: ``"crop"`` or ``"pad"``, as in :func:`image_to_tensor`.

    Returns:
        float32 tensor (B, 3, size, size); (0, 3, size, size) for an empty list.
    """
    if len(images) == 0:
        if size < 1:
            raise ConfigError(f"size: must be >= 1, got {size}")
        return torch.empty(0, 3, size, size)
    return torch.stack([image_to_tensor(img, size, fit) for img in images])
