"""A report figure: where a CLIP's image tower looks, as attention over its image patches.

For a few images, one row each: the image as the model sees it, the pooled token's attention over the
patches in the last layer, and attention rollout through all layers (Abnar & Zuidema 2020), each
upsampled onto the image. Built on ``matplotlib.figure.Figure`` with the Agg canvas (no pyplot, no display),
like :mod:`polymodal.eval.plots`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from polymodal.errors import ConfigError
from polymodal.models.clip import CLIP
from polymodal.towers.vit import patch_grid_attention

DPI = 110


def _overlay(ax: object, image: np.ndarray, heat: np.ndarray, title: str) -> None:
    size = image.shape[0]
    ax.imshow(image)  # type: ignore[attr-defined]
    # Nearest-neighbour blow-up of the patch grid: each patch keeps its own square, as the model cut it.
    ax.imshow(heat, cmap="inferno", alpha=0.55, extent=(0, size, size, 0), interpolation="nearest")  # type: ignore[attr-defined]
    ax.set_title(title, fontsize=8)  # type: ignore[attr-defined]
    ax.axis("off")  # type: ignore[attr-defined]


@torch.no_grad()
def plot_attention_maps(
    model: CLIP,
    images: Sequence[Image.Image],
    path: str | Path,
    *,
    captions: Sequence[str] | None = None,
    display_size: int = 128,
) -> Path:
    """Write a PNG of ``model``'s patch attention for each image and return its path.

    Args:
        model: A CLIP (ViT image tower).
        images: A few PIL images (one row each).
        path: The PNG to write.
        captions: Optional caption per image, shown in the row's first panel.
        display_size: Side in pixels at which each image is shown (the model sees its own ``image_size``).
    """
    if not images:
        raise ConfigError("plot_attention_maps: no images")
    if captions is not None and len(captions) != len(images):
        raise ConfigError(f"plot_attention_maps: {len(images)} images but {len(captions)} captions")
    was_training = model.training
    model.eval()
    maps = model.attention_maps(list(images))  # (L, B, H, T, T)
    model.train(was_training)
    cfg = model.config.vision
    has_cls = cfg.pool == "cls"
    last = patch_grid_attention(maps, has_cls=has_cls, grid=cfg.grid).numpy()  # (B, g, g)
    rollout = patch_grid_attention(maps, has_cls=has_cls, grid=cfg.grid, rollout=True).numpy()
    who = "class token" if has_cls else "mean over patches"

    fig = Figure(figsize=(7.5, 2.5 * len(images)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(images), 3, squeeze=False)
    shown_prep = model.image_preprocess.with_size(display_size)
    for i, img in enumerate(images):
        # (S, S, 3) in [0, 1]: the same colour, resize and crop as the model's input, at the display size
        shown = shown_prep.pixels(img).astype(np.float32) / 255.0
        title = captions[i][:40] if captions is not None else f"image {i + 1}"
        axes[i][0].imshow(shown)
        axes[i][0].set_title(title, fontsize=8)
        axes[i][0].axis("off")
        _overlay(axes[i][1], shown, last[i], f"last layer ({who})")
        _overlay(axes[i][2], shown, rollout[i], "attention rollout")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, format="png", facecolor="white")
    return out


__all__ = ["plot_attention_maps"]
