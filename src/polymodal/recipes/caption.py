"""Runs of the captioner: ``polymodal caption train|run``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polymodal.data.sources import require_source
from polymodal.recipes.common import Log, history_line, say

if TYPE_CHECKING:
    from torch import Tensor

GRID_CHUNK = 256  # images per tower call while extracting grids (one progress step each)


@dataclass
class CaptionTrained:
    out: Path
    pairs: int
    history: list[dict[str, float]]


def _grids(images: Any, image_size: int, *, progress: bool) -> Tensor:
    """Frozen-tower feature grids of ``images``, in chunks so that a bar can show the slow part."""
    import torch
    from tqdm import tqdm

    from polymodal.caption import extract_grids

    chunks = range(0, len(images), GRID_CHUNK)
    bar = tqdm(chunks, desc="image grids", unit="chunk", disable=not progress, leave=False)
    return torch.cat([extract_grids([images[i] for i in range(s, min(s + GRID_CHUNK, len(images)))],
                                    image_size=image_size) for s in bar])


def train(data: str, out: str, *, epochs: int = 60, dim: int = 192, depth: int = 2, image_size: int = 224,
          label_smoothing: float = 0.1, seed: int = 0, resume: bool = False, progress: bool = True,
          log: Log | None = None) -> CaptionTrained:
    """Train a captioner (frozen EfficientNet grid, transformer decoder) on the train split of ``data``'s
    image-text pairs and save it to ``out``. ``out/checkpoint`` is rewritten after every epoch; ``resume``
    continues from it."""
    from polymodal.caption.train import CaptionTrainConfig, train_captioner
    from polymodal.data.pairs import load_pairs
    from polymodal.models.io import save

    require_source(data, command="caption train", needs="image-text pairs", kinds=("manifest",))
    pairs = load_pairs(data, "train")
    grids = _grids(pairs.images, image_size, progress=progress)
    cfg = CaptionTrainConfig(epochs=epochs, label_smoothing=label_smoothing, seed=seed,
                             model={"dim": dim, "depth": depth, "image_size": image_size})
    say(log, f"training the captioner: {len(pairs)} pairs, {epochs} epochs")
    result = train_captioner(grids, pairs.texts, cfg, on_history=history_line(log, epochs),
                             checkpoint=Path(out) / "checkpoint", resume=resume)
    save(result.model, out, extra={"history": result.history, "data": data})
    return CaptionTrained(Path(out), len(pairs), result.history)


@dataclass
class Caption:
    image: str
    caption: str
    score: float


def run(model_dir: str, images: list[str], *, beam: int = 1) -> list[Caption]:
    """Caption image files with a saved captioner (beam 1: greedy, best on val CIDEr-D for trained models)."""
    from polymodal.caption.decode import beam_search
    from polymodal.caption.model import Captioner
    from polymodal.data.images import load_image
    from polymodal.models.io import load

    model = load(model_dir, Captioner, what="caption run")
    grids = _grids([load_image(Path(p)) for p in images], model.config.image_size, progress=False)
    out = beam_search(model, grids, beam_size=beam, no_repeat_ngram_size=2)
    return [Caption(p, t, float(s)) for p, t, s in zip(images, out.texts, out.scores, strict=True)]
