"""Embedding files and texts with any polymodal model, in input order, in batches."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from polymodal.data.images import load_image
from polymodal.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


def image_paths(items: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their image files in sorted order."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.exists():
            out.append(p)
        else:
            raise DataError(p, "no such file")
    return out


@torch.no_grad()
def embed_images(model, paths: Sequence[Path], *, batch_size: int = 64, progress: bool = True) -> np.ndarray:
    """(N, D) float32, L2-normalised; a file that is not a readable image is an error naming it."""
    model.eval()
    chunks = []
    for i in tqdm(range(0, len(paths), batch_size), desc="embed images", disable=not progress, leave=False):
        imgs = [load_image(p) for p in paths[i : i + batch_size]]
        chunks.append(model.encode_image(imgs, normalize=True).float().numpy())
    dim = model.config.embed_dim
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, dim), np.float32)


@torch.no_grad()
def embed_texts(model, texts: Sequence[str], *, batch_size: int = 256, progress: bool = True) -> np.ndarray:
    model.eval()
    chunks = []
    for i in tqdm(range(0, len(texts), batch_size), desc="embed texts", disable=not progress, leave=False):
        chunks.append(model.encode_text(list(texts[i : i + batch_size]), normalize=True).float().numpy())
    dim = model.config.embed_dim
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, dim), np.float32)
