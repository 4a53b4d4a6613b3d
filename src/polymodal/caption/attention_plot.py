"""Figure of where each word of a generated caption attended in the image (cross-attention maps).

For each generated word, the encoder-decoder attention over the ``h x w`` grid cells (averaged over heads
and layers, as in Xu et al. 2015's "attend" figures) is upsampled to the image size and laid over it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from polymodal.caption.model import Captioner
from polymodal.errors import ShapeError

__all__ = ["plot_cross_attention", "word_attention"]


@torch.no_grad()
def word_attention(model: Captioner, grid: Tensor, ids: list[int]) -> Tensor:
    """Per generated word, its attention over the grid, mean over layers and heads.

    Args:
        model: The captioner.
        grid: ``(1, C, h, w)``: one image.
        ids: The generated ids (without ``<bos>``/``<eos>``).

    Returns:
        ``(len(ids), h, w)``; each map sums to 1.
    """
    if grid.dim() != 4 or grid.shape[0] != 1:
        raise ShapeError(f"grid: expected (1, C, h, w), got {tuple(grid.shape)}")
    h, w = grid.shape[2:]
    prefix = torch.tensor([[model.tokenizer.BOS, *ids]])  # (1, T+1)
    maps = model.cross_attention_maps(grid, prefix)  # (L, 1, H, T+1, S)
    # Position t (reading the prefix up to word t-1) is the one that *produced* word t: use rows 0..T-1.
    per_word = maps.mean(dim=(0, 2))[0, : len(ids)]  # (T, S)
    return per_word.reshape(len(ids), h, w)


def plot_cross_attention(model: Captioner, grid: Tensor, image: Image.Image, ids: list[int], path: str | Path) -> Path:
    """Save a row of panels: the image, then one panel per word with its attention heat map.

    Args:
        model: The captioner.
        grid: ``(1, C, h, w)`` grid of ``image``.
        image: The image shown.
        ids: Generated ids (without ``<bos>``/``<eos>``).
        path: PNG to write.
    """
    maps = word_attention(model, grid, ids).numpy()
    words = [model.tokenizer.itos[i] for i in ids]
    size = 160
    base = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
    fig = Figure(figsize=(1.6 * (len(words) + 1), 1.9), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(words) + 1, squeeze=False)[0]
    axes[0].imshow(base)
    axes[0].set_title("image", fontsize=9)
    for ax, word, m in zip(axes[1:], words, maps, strict=True):
        heat = np.asarray(Image.fromarray((255 * m / max(m.max(), 1e-8)).astype(np.uint8)).resize(
            (size, size), Image.Resampling.BILINEAR))
        ax.imshow(base)
        ax.imshow(heat, cmap="magma", alpha=0.55, vmin=0, vmax=255)
        ax.set_title(word, fontsize=9)
    for ax in axes:
        ax.axis("off")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", facecolor="white")
    return out
