"""Shared set-up of the search tests: a small saved model and folders of labelled images."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 190, 40), "blue": (30, 50, 220)}


@functools.lru_cache(maxsize=2)
def model_dir(seed: int = 0) -> Path:
    """A saved aligner with untrained heads (64 px input, so embedding is quick), shared by the test modules.

    ``seed`` gives a differently initialised model, hence another model id.
    """
    import torch

    from polymodal.models.aligner import Aligner, AlignerConfig
    from polymodal.models.io import save_model

    root = Path(tempfile.mkdtemp(prefix="pm-search-model-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    torch.manual_seed(seed)
    save_model(Aligner(AlignerConfig(image_size=64)), root / "model")
    return root / "model"


@functools.lru_cache(maxsize=2)
def model(seed: int = 0):
    from polymodal.models.io import load

    return load(model_dir(seed))


def draw(colour: tuple[int, int, int], i: int, size: int = 48) -> Image.Image:
    """A coloured shape on white; ``i`` varies the shape so that no two images are identical."""
    im = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(im)
    if i % 2:
        d.rectangle([4 + i % 7, 6, size - 6, size - 4 - i % 5], fill=colour)
    else:
        d.ellipse([3 + i % 9, 3, size - 4, size - 3 - i % 6], fill=colour)
    return im


def make_images(root: Path, per_label: int, labels: tuple[str, ...] = ("red", "green", "blue"), start: int = 0) -> list[Path]:
    """``root/<label>/<i>.png`` for each label; returns the paths."""
    out = []
    for label in labels:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_label):
            p = root / label / f"{i:03d}.png"
            draw(COLOURS[label], i).save(p)
            out.append(p)
    return out
