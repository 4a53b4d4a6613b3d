"""Visual question answering on the multimodal [CLS]: fine-tune a pretrained FLAVA-style model, or train
the same architecture from scratch ("VQA alone").

FLAVA (Singh et al. 2022, sec. 4) evaluates multimodal tasks by putting a classifier on the multimodal
encoder's [CLS_M] and fine-tuning the whole model; VQA is classification over a fixed answer set (here
:data:`polymodal.data.shapes.ANSWERS`). The model, :class:`~polymodal.flava.vqa_model.FlavaForVqa`, lives in
the models layer; this module trains it. Training keeps the weights of the epoch with the best validation
accuracy: model selection on the validation split only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from polymodal.data.record import Record
from polymodal.errors import ConfigError, DataError, ShapeError
from polymodal.flava.data import pixels, tokenize
from polymodal.flava.vqa_model import FlavaForVqa
from polymodal.text import WordTokenizer
from polymodal.train.loop import Checkpointer, param_groups, progress_bar, warmup_cosine


@dataclass
class VqaTensors:
    """A VQA split as tensors: images, question ids and masks, answer indices."""

    images: Tensor  # (M, C, S, S)
    input_ids: Tensor  # (M, T)
    attention_mask: Tensor  # (M, T)
    answers: Tensor  # (M,) int64

    def __len__(self) -> int:
        return int(self.answers.shape[0])


def vqa_tensors(
    records: Sequence[Record], tokenizer: WordTokenizer, *, image_size: int, max_length: int
) -> VqaTensors:
    """Turn ``load_shapes(..., kind="vqa")`` records (image, question ``text``, answer index ``label``) into tensors.

    Args:
        records: the VQA records.
        tokenizer: the model's vocabulary.
        image_size: the model's input side.
        max_length: the model's ``max_text_length``.
    """
    if not records:
        raise DataError(None, "vqa_tensors: no records")
    for r in records:
        if r.image is None or r.text is None or not isinstance(r.label, int):
            raise DataError(
                r.source, "a VQA record needs an image, a question (text) and an answer index (label)"
            )
    tokens = tokenize(tokenizer, [str(r.text) for r in records], max_length=max_length)
    return VqaTensors(
        images=pixels([r.image for r in records], size=image_size),  # type: ignore[misc]
        input_ids=tokens.input_ids,
        attention_mask=tokens.attention_mask,
        answers=torch.tensor([int(r.label) for r in records], dtype=torch.long),  # type: ignore[arg-type]
    )


@dataclass
class VqaConfig:
    """Fine-tuning recipe.

    Args:
        epochs: passes over the training questions.
        batch_size: questions per step.
        lr: peak AdamW learning rate (warm-up then cosine).
        weight_decay: AdamW decay of weight matrices.
        warmup_fraction: share of steps warming up.
        seed: shuffling seed.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.batch_size <= 0:
            raise ConfigError(
                f"VqaConfig: epochs and batch_size must be positive, got {self.epochs}, {self.batch_size}"
            )
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"VqaConfig: bad lr/weight_decay/warmup_fraction: {asdict(self)}")


@dataclass
class VqaResult:
    """What :func:`finetune_vqa` returns.

    Attributes:
        history: per epoch ``epoch``, ``loss`` (train mean), ``val_acc``, ``seconds``.
        best_epoch: epoch of the best validation accuracy (its weights are loaded into the model).
        best_val_acc: that accuracy.
        seconds: wall time.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_acc: float = 0.0
    seconds: float = 0.0


@torch.no_grad()
def evaluate_vqa(model: FlavaForVqa, data: VqaTensors, *, batch_size: int = 256) -> float:
    """Accuracy of the top answer.

    Args:
        model: the VQA model.
        data: a split.
        batch_size: questions per forward pass.
    """
    model.eval()
    correct = 0
    for s in range(0, len(data), batch_size):
        logits = model(
            data.images[s : s + batch_size],
            data.input_ids[s : s + batch_size],
            data.attention_mask[s : s + batch_size],
        )
        correct += int((logits.argmax(dim=1) == data.answers[s : s + batch_size]).sum())
    return correct / len(data)


def finetune_vqa(
    model: FlavaForVqa,
    train: VqaTensors,
    val: VqaTensors,
    config: VqaConfig,
    *,
    on_history: Callable[[dict[str, float]], None] | None = None,
    progress: bool = False,
    checkpoint: Path | None = None,
    resume: bool = False,
) -> VqaResult:
    """Train the whole model and head with cross-entropy; keep the best-validation epoch's weights.

    AdamW without decay on biases, norms and embeddings, warm-up then cosine decay
    (:mod:`polymodal.train.loop`), gradients clipped at norm 1; shuffling draws from a generator seeded
    with ``config.seed``.

    Args:
        model: the VQA model, trained in place.
        train: training split.
        val: validation split (model selection only).
        config: the recipe.
        on_history: called with each epoch's history entry as it is recorded (progress).
        progress: a bar per epoch on stderr.
        checkpoint: a folder to write a resumable checkpoint to after every epoch
            (:class:`polymodal.train.loop.Checkpointer`).
        resume: continue from ``checkpoint`` exactly as if the run had not stopped (same ``config``).
    """
    if train.answers.numel() and int(train.answers.max()) >= model.num_answers:
        raise ShapeError(
            f"finetune_vqa: answer index {int(train.answers.max())} >= num_answers {model.num_answers}"
        )
    gen = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.98))
    batch = min(config.batch_size, len(train))
    per_epoch = max(1, len(train) // batch)
    total = per_epoch * config.epochs
    scheduler = warmup_cosine(
        optimizer, warmup_steps=int(config.warmup_fraction * total), total_steps=total, min_ratio=0.01
    )
    saver = Checkpointer(checkpoint, settings=asdict(config), kind="flava-vqa-checkpoint", optimizer=optimizer,
                         scheduler=scheduler, generators={"data": gen})
    result = VqaResult()
    best_state: dict[str, Tensor] | None = None
    if resume:
        saved = saver.restore(model)
        result = VqaResult(history=list(saved["history"]), best_epoch=int(saved["best_epoch"]),
                           best_val_acc=float(saved["best_val_acc"]), seconds=float(saved["seconds"]))
        best_state = dict(saved["best_state"])
    start = time.perf_counter() - result.seconds
    for epoch in range(len(result.history) + 1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        loss_sum = 0.0
        for step in progress_bar(range(per_epoch), desc=f"epoch {epoch}/{config.epochs}", enabled=progress):
            idx = order[step * batch : (step + 1) * batch]
            logits = model(train.images[idx], train.input_ids[idx], train.attention_mask[idx])
            loss = F.cross_entropy(logits, train.answers[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach())
        val_acc = evaluate_vqa(model, val)
        result.history.append(
            {
                "epoch": float(epoch),
                "loss": loss_sum / per_epoch,
                "val_acc": val_acc,
                "seconds": time.perf_counter() - start,
            }
        )
        if on_history is not None:
            on_history(result.history[-1])
        if val_acc > result.best_val_acc or best_state is None:
            result.best_epoch, result.best_val_acc = epoch, val_acc
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        saver.save(model, {"history": result.history, "best_epoch": result.best_epoch,
                           "best_val_acc": result.best_val_acc, "best_state": best_state,
                           "seconds": result.history[-1]["seconds"]})
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - start
    return result
