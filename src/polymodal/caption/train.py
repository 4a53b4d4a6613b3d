"""Training a captioner by teacher forcing on cached EfficientNet-Lite0 feature grids.

The tower is frozen, so each image's ``(1280, h, w)`` grid is computed once (:func:`extract_grids`, with
the fused inference runner) and training touches only the decoder. The loss is token-level cross-entropy
of the next word given the true prefix (teacher forcing) with label smoothing (Szegedy et al. 2016): the
target puts ``1 - eps`` on the true word and ``eps`` spread uniformly, which keeps the decoder from
becoming over-confident on a small caption set. Padding is ignored.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from polymodal.caption.model import CaptionConfig, Captioner, extract_grids
from polymodal.errors import ConfigError, ShapeError
from polymodal.text import WordTokenizer
from polymodal.train.loop import Checkpointer, param_groups, progress_bar, seed_everything, warmup_cosine

__all__ = ["CaptionTrainConfig", "CaptionTrainResult", "caption_loss", "extract_grids", "train_captioner"]


def caption_loss(logits: Tensor, ids: Tensor, *, pad_id: int, label_smoothing: float = 0.1) -> Tensor:
    """Teacher-forcing loss: position t of ``logits`` predicts ``ids[:, t + 1]``; padding ignored.

    Args:
        logits: ``(B, T, V)`` from :meth:`Captioner.forward` on ``ids``.
        ids: ``(B, T)`` ``<bos> words <eos> <pad>...``.
        pad_id: Id of ``<pad>``.
        label_smoothing: Mass spread uniformly over the vocabulary.
    """
    if logits.shape[:2] != ids.shape:
        raise ShapeError(f"logits {tuple(logits.shape)} do not match ids {tuple(ids.shape)}")
    pred = logits[:, :-1].reshape(-1, logits.shape[-1])  # (B*(T-1), V)
    target = ids[:, 1:].reshape(-1)  # (B*(T-1),)
    return F.cross_entropy(pred, target, ignore_index=pad_id, label_smoothing=label_smoothing)


@dataclass
class CaptionTrainConfig:
    """Training settings.

    Args:
        epochs: Passes over the training pairs.
        batch_size: Pairs per step.
        lr: AdamW peak learning rate (cosine decay to 0, no warm-up).
        weight_decay: AdamW weight decay of the weight matrices (not of biases, norms and embeddings).
        label_smoothing: See :func:`caption_loss`.
        min_freq: Words seen fewer times become ``<unk>``.
        seed: Initialisation and shuffling seed.
        model: Model sizes except ``vocab_size`` (taken from the tokenizer).
    """

    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    min_freq: int = 1
    seed: int = 0
    model: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(
                f"CaptionTrainConfig: need epochs, batch_size >= 1 and lr > 0; got {self.epochs}, "
                f"{self.batch_size}, {self.lr}"
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"CaptionTrainConfig.label_smoothing: must be in [0, 1), got {self.label_smoothing}")
        if "vocab_size" in self.model:
            raise ConfigError("CaptionTrainConfig.model: vocab_size comes from the tokenizer; do not set it")


@dataclass(frozen=True)
class CaptionTrainResult:
    """A trained captioner and its loss per epoch.

    Args:
        model: The captioner, in eval mode.
        history: Per epoch ``{"epoch", "loss", "seconds"}``.
    """

    model: Captioner
    history: list[dict[str, float]]


def train_captioner(
    grids: Tensor,
    captions: Sequence[str],
    config: CaptionTrainConfig,
    *,
    on_history: Callable[[dict[str, float]], None] | None = None,
    progress: bool = False,
    checkpoint: Path | None = None,
    resume: bool = False,
) -> CaptionTrainResult:
    """Fit a captioner on cached grids.

    Args:
        grids: ``(N, C, h, w)`` from :func:`extract_grids`.
        captions: N captions.
        config: Settings.
        on_history: called with each epoch's history entry as it is recorded (progress).
        progress: A bar per epoch on stderr.
        checkpoint: A folder to write a resumable checkpoint to after every epoch
            (:class:`polymodal.train.loop.Checkpointer`).
        resume: Continue from ``checkpoint`` exactly as if the run had not stopped (same data and config).
    """
    if grids.dim() != 4 or grids.shape[0] != len(captions):
        raise ShapeError(f"grids {tuple(grids.shape)} and {len(captions)} captions do not pair up")
    seed_everything(config.seed)
    tokenizer = WordTokenizer.build(captions, min_freq=config.min_freq)
    model_cfg = CaptionConfig(
        vocab_size=tokenizer.vocab_size,
        feature_dim=grids.shape[1],
        grid_cells=grids.shape[2] * grids.shape[3],
        **config.model,
    )
    model = Captioner(model_cfg, tokenizer)
    ids = tokenizer.encode(list(captions), max_length=model_cfg.max_length).input_ids  # (N, T)
    opt = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr)
    steps_per_epoch = -(-len(captions) // config.batch_size)
    sched = warmup_cosine(opt, warmup_steps=0, total_steps=config.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(config.seed)
    saver = Checkpointer(checkpoint, settings=asdict(config), kind="caption-checkpoint", optimizer=opt,
                         scheduler=sched, generators={"data": gen})
    history: list[dict[str, float]] = list(saver.restore(model)["history"]) if resume else []
    model.train()
    for epoch in range(len(history), config.epochs):
        start, total, count = time.perf_counter(), 0.0, 0
        batches = torch.randperm(len(captions), generator=gen).split(config.batch_size)
        for idx in progress_bar(batches, desc=f"epoch {epoch + 1}/{config.epochs}", enabled=progress):
            batch = ids[idx]
            batch = batch[:, : int((batch != tokenizer.pad_id).sum(1).max())]  # trim common padding
            loss = caption_loss(
                model(grids[idx], batch), batch, pad_id=tokenizer.pad_id, label_smoothing=config.label_smoothing
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            count += len(idx)
        history.append({"epoch": epoch + 1, "loss": total / count, "seconds": time.perf_counter() - start})
        if on_history is not None:
            on_history(history[-1])
        saver.save(model, {"history": history})
    return CaptionTrainResult(model=model.eval(), history=history)
