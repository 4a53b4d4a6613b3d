"""Runs of the small FLAVA-style model: ``polymodal flava pretrain|vqa``.

The recipe is docs/flava.md's (scripts/vision_language/flava_ablation.py, the "all" run): pretraining on
image-caption pairs with the five weighted objectives, then a VQA head on [CLS_M] fine-tuned with the whole
model on generated shapes scenes. The pretraining vocabulary also holds the words of the shapes training
questions, so that a pretrained folder can be fine-tuned for VQA as it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polymodal.data.sources import require_source
from polymodal.recipes.common import Log, history_line, say

VQA_SIZES = {"train": 4000, "val": 500, "test": 1000}  # the ablation's scenes per split


@dataclass(frozen=True)
class FlavaShape:
    """Sizes of a FLAVA model trained from scratch (the ablation's defaults)."""

    image_size: int = 32
    patch_size: int = 8
    width: int = 96
    heads: int = 4
    layers: int = 2  # depth of each of the three encoders
    max_text_length: int = 16
    embed_dim: int = 64


def _vqa_records(split: str, n: int, image_size: int, seed: int) -> list[Any]:
    from polymodal.data.shapes import ShapesConfig, load_shapes

    return load_shapes(split, n=n, seed=seed, kind="vqa", config=ShapesConfig(image_size=image_size))


def _config(shape: FlavaShape, vocab_size: int) -> Any:
    from polymodal.flava import FlavaConfig

    return FlavaConfig(vocab_size=vocab_size, max_text_length=shape.max_text_length, image_size=shape.image_size,
                       patch_size=shape.patch_size, width=shape.width, heads=shape.heads,
                       image_layers=shape.layers, text_layers=shape.layers, multimodal_layers=shape.layers,
                       embed_dim=shape.embed_dim)


@dataclass
class Pretrained:
    out: Path
    pairs: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def pretrain(data: str, out: str, *, shape: FlavaShape | None = None, epochs: int = 10, batch_size: int = 64,
             lr: float = 1e-3, seed: int = 0, resume: bool = False, log: Log | None = None) -> Pretrained:
    """Pretrain a FLAVA-style model on the train split of ``data``'s image-text pairs; save it to ``out``.
    ``out/checkpoint`` is rewritten after every epoch; ``resume`` continues from it."""
    import torch

    from polymodal.data.pairs import load_pairs
    from polymodal.flava import FlavaModel, PretrainConfig, build_vocabulary, pixels, pretrain
    from polymodal.models.io import save

    require_source(data, command="flava pretrain", needs="image-text pairs", kinds=("manifest",))
    shape = shape or FlavaShape()
    pairs = load_pairs(data, "train")
    say(log, f"{len(pairs)} pairs from {data}; generating the shapes questions for the vocabulary")
    questions = [str(r.text) for r in _vqa_records("train", VQA_SIZES["train"], shape.image_size, seed)]
    tokenizer = build_vocabulary([c for caps in pairs.captions for c in caps] + questions)
    cut = sum(len(tokenizer.tokens(c)) + 2 > shape.max_text_length for caps in pairs.captions for c in caps)
    if cut:
        say(log, f"{cut} captions are longer than --max-text-length {shape.max_text_length} (with <bos>/<eos>) and are cut")
    torch.manual_seed(seed)
    model = FlavaModel(_config(shape, tokenizer.vocab_size), tokenizer=tokenizer)
    cfg = PretrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, log_every=0)
    start = time.perf_counter()

    def on_epoch(epoch: int) -> dict[str, float]:
        say(log, f"pretrain epoch {epoch}/{epochs} ({time.perf_counter() - start:.0f} s)")
        return {}

    result = pretrain(model, pixels(list(pairs.images), size=shape.image_size), pairs.captions, tokenizer, cfg,
                      on_epoch=on_epoch, checkpoint=Path(out) / "checkpoint", resume=resume)
    save(model, out, extra={"data": data, "weights": cfg.weights, "history": result.history})
    return Pretrained(Path(out), len(pairs), result.history, result.seconds)


def _reset_parameters(module: Any) -> None:
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()


@dataclass
class VqaTrained:
    out: Path
    best_epoch: int
    val_accuracy: float
    test_accuracy: float
    seconds: float


def vqa(out: str, *, model_dir: str | None = None, data: str = "builtin:shapes-vqa", epochs: int = 12,
        batch_size: int = 64, lr: float = 5e-4, sizes: dict[str, int] | None = None, seed: int = 0,
        resume: bool = False, log: Log | None = None) -> VqaTrained:
    """Fine-tune a VQA head on [CLS_M] with the whole model (a pretrained folder, or from scratch without
    ``model_dir``) on generated shapes scenes; keep the best validation epoch; score the test split once.
    ``out/checkpoint`` is rewritten after every epoch; ``resume`` continues from it."""
    import copy

    import torch

    from polymodal.data.shapes import ANSWERS
    from polymodal.flava import (
        FlavaForVqa,
        FlavaModel,
        VqaConfig,
        build_vocabulary,
        evaluate_vqa,
        finetune_vqa,
        vqa_tensors,
    )
    from polymodal.models.io import load, save

    require_source(data, command="flava vqa", needs="VQA scenes", builtins=("shapes-vqa",))
    sizes = {**VQA_SIZES, **(sizes or {})}
    shape = FlavaShape()
    pretrained = load(model_dir, FlavaModel, what="flava vqa") if model_dir is not None else None
    image_size = pretrained.config.image_size if pretrained is not None else shape.image_size
    say(log, f"generating {sum(sizes.values())} shapes scenes")
    records = {s: _vqa_records(s, n, image_size, seed) for s, n in sizes.items()}
    if pretrained is not None:
        tokenizer, flava = pretrained.tokenizer, copy.deepcopy(pretrained)
        assert tokenizer is not None  # a saved FLAVA folder always holds its vocabulary
    else:  # VQA alone: the same architecture, a vocabulary of the training questions
        tokenizer = build_vocabulary([str(r.text) for r in records["train"]])
        torch.manual_seed(seed)
        flava = FlavaModel(_config(shape, tokenizer.vocab_size), tokenizer=tokenizer)
    tensors = {s: vqa_tensors(recs, tokenizer, image_size=image_size, max_length=flava.config.max_text_length)
               for s, recs in records.items()}
    model = FlavaForVqa(flava, answers=ANSWERS)
    torch.manual_seed(seed + 1)  # the head's initialisation, the same for every starting model
    model.head.apply(_reset_parameters)
    say(log, f"fine-tuning for VQA: {sizes['train']} questions, {epochs} epochs")
    fit = finetune_vqa(model, tensors["train"], tensors["val"],
                       VqaConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed),
                       on_history=history_line(log, epochs), checkpoint=Path(out) / "checkpoint", resume=resume)
    test_acc = evaluate_vqa(model, tensors["test"])
    save(model, out, extra={"data": data, "pretrained": model_dir, "history": fit.history, "best_epoch": fit.best_epoch,
                      "val_accuracy": fit.best_val_acc, "test_accuracy": test_acc})
    return VqaTrained(Path(out), fit.best_epoch, fit.best_val_acc, test_acc, fit.seconds)
