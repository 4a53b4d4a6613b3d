"""Image preprocessing for the EfficientNet-Lite0 tower.

This mirrors the TensorFlow EfficientNet evaluation pipeline the weights were trained for: take the
central ``size / (size + 32)`` of the shorter side (i.e. resize the shorter side to size / 0.875 = 256
for 224 and centre-crop), bicubic resampling, RGB, and the Lite normalisation (x - 127) / 128 (the Lite
models use one mean and std for all channels so the input maps to int8 cleanly).

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


def preprocess_id(size: int = 224) -> str:
    """Short id of the preprocessing at ``size`` pixels, for cache keys.

    Args:
        size: Output side length in pixels.
    """
    return f"effnet-lite0:{size}:bicubic:center{size + CROP_PADDING}:x-127/128"


PREPROCESS_ID = preprocess_id(224)


def image_to_tensor(img: Image.Image, size: int = 224) -> torch.Tensor:
    """Turn one PIL image into the tower's input.

    Args:
        img: Any PIL image; converted to RGB (alpha is dropped, greyscale replicated).
        size: Output side length in pixels.

    Returns:
        float32 tensor (3, size, size) with values (x - 127) / 128.

    Raises:
        DataError: If ``img`` is not a PIL image or has no pixels.
        ConfigError: If ``size`` is not positive.
    """
    if size < 1:
        raise ConfigError(f"size: must be >= 1, got {size}")
    if not isinstance(img, Image.Image):
        raise DataError(None, f"img: expected a PIL.Image.Image, got {type(img).__name__}")
    if img.width < 1 or img.height < 1:
        raise DataError(getattr(img, "filename", None) or None, f"image has no pixels ({img.size})")
    img = img.convert("RGB")
    # Resize so the shorter side is size + CROP_PADDING, then cut the central size x size square.
    short = size + CROP_PADDING
    scale = short / min(img.width, img.height)
    w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
    img = img.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.float32)  # (size, size, 3)
    x = torch.from_numpy((arr - MEAN) / STD)
    return x.permute(2, 0, 1).contiguous()  # (3, size, size)


def images_to_tensor(images: Sequence[Image.Image], size: int = 224) -> torch.Tensor:
    """Batched ``image_to_tensor``.

    Args:
        images: PIL images of any sizes and modes.
        size: Output side length in pixels.

    Returns:
        float32 tensor (B, 3, size, size); (0, 3, size, size) for an empty list.
    """
    if len(images) == 0:
        if size < 1:
            raise ConfigError(f"size: must be >= 1, got {size}")
        return torch.empty(0, 3, size, size)
    return torch.stack([image_to_tensor(img, size) for img in images])
