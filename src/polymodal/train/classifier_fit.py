"""Training and scoring the multimodal classifier on records: built-in data sources, label checks,
modality dropout, auxiliary unimodal losses, model selection on the validation split only.

Inputs are featurised once (log-mels precomputed) and batches are index slices of those tensors, so an
epoch over avdigits takes seconds on a CPU.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from polymodal.data.record import BadRecord, Record
from polymodal.errors import ConfigError, DataError
from polymodal.models.classifier import (
    ClassifierConfig,
    MultimodalClassifier,
    missing_modality_dropout,
)
from polymodal.models.classifier_encoders import TextEncoderConfig
from polymodal.models.classifier_inputs import ModalityInputs, featurize, raw_inputs, read_compact
from polymodal.train.loop import Checkpointer, param_groups, progress_bar, seed_everything, warmup_cosine

__all__ = [
    "BUILTIN_DATA",
    "RECIPES",
    "DataSplits",
    "Recipe",
    "FitResult",
    "accuracy",
    "encode_labels",
    "fit_classifier",
    "load_data",
    "predict",
]

BUILTIN_DATA: tuple[str, ...] = ("builtin:avdigits", "builtin:avclips", "builtin:shapes-vqa")


@dataclass(frozen=True)
class Recipe:
    """The training settings ``polymodal fuse train`` uses for a built-in data source by default.

    Args:
        epochs: passes over the training split.
        batch_size: examples per step.
        lr: peak AdamW learning rate (10 % linear warm-up, then cosine to 0).
        vqa_sizes: records per split for shapes-vqa (``None``: :func:`load_data`'s default).
        vqa_train_mix: relative frequency of question types in the shapes-vqa training split (types not
            named: 1); validation and test keep the uniform mix.
    """

    epochs: int
    batch_size: int
    lr: float
    vqa_sizes: dict[str, int] | None = None
    vqa_train_mix: dict[str, float] | None = None


DEFAULT_RECIPE = Recipe(epochs=15, batch_size=64, lr=2e-3)  # avdigits' and any other data's

# shapes-vqa: chosen on validation only, on one CPU thread (docs/fusion.md, "shapes VQA on the CPU")
RECIPES: dict[str, Recipe] = {
    "builtin:avdigits": DEFAULT_RECIPE,
    "builtin:avclips": Recipe(epochs=10, batch_size=64, lr=2e-3),
    "builtin:shapes-vqa": Recipe(
        epochs=10, batch_size=64, lr=1e-3, vqa_sizes={"train": 80000, "val": 1000}, vqa_train_mix={"relation": 3.0}
    ),
}


@dataclass
class DataSplits:
    """Records of a data source's splits, the names of its integer labels (none for a folder, whose labels
    are names), and the files skipped because they could not be read."""

    name: str
    splits: dict[str, list[Record]]
    label_names: tuple[str, ...]
    skipped: list[BadRecord] = field(default_factory=list)


def load_data(
    spec: str,
    *,
    splits: Sequence[str] = ("train", "val", "test"),
    vqa_sizes: dict[str, int] | None = None,
    vqa_train_mix: dict[str, float] | None = None,
    config: ClassifierConfig | None = None,
) -> DataSplits:
    """Load a built-in data source, or a user's labelled folder.

    Args:
        spec: "builtin:avdigits" (image + spoken digit -> digit), "builtin:avclips" (MP4 clips: motion
            direction x tone sweep), "builtin:shapes-vqa" (scene + question -> answer word), or the path
            of a labelled folder (``label/clip.mp4``; :mod:`polymodal.data.labelled_folder`).
        splits: which splits to load.
        vqa_sizes: records per split for shapes-vqa (default train 12000, val 1000, test 2000).
        vqa_train_mix: relative frequency of each question type in the shapes-vqa training split (types
            not named: 1; ``None``: uniform); validation and test are always uniform.
        config: the model a folder is read for: each file is decoded into what it reads
            (:func:`~polymodal.models.classifier_inputs.read_compact`). Needed for a folder only.
    """
    if not spec.startswith("builtin:"):
        from functools import partial

        from polymodal.data.labelled_folder import load_labelled_folder

        if config is None:
            raise ConfigError(f"reading the folder {spec} needs the model's config (which frames and audio it reads)")
        folder = load_labelled_folder(spec, splits, read=partial(read_compact, config))
        return DataSplits(spec, folder.splits, (), skipped=folder.bad)
    if spec == "builtin:avdigits":
        from polymodal.data.avdigits import load_avdigits

        return DataSplits(spec, {s: load_avdigits(s) for s in splits}, tuple(str(d) for d in range(10)))
    if spec == "builtin:avclips":
        from polymodal.data.avclips import AVCLIPS_LABELS, load_avclips

        return DataSplits(spec, {s: load_avclips(s) for s in splits}, AVCLIPS_LABELS)
    if spec == "builtin:shapes-vqa":
        from polymodal.data.shapes import ANSWERS, QUESTION_TYPES, ShapesConfig, load_shapes

        sizes = {"train": 12000, "val": 1000, "test": 2000, **(vqa_sizes or {})}
        unknown = sorted(set(vqa_train_mix or {}) - set(QUESTION_TYPES))
        if unknown:
            raise ConfigError(f"vqa_train_mix: unknown question types {unknown}; known: {', '.join(QUESTION_TYPES)}")
        train_scenes = None  # the training split's scene config: only its question mix differs
        if vqa_train_mix:
            train_scenes = ShapesConfig(question_weights=tuple(float(vqa_train_mix.get(q, 1.0)) for q in QUESTION_TYPES))
        records = {s: load_shapes(s, n=sizes[s], kind="vqa", config=train_scenes if s == "train" else None) for s in splits}
        return DataSplits(spec, records, ANSWERS)
    raise ConfigError(f"unknown data {spec!r}; known: {', '.join(BUILTIN_DATA)}")


def _label_name(record: Record, names: Sequence[str]) -> str:
    label = record.label
    if label is None:
        raise DataError(record.source or record.key or None, f"record {record.key!r} has no label")
    if isinstance(label, str):
        return label
    if isinstance(label, (int, torch.Tensor)) and not isinstance(label, bool):
        i = int(label)
        if names and not 0 <= i < len(names):
            raise DataError(record.source or None, f"label {i} is outside the {len(names)} known labels")
        return names[i] if names else str(i)
    raise DataError(record.source or None, f"label must be an int or a string, got {type(label).__name__}")


def encode_labels(records: Sequence[Record], *, model_labels: Sequence[str], label_names: Sequence[str] = (), split: str = "eval") -> Tensor:
    """Label indices in the model's label order.

    Args:
        records: the examples.
        model_labels: the model's labels (``config.labels``).
        label_names: names of integer labels in ``records`` (the data source's label list).
        split: what the records are, for the message.

    Raises:
        DataError: labels the model was not trained on, listed by name.
    """
    index = {name: i for i, name in enumerate(model_labels)}
    names = [_label_name(r, label_names) for r in records]
    unknown = sorted({n for n in names if n not in index})
    if unknown:
        raise DataError(
            None,
            f"{split} labels differ from the model's training labels: not in training: {unknown[:20]}"
            f"{' ...' if len(unknown) > 20 else ''}; the model knows {list(model_labels)[:20]}",
        )
    return torch.tensor([index[n] for n in names], dtype=torch.int64)


def prepare(config: ClassifierConfig, records: Sequence[Record], *, require_all: bool | None = None) -> ModalityInputs:
    """Featurised model inputs of ``records`` (see :mod:`polymodal.models.classifier_inputs`)."""
    return featurize(config, raw_inputs(config, records, require_all=require_all))


@torch.no_grad()
def predict(model: MultimodalClassifier, inputs: ModalityInputs, *, batch_size: int = 256) -> Tensor:
    """Predicted class indices ``(N,)``."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(inputs), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(inputs)))
        out.append(model(inputs.select(idx).to(device)).argmax(dim=-1).cpu())
    return torch.cat(out)


def accuracy(model: MultimodalClassifier, inputs: ModalityInputs, labels: Tensor) -> float:
    """Fraction of ``inputs`` classified as ``labels``."""
    return float((predict(model, inputs) == labels).float().mean())


@dataclass
class FitResult:
    """A trained model and how it got there.

    Args:
        model: the model of the kept epoch.
        best_epoch: that epoch.
        val_accuracy: its validation accuracy with every modality.
        history: per epoch: train loss and validation accuracies.
        seconds: training wall time.
        select: the validation score the epoch was chosen by ("all" or "missing").
        val_score: that score at the kept epoch.
        skipped: files of the training data that could not be read (a folder's), each with its problem.
    """

    model: MultimodalClassifier
    best_epoch: int
    val_accuracy: float
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    select: str = "all"
    val_score: float = 0.0
    skipped: list[BadRecord] = field(default_factory=list)


def _text_vocab(config: ClassifierConfig, train: Sequence[Record]) -> ClassifierConfig:
    """Fill each text encoder's vocabulary from the training texts (never from val or test)."""
    from polymodal.text import WordTokenizer

    encoders = dict(config.encoders)
    for m, enc in encoders.items():
        if isinstance(enc, TextEncoderConfig) and not enc.vocab:
            tok = WordTokenizer.build([r.text for r in train if r.text])
            import dataclasses

            encoders[m] = dataclasses.replace(enc, vocab=tuple(tok.itos[4:]))
    return config.replace(encoders=encoders)


def fit_classifier(
    config: ClassifierConfig,
    data: DataSplits,
    *,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: str = "cpu",
    select: str = "auto",
    log: Any = None,
    progress: bool = False,
    checkpoint: Path | None = None,
    resume: bool = False,
) -> FitResult:
    """Train on ``data.splits["train"]``, keep the epoch with the best accuracy on ``data.splits["val"]``.

    The loss is the fused cross-entropy plus, with ``config.aux_loss_weight > 0``, that weight times the
    mean of the auxiliary heads' cross-entropies, each over the rows where its modality is really present
    (modality dropout hides a modality from the fusion only; its encoder still learns from it).

    Args:
        config: the model config; labels and text vocabulary are filled in from the training split.
        data: needs "train" and "val".
        epochs: passes over the training set.
        batch_size: examples per step.
        lr: peak AdamW learning rate (10 % linear warm-up, then cosine to 0; :mod:`polymodal.train.loop`).
        weight_decay: AdamW weight decay of the weight matrices (not of biases, norms and embeddings).
        seed: seeds initialisation, shuffling and modality dropout.
        device: torch device.
        select: the validation score that picks the epoch: "all" (accuracy with every modality),
            "missing" (the mean of the accuracy with every modality and with each one missing: a model
            trained for missing modalities is chosen for them too), or "auto" ("missing" when the model
            has modality dropout, else "all").
        log: optional ``callable(str)`` for a line per epoch.
        progress: a bar per epoch on stderr.
        checkpoint: a folder to write a resumable checkpoint to after every epoch
            (:class:`polymodal.train.loop.Checkpointer`).
        resume: continue from ``checkpoint`` exactly as if the run had not stopped (same data and settings).
    """
    if select not in ("auto", "all", "missing"):
        raise ConfigError(f"select must be 'auto', 'all' or 'missing', got {select!r}")
    for s in ("train", "val"):
        if s not in data.splits or not data.splits[s]:
            raise ConfigError(f"{data.name}: training needs a non-empty {s!r} split")
    t0 = time.perf_counter()
    seed_everything(seed)
    train, val = data.splits["train"], data.splits["val"]
    train_names = sorted({_label_name(r, data.label_names) for r in train})
    labels = tuple(data.label_names) if data.label_names else tuple(train_names)
    config = _text_vocab(config.replace(labels=labels), train)
    model = MultimodalClassifier(config).to(device)
    x_train = prepare(config, train, require_all=False)
    y_train = encode_labels(train, model_labels=labels, label_names=data.label_names, split="train")
    x_val = prepare(config, val, require_all=False)
    y_val = encode_labels(val, model_labels=labels, label_names=data.label_names, split="val")
    opt = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    steps = epochs * ((len(train) + batch_size - 1) // batch_size)
    sched = warmup_cosine(opt, warmup_steps=int(0.1 * steps), total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    if select == "auto":
        select = "missing" if config.modality_dropout > 0 and len(config.modalities) > 1 else "all"
    best_score, best_epoch, best_acc, best_state = -1.0, -1, -1.0, copy.deepcopy(model.state_dict())
    history: list[dict[str, Any]] = []
    settings = {"config": config.to_dict(), "epochs": epochs, "batch_size": batch_size, "lr": lr,
                "weight_decay": weight_decay, "seed": seed, "select": select}
    saver = Checkpointer(checkpoint, settings=settings, kind="classifier-checkpoint", optimizer=opt, scheduler=sched,
                         generators={"data": gen})
    if resume:
        saved = saver.restore(model)
        history, best_state = list(saved["history"]), dict(saved["best_state"])
        best_score, best_epoch, best_acc = float(saved["best_score"]), int(saved["best_epoch"]), float(saved["best_acc"])
    for epoch in range(len(history), epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        total = 0.0
        starts = range(0, len(train), batch_size)
        for start in progress_bar(starts, desc=f"epoch {epoch + 1}/{epochs}", enabled=progress):
            idx = order[start : start + batch_size]
            batch = x_train.select(idx)
            really_present = batch.present
            if config.modality_dropout > 0:
                batch.present = missing_modality_dropout(batch.present, config.modality_dropout, gen, scheme=config.dropout_scheme)
            # the fused loss is taken on every row, the unimodal fallback is for prediction only
            out = model.forward_all(batch.to(device), aux=config.aux_loss_weight > 0, fallback=False)
            y = y_train[idx].to(device)
            loss = loss_fn(out.logits, y)
            aux = []
            for m, aux_logits in out.aux_logits.items():
                rows = really_present[m].to(device)
                if bool(rows.any()):
                    aux.append(loss_fn(aux_logits[rows], y[rows]))
            if aux:
                loss = loss + config.aux_loss_weight * torch.stack(aux).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        val_acc = accuracy(model, x_val, y_val)
        entry = {"epoch": epoch, "train_loss": total / len(train), "val_accuracy": val_acc}
        score = val_acc
        if select == "missing":
            missing = [accuracy(model, x_val.without(m), y_val) for m in config.modalities]
            entry.update({f"val_accuracy_missing:{m}": a for m, a in zip(config.modalities, missing, strict=True)})
            score = (val_acc + sum(missing)) / (1 + len(missing))
            entry["val_score"] = score
        history.append(entry)
        if log:
            log(f"epoch {epoch}: loss {total / len(train):.4f} val acc {val_acc:.4f} score {score:.4f}")
        if score > best_score:  # model selection on the validation split only
            best_score, best_epoch, best_acc, best_state = score, epoch, val_acc, copy.deepcopy(model.state_dict())
        saver.save(model, {"history": history, "best_state": best_state, "best_score": best_score,
                           "best_epoch": best_epoch, "best_acc": best_acc})
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(model.cpu(), best_epoch, best_acc, history, time.perf_counter() - t0, select, best_score)


def save_classifier(result: FitResult, out: str | Path, *, data: str, extra: dict[str, Any] | None = None) -> Path:
    """Write the model folder (``config.json`` + ``model.safetensors``) with the training record."""
    from polymodal.models.io import save

    return save(
        result.model,
        out,
        extra={
            "data": data,
            "training": {
                "best_epoch": result.best_epoch,
                "val_accuracy": result.val_accuracy,
                "select": result.select,
                "val_score": result.val_score,
                "history": result.history,
                "seconds": round(result.seconds, 1),
            },
            **(extra or {}),
        },
    )


def default_preset(data: str, fusion: str) -> str:
    """The preset of ``polymodal fuse train --data DATA --fusion FUSION``.

    avdigits: ``fusion-{fusion}`` (fusion kinds, or "image"/"audio" for the unimodal baselines);
    avclips, and a folder holding videos: ``avclips-{fusion}`` (gated, late, early, or "video"/"audio");
    shapes-vqa: ``vqa-cross`` for "cross_modal", ``vqa-relation`` for "relation" (a Relation Network over
    pairs of grid cells), ``vqa-question``/``vqa-image`` for the baselines.
    """
    if data == "builtin:shapes-vqa":
        table = {"cross_modal": "vqa-cross", "relation": "vqa-relation", "question": "vqa-question", "text": "vqa-question", "image": "vqa-image"}
        if fusion not in table:
            raise ConfigError(f"shapes-vqa models: --fusion one of {sorted(table)}, got {fusion!r}")
        return table[fusion]
    if data == "builtin:avclips":
        return f"avclips-{fusion}"
    if not data.startswith("builtin:"):
        from polymodal.data.labelled_folder import folder_modalities

        if "video" in folder_modalities(data):
            return f"avclips-{fusion}"
    return f"fusion-{fusion}"


def train_run(
    data: str,
    out: str | Path,
    *,
    fusion: str = "tensor",
    preset: str | None = None,
    epochs: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    modality_dropout: float | None = None,
    dropout_scheme: str | None = None,
    aux_loss_weight: float | None = None,
    select: str = "auto",
    resume: bool = False,
    log: Any = None,
    progress: bool = False,
) -> FitResult:
    """Load ``data``, build the preset, train with model selection on val, save to ``out``; ``out/checkpoint``
    is rewritten after every epoch and ``resume`` continues from it.

    ``modality_dropout``, ``dropout_scheme`` and ``aux_loss_weight`` override the preset's when given;
    ``select``, ``log`` and ``progress`` are :func:`fit_classifier`'s. ``epochs=None`` and the batch size, learning rate and (for
    shapes-vqa) number of training scenes come from :data:`RECIPES`.
    """
    from polymodal.models.build import load_preset

    config = load_preset(preset or default_preset(data, fusion))
    if not isinstance(config, ClassifierConfig):
        raise ConfigError(f"preset {preset!r} is not a classifier preset")
    overrides = {"modality_dropout": modality_dropout, "dropout_scheme": dropout_scheme, "aux_loss_weight": aux_loss_weight}
    config = config.replace(**{k: v for k, v in overrides.items() if v is not None})
    recipe = RECIPES.get(data, DEFAULT_RECIPE)
    splits = load_data(data, splits=("train", "val"), vqa_sizes=recipe.vqa_sizes, vqa_train_mix=recipe.vqa_train_mix,
                       config=config)
    if splits.skipped and log is not None:
        shown = "; ".join(f"{b.source}: {b.problem}" for b in splits.skipped[:5])
        log(f"skipped {len(splits.skipped)} file(s) that could not be used: {shown}"
            + (" ..." if len(splits.skipped) > 5 else ""))
    result = fit_classifier(config, splits, epochs=recipe.epochs if epochs is None else epochs, batch_size=recipe.batch_size,
                            lr=recipe.lr, seed=seed, device=device, select=select, log=log, progress=progress,
                            checkpoint=Path(out) / "checkpoint", resume=resume)  # fmt: skip
    result.skipped = splits.skipped
    save_classifier(result, out, data=data, extra={"preset": preset or default_preset(data, fusion), "seed": seed})
    return result
