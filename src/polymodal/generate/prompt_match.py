"""Does a generated image show what a colour-and-shape prompt asks for ("a green heart")?

A check that shares nothing with the generator (no text encoder, no learned weights): the image's
*dominant colour* is the named hue bin holding most of its coloured pixels (saturation above 0.15, value
above 0.3, so the white background and the dark outlines do not count), and its *shape* is the template
(circle, square, heart) whose mask best overlaps (IoU) the coloured pixels cropped to their bounding box and
resized to 16x16. The hue bins are set on OpenMoji's palette (its green is a yellowish 71 degrees, its
purple a pale 270); on the 32x32 OpenMoji emoji of every colour-shape pair below the check is right 18 of 18
times (``tests/test_generate.py``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from polymodal.errors import ConfigError

__all__ = ["COLOURS", "SHAPES", "PromptMatch", "colour_variants", "dominant_colour", "parse_prompt", "prompt_match",
           "recolour", "shape_of"]

# Hue bins in degrees, [start, end); red wraps around 0.
COLOURS: dict[str, tuple[float, float]] = {
    "red": (345.0, 12.0),
    "orange": (12.0, 40.0),
    "yellow": (40.0, 63.0),
    "green": (63.0, 170.0),
    "blue": (170.0, 255.0),
    "purple": (255.0, 345.0),
}
# OpenMoji's fill of each colour as (hue degrees, saturation, value), read off its hearts.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.81, 0.82),
    "orange": (24.0, 0.85, 0.89),
    "yellow": (54.0, 0.83, 0.99),
    "green": (71.0, 0.75, 0.80),
    "blue": (216.0, 0.81, 0.63),
    "purple": (270.0, 0.39, 0.67),
}
SHAPES = ("circle", "square", "heart")
_SIDE = 16
_PROMPT = re.compile(rf"(?:an? )?({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})")


def parse_prompt(prompt: str) -> tuple[str, str]:
    """``(colour, shape)`` of a prompt like "a green heart".

    Raises:
        ConfigError: the prompt is not "[a] <colour> <shape>" with a known colour and shape.
    """
    m = _PROMPT.fullmatch(prompt.strip().lower())
    if m is None:
        raise ConfigError(f"prompt {prompt!r}: expected '[a] COLOUR SHAPE' with COLOUR in {', '.join(COLOURS)} "
                          f"and SHAPE in {', '.join(SHAPES)}")
    return m.group(1), m.group(2)


def _coloured(image: Image.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image's ``(H, W, 3)`` HSV in [0, 1], the hue in degrees and the mask of coloured pixels."""
    hsv = np.asarray(image.convert("RGB").convert("HSV"), dtype=np.float64) / 255.0
    return hsv, hsv[..., 0] * 360.0, (hsv[..., 1] > 0.15) & (hsv[..., 2] > 0.3)


def _in_bin(hue: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (hue >= lo) & (hue < hi) if lo < hi else (hue >= lo) | (hue < hi)


def dominant_colour(image: Image.Image) -> str | None:
    """The colour name whose hue bin holds most coloured pixels; ``None`` when nothing is coloured."""
    _, hue, mask = _coloured(image)
    if not mask.any():
        return None
    counts = {name: int(_in_bin(hue[mask], lo, hi).sum()) for name, (lo, hi) in COLOURS.items()}
    return max(counts, key=counts.__getitem__)


@lru_cache(maxsize=1)
def _templates() -> dict[str, np.ndarray]:
    """Boolean ``_SIDE x _SIDE`` masks of each shape filling the square."""
    big = 8 * _SIDE
    out = {}
    for name in SHAPES:
        im = Image.new("L", (big, big), 0)
        draw = ImageDraw.Draw(im)
        if name == "circle":
            draw.ellipse((0, 0, big - 1, big - 1), fill=255)
        elif name == "square":
            draw.rectangle((0, 0, big - 1, big - 1), fill=255)
        else:  # the classic heart curve x = 16 sin^3 t, y = 13 cos t - 5 cos 2t - 2 cos 3t - cos 4t
            ts = [2 * math.pi * i / 400 for i in range(400)]
            xs = [16 * math.sin(t) ** 3 for t in ts]
            ys = [-(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)) for t in ts]
            x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
            draw.polygon([((x - x0) / (x1 - x0) * (big - 1), (y - y0) / (y1 - y0) * (big - 1))
                          for x, y in zip(xs, ys, strict=True)], fill=255)
        out[name] = np.asarray(im.resize((_SIDE, _SIDE), Image.Resampling.BOX)) >= 128
    return out


def shape_of(image: Image.Image) -> str | None:
    """The template shape best overlapping the coloured pixels; ``None`` when fewer than 4 are coloured."""
    *_, mask = _coloured(image)
    if mask.sum() < 4:
        return None
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    crop = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    small = np.asarray(Image.fromarray(crop.astype(np.uint8) * 255).resize((_SIDE, _SIDE), Image.Resampling.BOX)) >= 128
    iou = {name: (small & t).sum() / max((small | t).sum(), 1) for name, t in _templates().items()}
    return max(iou, key=iou.__getitem__)


def recolour(image: Image.Image, source: str, target: str) -> Image.Image:
    """``image`` with its ``source``-coloured pixels repainted in ``target`` (OpenMoji's palette).

    Each pixel of the source hue bin gets the target hue, and its saturation and value scaled by the ratio of
    the two palette colours, so a flat fill becomes the target fill and its anti-aliased edges stay blended.
    """
    hsv, hue, mask = _coloured(image)
    sel = mask & _in_bin(hue, *COLOURS[source])
    (_, s0, v0), (h1, s1, v1) = PALETTE[source], PALETTE[target]
    out = hsv.copy()
    out[..., 0][sel] = h1 / 360.0
    out[..., 1][sel] = np.clip(hsv[..., 1][sel] * s1 / s0, 0.0, 1.0)
    out[..., 2][sel] = np.clip(hsv[..., 2][sel] * v1 / v0, 0.0, 1.0)
    return Image.fromarray((out * 255.0).round().astype(np.uint8), mode="HSV").convert("RGB")


def colour_variants(texts: Sequence[str], images: Sequence[Image.Image],
                    exclude: Collection[str] = ()) -> tuple[list[str], list[Image.Image]]:
    """Recoloured copies of single-colour training pairs: "<colour> <thing>" in every other colour.

    A pair qualifies when its caption starts with a colour of :data:`COLOURS` and that colour is the
    image's dominant one; each other colour gives "<other> <thing>" with the image :func:`recolour`-ed,
    unless that caption is already a real pair or is in ``exclude`` (pass the validation and test captions:
    a held-out emoji must not be drawn into training by recolouring its siblings).

    Args:
        texts: Training captions.
        images: Their images.
        exclude: Captions never to produce.
    """
    real, skip = set(texts), set(exclude)
    out_t: list[str] = []
    out_i: list[Image.Image] = []
    for text, image in zip(texts, images, strict=True):
        words = text.split(" ", 1)
        if len(words) != 2 or words[0] not in COLOURS or dominant_colour(image) != words[0]:
            continue
        for other in COLOURS:
            caption = f"{other} {words[1]}"
            if other != words[0] and caption not in real and caption not in skip:
                out_t.append(caption)
                out_i.append(recolour(image, words[0], other))
    return out_t, out_i


@dataclass(frozen=True)
class PromptMatch:
    """Fractions of images whose colour, shape and both match their prompt, and the per-image verdicts.

    Args:
        colour: Fraction with the prompt's dominant colour.
        shape: Fraction with the prompt's shape.
        both: Fraction with both (the prompt-match rate).
        found: ``(colour, shape)`` the check saw in each image.
    """

    colour: float
    shape: float
    both: float
    found: list[tuple[str | None, str | None]]


def prompt_match(images: Sequence[Image.Image], prompts: Sequence[str]) -> PromptMatch:
    """Check each image against its colour-and-shape prompt.

    Args:
        images: Generated (or real) images.
        prompts: One "[a] <colour> <shape>" prompt per image.
    """
    if len(images) != len(prompts) or not images:
        raise ConfigError(f"prompt_match: need as many prompts as images (>= 1), got {len(prompts)} and {len(images)}")
    wanted = [parse_prompt(p) for p in prompts]
    found = [(dominant_colour(im), shape_of(im)) for im in images]
    colour = [f[0] == w[0] for f, w in zip(found, wanted, strict=True)]
    shape = [f[1] == w[1] for f, w in zip(found, wanted, strict=True)]
    n = len(images)
    return PromptMatch(sum(colour) / n, sum(shape) / n, sum(c and s for c, s in zip(colour, shape, strict=True)) / n, found)
