"""Embedding files and texts with any polymodal model, in input order, in batches.

An image file that cannot be read is skipped and named, as ``train`` and ``index build`` do; the result
says which input each row of the array is (:class:`Embeddings`), and ``polymodal embed`` writes that
list beside the array (:func:`save_embeddings`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from polymodal.data.images import load_images
from polymodal.data.record import BadRecord
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


@dataclass
class Embeddings:
    """Embeddings of inputs, which input each row is, and the inputs that were skipped.

    Attributes:
        vectors: (N, D) float32, L2-normalised, in input order.
        rows: the input of each row: an image file's path, or ``"<texts file>:<line>"``.
        bad: the inputs that were skipped (unreadable image files), each with its problem.
    """

    vectors: np.ndarray
    rows: list[str] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)


def save_embeddings(npy: Path, emb: Embeddings) -> Path:
    """Write ``npy`` (the array) and beside it ``<name>.rows.json``: ``{"rows": [...], "skipped": [...]}``.

    Returns:
        The path of the row list.
    """
    from polymodal.core.checkpoint import atomic_write_json

    np.save(npy, emb.vectors)
    rows = npy.with_suffix(".rows.json")
    atomic_write_json(rows, {"array": npy.name, "rows": emb.rows, "skipped": [b.to_dict() for b in emb.bad]})
    return rows


@torch.no_grad()
def embed_images(model, paths: Sequence[Path], *, batch_size: int = 64, progress: bool = True,
                 strict: bool = False) -> Embeddings:
    """Embed image files in batches; an unreadable one is skipped and reported (``strict``: an error)."""
    model.eval()
    out = Embeddings(np.zeros((0, model.config.embed_dim), np.float32))
    chunks = [out.vectors]
    for i in tqdm(range(0, len(paths), batch_size), desc="embed images", disable=not progress, leave=False):
        batch = list(paths[i : i + batch_size])
        loaded = load_images(batch, strict=strict)
        out.bad += loaded.bad
        out.rows += [str(batch[k]) for k in loaded.kept]
        if loaded.images:
            chunks.append(model.encode_image(loaded.images, normalize=True).float().numpy())
    out.vectors = np.concatenate(chunks).astype(np.float32)
    return out


@torch.no_grad()
def embed_texts(model, texts: Sequence[str], *, batch_size: int = 256, progress: bool = True) -> np.ndarray:
    model.eval()
    chunks = []
    for i in tqdm(range(0, len(texts), batch_size), desc="embed texts", disable=not progress, leave=False):
        chunks.append(model.encode_text(list(texts[i : i + batch_size]), normalize=True).float().numpy())
    dim = model.config.embed_dim
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, dim), np.float32)
