"""Runs of the dual encoders (aligner, CLIP; ``polymodal dual train|eval|zeroshot|embed`` and ``demo``).

Each function checks its inputs (the data's kind, the model folder's kind) before any heavy work, does
the work, and returns what the command prints; under torchrun, only rank 0 gets a result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from polymodal.data.sources import require_source
from polymodal.errors import ConfigError, DataError
from polymodal.recipes.common import require_model
from polymodal.recipes.presets import (
    DEMO_ALSO_TRAIN_ON,
    DEMO_DATA,
    DEMO_EVAL_SETS,
    DEMO_MODEL_ARGS,
    DEMO_TRAIN_ARGS,
)

if TYPE_CHECKING:
    from polymodal.data.pairs import SplitSizes
    from polymodal.embed import Embeddings
    from polymodal.models.protocol import DualEncoder
    from polymodal.recipes.aligner import RunResult

PAIRS_KINDS = ("manifest",)


def _check_pairs(data: str, command: str) -> None:
    require_source(data, command=command, needs="image-text pairs", kinds=PAIRS_KINDS)


def train(
    data: str,
    out: str,
    *,
    preset: str | None = None,
    model_args: dict[str, Any] | None = None,
    train_args: dict[str, Any] | None = None,
    transfer: bool = True,
    resume: bool = False,
    strict: bool = False,
    cache: bool = True,
    progress: bool = True,
) -> RunResult | None:
    """Train an aligner (the demo's model with ``model_args`` changed) or a preset model on ``data``.

    The ImageNet transfer is attached only to the aligner with a locked image tower. Returns ``None`` on
    every process but rank 0 under torchrun.
    """
    from polymodal.models.build import load_preset
    from polymodal.recipes.presets import DEMO_TRANSFER
    from polymodal.train.fit import TrainConfig

    _check_pairs(data, "train")
    model_args = {**DEMO_MODEL_ARGS, **(model_args or {})}
    if preset:
        model_cfg: Any = load_preset(preset)
    else:
        from polymodal.models.aligner import AlignerConfig

        model_cfg = AlignerConfig(**model_args)
    train_cfg = TrainConfig(**{**DEMO_TRAIN_ARGS, **(train_args or {})})
    use_transfer = transfer and not preset and model_args["unlock_image"] == 0
    return _run(data, out, model_cfg, train_cfg, resume=resume, strict=strict, cache=cache, progress=progress,
                transfer=DEMO_TRANSFER if use_transfer else None)


def demo(out: str, *, resume: bool = False, seed: int = 0, progress: bool = True) -> RunResult | None:
    """The main job: the default model trained on OpenMoji (with the Twemoji and Noto drawings of its
    training emoji), evaluated once on OpenMoji's test split and on the photographs and other styles.
    ``seed`` draws initialisation, shuffling and views; the documented figures are seed 0."""
    from polymodal.recipes.presets import DEMO_MODEL, DEMO_TRAIN, DEMO_TRANSFER

    train = dataclasses.replace(DEMO_TRAIN, seed=seed)
    return _run(DEMO_DATA, out, DEMO_MODEL, train, resume=resume, strict=False, cache=True, progress=progress,
                also_train_on=DEMO_ALSO_TRAIN_ON, transfer=DEMO_TRANSFER, eval_sets=DEMO_EVAL_SETS)


def _run(data: str, out: str, model_cfg: Any, train_cfg: Any, *, resume: bool, strict: bool, cache: bool,
         progress: bool, **recipe: Any) -> RunResult | None:
    from polymodal.core.distributed import distributed_session, is_main
    from polymodal.recipes.aligner import train_aligner

    # Under torchrun: one process group for the run; rank 0 alone prints and writes the run folder.
    with distributed_session():
        r = train_aligner(data, out, model_config=model_cfg, train_config=train_cfg, resume=resume, strict=strict,
                          cache_dir="default" if cache else None, progress=progress, **recipe)
        main_process = is_main()
    return r if main_process else None


@dataclass
class Evaluation:
    """What :func:`evaluate` measured, and on which rows."""

    data: str
    split: str
    size: int
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    sizes: SplitSizes | None  # a manifest's rows per split (None for a built-in set)
    bad: list[Any] = field(default_factory=list)
    note: str | None = None  # rows the model trained on, when the split asked for holds them

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "size": self.size, "metrics": self.metrics, "baselines": self.baselines,
                "split_sizes": None if self.sizes is None else self.sizes.sizes,
                "split_by": None if self.sizes is None else ("column" if self.sizes.by_column else "hash"),
                "bad_records": [b.to_dict() for b in self.bad]}


def rows_of(split: str) -> str:
    return "every row" if split == "all" else f"the {split} split"


def evaluate(model_dir: str, data: str, split: str = "test", *, progress: bool = True) -> Evaluation:
    """Retrieval R@k, zero-shot per label kind and (on ``test``) the linear probe of a saved dual encoder."""
    from polymodal.data.pairs import load_pairs, split_sizes
    from polymodal.data.sources import parse_source
    from polymodal.eval.aligner_eval import evaluate_aligner
    from polymodal.models.io import load
    from polymodal.train.feature_cache import FeatureCache, default_cache_dir

    cfg = require_model(model_dir, command="eval")
    source = parse_source(data)
    _check_pairs(data, "eval")
    refit = bool(cfg.get("train", {}).get("refit"))
    note = None
    if split in ("train", "all") or (split == "val" and refit):
        trained_on = "the train and val splits" if refit else "the train split"
        note = f"{model_dir} was trained on {trained_on}; its figures on {rows_of(split)} are not held out"
    model = cast("DualEncoder", load(model_dir))  # require_model checked it is an image-text model
    sizes = split_sizes(data) if source.kind == "manifest" else None
    cache = FeatureCache(default_cache_dir())
    test = load_pairs(data, None if split == "all" else split)
    train_ps = load_pairs(data, "train") if split == "test" else None
    val_ps = load_pairs(data, "val") if split == "test" else None
    if train_ps is not None and len(train_ps) == 0:  # an evaluation-only set (photos): no probe, no majority
        train_ps = val_ps = None
    ev = evaluate_aligner(model, test, cache=cache, train=train_ps, val=val_ps,
                          support=getattr(model, "support", None), progress=progress)
    return Evaluation(data, split, len(test), ev.metrics, ev.baselines, sizes, list(test.bad), note)


@dataclass
class Zeroshot:
    """Per readable image its labels with scores, best first; the unreadable images."""

    rows: list[tuple[str, list[tuple[str, float]]]]
    bad: list[Any]

    def to_list(self) -> list[dict[str, Any]]:
        return [{"image": p, "labels": [{"label": lb, "score": s} for lb, s in r]} for p, r in self.rows]


def zeroshot(model_dir: str, labels: list[str], images: list[str], *, support: bool = True,
             strict: bool = False) -> Zeroshot:
    """Zero-shot labels for images from label texts; an unreadable image is skipped and listed."""
    from polymodal.data.images import load_images
    from polymodal.embed import decode_size
    from polymodal.models.io import load

    require_model(model_dir, command="zeroshot")
    if not labels:
        raise ConfigError("zeroshot needs at least one label text")
    model = load(model_dir)
    # Decoded as `embed` and `index build` decode files for this model (JPEGs reduced to its input size).
    loaded = load_images(images, strict=strict, min_size=decode_size(model))
    if not loaded.images:
        raise DataError(images[0] if len(images) == 1 else None,
                        "no readable image: " + "; ".join(str(b) for b in loaded.bad[:3]))
    results = model.zeroshot(loaded.images, labels, support=support)
    return Zeroshot([(images[i], r) for i, r in zip(loaded.kept, results)], list(loaded.bad))


@dataclass
class Embedded:
    """The written array: its file, shape and the rows file beside it; the unreadable images."""

    npy: Path
    shape: tuple[int, int]
    rows: Path
    bad: list[Any]


def embed(model_dir: str, out: str, *, images: list[str] | None = None, texts: str | None = None,
          strict: bool = False, progress: bool = True) -> Embedded | None:
    """Embed image files (or folders) or the lines of a texts file into an (N, D) float32 ``.npy``.

    Under torchrun each process embeds a contiguous share and rank 0 writes the rows in input order
    (the other processes get ``None``).
    """
    if bool(images) == bool(texts):
        raise ConfigError("embed: give exactly one of images or a texts file")
    require_model(model_dir, command="embed")
    from polymodal.core.distributed import distributed_session, is_main, rank_slices
    from polymodal.embed import image_paths, save_embeddings
    from polymodal.models.io import load

    npy = _output_file(out)  # before any work: a run must not end in "no such folder"
    with distributed_session() as env:
        model = load(model_dir)
        items: list = _text_lines(Path(texts)) if texts else image_paths(images or [])
        share = items[rank_slices(len(items), env.world_size)[env.rank]]
        emb = _embed_share(model, share, texts=bool(texts), progress=progress and is_main(), strict=strict)
        main_process = is_main()
    if not main_process or emb is None:
        return None
    rows = save_embeddings(npy, emb)
    return Embedded(npy, (int(emb.vectors.shape[0]), int(emb.vectors.shape[1])), Path(rows), list(emb.bad))


def _output_file(out: str) -> Path:
    """The .npy that ``np.save`` will write for ``out``, its folder created and checked writable."""
    import os

    npy = Path(out if out.endswith(".npy") else out + ".npy")  # np.save adds the suffix itself
    try:
        npy.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(npy.parent, f"cannot create the output folder ({e.strerror or e})") from None
    if not os.access(npy.parent, os.W_OK):
        raise DataError(npy.parent, "the output folder is not writable")
    return npy


def _text_lines(path: Path) -> list[tuple[str, str]]:
    """(``"<file>:<line>"``, text) per line of a texts file."""
    return [(f"{path}:{n}", t) for n, t in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)]


def _embed_share(model: Any, share: list, *, texts: bool, progress: bool, strict: bool) -> Embeddings | None:
    """Embed this process's share; under torchrun, rank 0 gets every share's rows in rank order (others: None)."""
    import numpy as np

    from polymodal.core.distributed import gather_to_main
    from polymodal.embed import Embeddings, embed_images, embed_texts

    if texts:
        emb = Embeddings(embed_texts(model, [t for _, t in share], progress=progress), [r for r, _ in share])
    else:
        emb = embed_images(model, share, progress=progress, strict=strict)
    gathered = gather_to_main(emb)
    if gathered is None:
        return None
    parts = [p for p in gathered if isinstance(p, Embeddings)]
    return Embeddings(np.concatenate([np.asarray(p.vectors) for p in parts]).astype(np.float32),
                      [r for p in parts for r in p.rows], [b for p in parts for b in p.bad])


def model_presets() -> list[tuple[str, Path]]:
    """The model presets: (name, JSON file)."""
    from polymodal.models.build import PRESET_DIR, preset_names

    return [(name, PRESET_DIR / (name + ".json")) for name in preset_names()]


__all__ = ["Embedded", "Evaluation", "Zeroshot", "demo", "embed", "evaluate", "model_presets", "rows_of", "train",
           "zeroshot"]
