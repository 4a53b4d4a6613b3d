"""Figures for the run report: training curves, similarity heatmap, retrieval examples, confusion matrix.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas directly, never ``pyplot``: no
display is needed, no global figure state leaks between calls, and it works in threads and on servers.
Each function writes one PNG and returns its path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from matplotlib.patches import Rectangle
from PIL import Image

from polymodal.errors import ConfigError, ShapeError

DPI = 110
FONT = 10  # base font size in points; titles and labels are set relative to it
CORRECT = "#2e7d32"  # green: the right answer
WRONG = "#90a4ae"  # blue-grey: other retrieved items
MISSED = "#c62828"  # red: the right answer was not retrieved


# ---------------------------------------------------------------- helpers


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI, format="png", facecolor="white")
    return out


def _short(text: str, width: int) -> str:
    """One line of at most ``width`` characters, ellipsised."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _thumbnail(image: Image.Image, size: int) -> np.ndarray:
    """An RGBA array of ``image`` fit into ``size`` x ``size`` pixels, aspect ratio kept."""
    im = image.convert("RGBA")
    im.thumbnail((size, size), Image.Resampling.LANCZOS)
    return np.asarray(im)


_R1_KEY = re.compile(r"(recall@1|(^|[_/])r@?1([_/]|$))")  # "..._recall@1", "val_r1_i2t", "r@1"


def _r1_label(key: str) -> str:
    """A short legend label saying the direction of retrieval."""
    k = key.lower()
    if "t2i" in k or "image_retrieval" in k:  # CLIP_benchmark's "image retrieval" retrieves images from text
        return "text→image R@1"
    if "i2t" in k or "text_retrieval" in k:
        return "image→text R@1"
    return key


def _series(history: Sequence[dict[str, Any]], key: str) -> np.ndarray:
    """Values of ``key`` per epoch; NaN where an epoch lacks it, so lines break instead of lying."""
    return np.array([float(h[key]) if h.get(key) is not None else np.nan for h in history])


# ---------------------------------------------------------------- training curves


def plot_training_curves(history: list[dict[str, Any]], path: str | Path) -> Path:
    """Train loss, validation retrieval R@1 and learning rate per epoch, side by side.

    Args:
        history: One dict per epoch. Read keys: ``epoch`` (default: 1, 2, ...), ``train_loss``
            (or ``loss``), ``lr``, and every R@1 key (ending in ``recall@1`` such as
            ``val_image_retrieval_recall@1``, or naming ``r1`` such as ``val_r1_i2t``), each drawn as its
            own line. Missing values leave gaps.
        path: Where to write the PNG.

    Returns:
        ``path``.
    """
    if not history:
        raise ConfigError("history: expected at least one epoch")
    epochs = np.array([float(h.get("epoch", i + 1)) for i, h in enumerate(history)])
    loss_key = "train_loss" if any("train_loss" in h for h in history) else "loss"
    recall_keys = sorted({k for h in history for k in h if _R1_KEY.search(k.lower())})

    fig = _figure(13.0, 3.8)
    ax_loss, ax_r1, ax_lr = fig.subplots(1, 3)
    marker = "o" if len(history) <= 30 else None

    ax_loss.plot(epochs, _series(history, loss_key), marker=marker, color="#1565c0", lw=2)
    ax_loss.set_title("Training loss", fontsize=FONT + 2)
    ax_loss.set_ylabel("loss", fontsize=FONT)

    for key in recall_keys:
        ax_r1.plot(epochs, _series(history, key), marker=marker, lw=2, label=_r1_label(key))
    ax_r1.set_title("Validation retrieval R@1", fontsize=FONT + 2)
    ax_r1.set_ylim(0.0, 1.0)
    ax_r1.set_ylabel("recall@1", fontsize=FONT)
    if recall_keys:
        ax_r1.legend(fontsize=FONT - 1, frameon=False)

    ax_lr.plot(epochs, _series(history, "lr"), marker=marker, color="#6a1b9a", lw=2)
    ax_lr.set_title("Learning rate", fontsize=FONT + 2)
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))

    for ax, has_data in (
        (ax_loss, any(loss_key in h for h in history)),
        (ax_r1, bool(recall_keys)),
        (ax_lr, any("lr" in h for h in history)),
    ):
        ax.set_xlabel("epoch", fontsize=FONT)
        ax.tick_params(labelsize=FONT - 1)
        ax.grid(alpha=0.3)
        if not has_data:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="grey")
    return _save(fig, path)


# ---------------------------------------------------------------- similarity heatmap


def plot_similarity_heatmap(
    sim: np.ndarray,
    row_images: list[Image.Image] | None,
    col_texts: list[str],
    path: str | Path,
    *,
    title: str = "Image-text cosine similarity",
) -> Path:
    """Heatmap of image-text similarities, image thumbnails as row labels and short texts as columns.

    Cells on the diagonal of a square matrix are outlined: there the matching pairs sit when rows and
    columns come from the same examples.

    Args:
        sim: Similarities, shape (n, m): row i an image, column j a text.
        row_images: n images for the y axis, or ``None`` to number the rows.
        col_texts: m texts for the x axis (shortened to fit).
        path: Where to write the PNG.
        title: The figure title.

    Returns:
        ``path``.
    """
    s = np.asarray(sim, dtype=np.float64)
    if s.ndim != 2 or 0 in s.shape:
        raise ShapeError(f"sim: expected a non-empty (n, m) matrix, got shape {s.shape}")
    n, m = s.shape
    if len(col_texts) != m:
        raise ShapeError(f"col_texts: expected {m} texts for {m} columns, got {len(col_texts)}")
    if row_images is not None and len(row_images) != n:
        raise ShapeError(f"row_images: expected {n} images for {n} rows, got {len(row_images)}")

    cell = 0.5  # inches per cell keeps thumbnails and annotations legible
    fig = _figure(max(5.0, 2.5 + cell * m), max(4.0, 2.2 + cell * n))
    ax = fig.subplots()
    im = ax.imshow(s, cmap="viridis", aspect="auto")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02).ax.tick_params(labelsize=FONT - 1)

    if n * m <= 400:  # values only where they stay readable
        mid = (s.max() + s.min()) / 2
        for i in range(n):
            for j in range(m):
                colour = "black" if s[i, j] > mid else "white"
                ax.text(j, i, f"{s[i, j]:.2f}", ha="center", va="center", fontsize=FONT - 3, color=colour)
    if n == m:
        for i in range(n):
            ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="white", lw=1.8))

    ax.set_xticks(range(m), [_short(t, 24) for t in col_texts], rotation=55, ha="right", fontsize=FONT - 1)
    if row_images is None:
        ax.set_yticks(range(n), [str(i) for i in range(n)], fontsize=FONT - 1)
    else:
        ax.set_yticks(range(n), [""] * n)
        for i, image in enumerate(row_images):
            thumb = OffsetImage(_thumbnail(image, 28), zoom=1.0)
            # Anchored in data coords on the row, shifted left of the axes in points.
            box = AnnotationBbox(
                thumb,
                (0, i),
                xybox=(-22.0, 0.0),
                xycoords=("axes fraction", "data"),
                boxcoords="offset points",
                frameon=False,
                annotation_clip=False,
            )
            ax.add_artist(box)
        ax.set_ylabel("image", fontsize=FONT, labelpad=36)
    ax.set_xlabel("text", fontsize=FONT)
    ax.set_title(title, fontsize=FONT + 2)
    return _save(fig, path)


# ---------------------------------------------------------------- retrieval examples


def plot_retrieval_examples(
    query_images: list[Image.Image],
    topk_texts: list[list[tuple[str, float]]],
    true_texts: list[str],
    path: str | Path,
) -> Path:
    """One row per query image: the image, then its retrieved texts as score bars, the correct one green.

    A query whose true text was not retrieved gets it printed underneath in red.

    Args:
        query_images: The query images.
        topk_texts: For each image, the retrieved ``(text, score)`` pairs, best first.
        true_texts: For each image, its correct text.
        path: Where to write the PNG.

    Returns:
        ``path``.
    """
    rows = len(query_images)
    if rows == 0:
        raise ConfigError("query_images: expected at least one image")
    if len(topk_texts) != rows or len(true_texts) != rows:
        raise ShapeError(
            f"topk_texts/true_texts: expected {rows} entries each, got {len(topk_texts)} and {len(true_texts)}"
        )
    k = max(1, max(len(t) for t in topk_texts))
    row_h = max(1.5, 0.32 * k + 0.5)
    fig = _figure(9.5, row_h * rows)
    axes = fig.subplots(rows, 2, width_ratios=[1, 4], squeeze=False)
    scores = [s for t in topk_texts for _, s in t]
    lo, hi = (min(scores + [0.0]), max(scores + [1e-6])) if scores else (0.0, 1.0)

    for r, (image, retrieved, truth) in enumerate(zip(query_images, topk_texts, true_texts, strict=True)):
        ax_im, ax_txt = axes[r]
        ax_im.imshow(_thumbnail(image, 96))
        ax_im.set_axis_off()
        ax_im.set_title(f"query {r + 1}", fontsize=FONT - 1)

        labels = [f"{j + 1}. {_short(t, 60)}" for j, (t, _) in enumerate(retrieved)]
        values = [float(s) for _, s in retrieved]
        colours = [CORRECT if t == truth else WRONG for t, _ in retrieved]
        y = np.arange(len(retrieved))
        ax_txt.barh(y, values, color=colours, height=0.7)
        ax_txt.set_yticks(y, labels, fontsize=FONT - 1)
        for tick, colour in zip(ax_txt.get_yticklabels(), colours, strict=True):
            if colour == CORRECT:
                tick.set_color(CORRECT)
                tick.set_fontweight("bold")
        for yy, v in zip(y, values, strict=True):
            ax_txt.text(v, yy, f" {v:.3f}", va="center", ha="left", fontsize=FONT - 2)
        ax_txt.set_ylim(k - 0.5, -0.5)  # best at the top, same row height for every query
        ax_txt.set_xlim(min(0.0, lo), hi * 1.18 if hi > 0 else 1.0)
        ax_txt.tick_params(axis="x", labelsize=FONT - 2)
        for side in ("top", "right"):
            ax_txt.spines[side].set_visible(False)
        if truth not in [t for t, _ in retrieved]:
            ax_txt.set_title(f"true text not retrieved: {_short(truth, 70)}", fontsize=FONT - 1, color=MISSED, loc="left")
    axes[-1][1].set_xlabel("similarity", fontsize=FONT)
    return _save(fig, path)


# ---------------------------------------------------------------- confusion matrix


def plot_confusion_matrix(
    cm: np.ndarray, classnames: list[str], path: str | Path, normalize: bool = True
) -> Path:
    """Confusion matrix, true classes in rows, predicted in columns.

    Args:
        cm: Counts, shape (C, C), as in ``ClassificationMetrics.confusion_matrix``.
        classnames: C class names for the axes (shortened; hidden beyond 60 classes).
        path: Where to write the PNG.
        normalize: Divide each row by its count, so a cell is the fraction of that true class.

    Returns:
        ``path``.
    """
    counts = np.asarray(cm, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ShapeError(f"cm: expected a square (C, C) matrix, got shape {counts.shape}")
    c = counts.shape[0]
    if len(classnames) != c:
        raise ShapeError(f"classnames: expected {c} names for a {c}x{c} matrix, got {len(classnames)}")
    if normalize:
        support = counts.sum(axis=1, keepdims=True)
        values = np.divide(counts, support, out=np.zeros_like(counts), where=support > 0)
    else:
        values = counts

    side = min(16.0, max(4.5, 1.5 + 0.42 * c))
    fig = _figure(side + 1.0, side)
    ax = fig.subplots()
    im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02).ax.tick_params(labelsize=FONT - 1)
    if c <= 20:
        top = values.max() if values.size else 1.0
        for i in range(c):
            for j in range(c):
                if counts[i, j] == 0:
                    continue
                text = f"{values[i, j]:.2f}" if normalize else f"{int(counts[i, j])}"
                colour = "white" if values[i, j] > 0.6 * top else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=FONT - 2, color=colour)
    if c <= 60:
        names = [_short(n, 20) for n in classnames]
        small = FONT - 1 if c <= 25 else FONT - 3
        ax.set_xticks(range(c), names, rotation=55, ha="right", fontsize=small)
        ax.set_yticks(range(c), names, fontsize=small)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel("predicted", fontsize=FONT)
    ax.set_ylabel("true", fontsize=FONT)
    acc = np.trace(counts) / max(counts.sum(), 1.0)
    kind = "row-normalised" if normalize else "counts"
    ax.set_title(f"Confusion matrix ({kind}); accuracy {acc:.3f}", fontsize=FONT + 2)
    return _save(fig, path)


__all__ = [
    "plot_confusion_matrix",
    "plot_retrieval_examples",
    "plot_similarity_heatmap",
    "plot_training_curves",
]
