"""Deterministic image augmentations for cached training views.

A view is a function of (image content, view index), so the trunk features of view v can be cached and
reused across runs. Only geometric changes: colour is part of what emoji captions describe ("red heart"),
so no hue or saturation jitter. View 0 is the clean image.
"""

from __future__ import annotations

import hashlib
import math
import random

from PIL import Image


def augmented_view(img: Image.Image, view: int, *, key: str, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Zoom into 75-100 % of the area, rotate ±12°, shift ±6 %, mirror 20 % of views; one affine warp."""
    if view == 0:
        return img
    seed = int(hashlib.sha256(f"{key}:{view}".encode()).hexdigest()[:12], 16)
    rng = random.Random(seed)
    w, h = img.size
    s = rng.uniform(0.75, 1.0) ** 0.5  # side of the sampled region relative to the image
    theta = math.radians(rng.uniform(-12, 12))
    tx, ty = rng.uniform(-0.06, 0.06) * w, rng.uniform(-0.06, 0.06) * h
    cx, cy = w / 2, h / 2
    # PIL's affine maps output to input coordinates: in = C + s·R(θ)·(out − C) + t
    a, b = s * math.cos(theta), -s * math.sin(theta)
    d, e = s * math.sin(theta), s * math.cos(theta)
    coeffs = (a, b, cx + tx - (a * cx + b * cy), d, e, cy + ty - (d * cx + e * cy))
    out = img.transform((w, h), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BICUBIC, fillcolor=background)
    if rng.random() < 0.2:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out
