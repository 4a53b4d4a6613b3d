"""Training the text-to-image flow model on small images, and converting images to and from tensors."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from polymodal.errors import ConfigError, ShapeError
from polymodal.generate.flow import flow_matching_loss
from polymodal.generate.model import FlowUNet, GeneratorConfig, from_pil, to_pil
from polymodal.train.loop import Checkpointer, param_groups, progress_bar, seed_everything, warmup_cosine

__all__ = ["GeneratorTrainConfig", "GeneratorTrainResult", "from_pil", "to_pil", "train_generator"]


@dataclass
class GeneratorTrainConfig:
    """Training settings.

    Args:
        steps: Optimiser steps.
        batch_size: Images per step.
        lr: AdamW learning rate (cosine decay to 0, no warm-up, no weight decay).
        p_uncond: Condition-dropout probability (classifier-free guidance).
        ema: Decay of the exponential moving average of weights used for sampling (0 = off).
        flip: Random horizontal flips (off for emoji whose meaning has a direction).
        seed: Initialisation and sampling seed.
        model: :class:`GeneratorConfig` fields.
    """

    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-3
    p_uncond: float = 0.1
    ema: float = 0.999
    flip: bool = False
    seed: int = 0
    model: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(f"GeneratorTrainConfig: need steps, batch_size >= 1, lr > 0; got {self.steps}, "
                              f"{self.batch_size}, {self.lr}")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"GeneratorTrainConfig.ema: must be in [0, 1), got {self.ema}")


@dataclass(frozen=True)
class GeneratorTrainResult:
    """The trained model (EMA weights when ``ema > 0``) and its loss curve.

    Args:
        model: In eval mode.
        history: Every 50 steps ``{"step", "loss", "seconds"}``.
    """

    model: FlowUNet
    history: list[dict[str, float]]


def train_generator(
    images: Tensor,
    cond: Tensor | None,
    config: GeneratorTrainConfig,
    *,
    on_history: Callable[[dict[str, float]], None] | None = None,
    progress: bool = False,
    checkpoint: Path | None = None,
    resume: bool = False,
) -> GeneratorTrainResult:
    """Fit a :class:`FlowUNet` by conditional flow matching.

    Args:
        images: ``(N, 3, S, S)`` in [-1, 1] (:func:`from_pil`).
        cond: ``(N, cond_dim)`` text embeddings, or ``None`` for an unconditional model.
        config: Settings.
        on_history: called with each history entry as it is recorded (progress).
        progress: A bar over the steps on stderr.
        checkpoint: A folder to write a resumable checkpoint to at every history row (50 steps)
            (:class:`polymodal.train.loop.Checkpointer`).
        resume: Continue from ``checkpoint`` exactly as if the run had not stopped (same data and config).
    """
    if images.dim() != 4 or (cond is not None and cond.shape[0] != images.shape[0]):
        raise ShapeError(f"images {tuple(images.shape)} and cond {None if cond is None else tuple(cond.shape)}")
    seed_everything(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    mcfg = GeneratorConfig(
        image_size=images.shape[-1],
        conditional=cond is not None,
        **({"cond_dim": cond.shape[1]} if cond is not None else {}),
        **config.model,
    )
    model = FlowUNet(mcfg)
    ema = FlowUNet(mcfg)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(param_groups(model, 0.0), lr=config.lr)
    sched = warmup_cosine(opt, warmup_steps=0, total_steps=config.steps)
    saver = Checkpointer(checkpoint, settings=asdict(config), kind="generator-checkpoint", optimizer=opt,
                         scheduler=sched, generators={"data": gen})
    history: list[dict[str, float]] = list(saver.restore(model, extra={"ema": ema})["history"]) if resume else []
    first = int(history[-1]["step"]) + 1 if history else 1
    start, running = time.perf_counter() - (history[-1]["seconds"] if history else 0.0), 0.0
    for step in progress_bar(range(first, config.steps + 1), desc="flow matching", enabled=progress,
                             total=config.steps - first + 1):
        idx = torch.randint(0, images.shape[0], (config.batch_size,), generator=gen)
        x = images[idx]
        if config.flip:
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        loss = flow_matching_loss(model, x, None if cond is None else cond[idx], p_uncond=config.p_uncond, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        # EMA warms up as min(decay, (1 + step) / (10 + step)) so short runs are not dominated by the init.
        decay = min(config.ema, (1 + step) / (10 + step)) if config.ema > 0 else 0.0
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1 - decay)
        running += loss.item()
        if step % 50 == 0 or step == config.steps:
            n = 50 if step % 50 == 0 else step % 50
            history.append({"step": step, "loss": running / n, "seconds": time.perf_counter() - start})
            if on_history is not None:
                on_history(history[-1])
            running = 0.0
            saver.save(model, {"history": history}, extra={"ema": ema})
    return GeneratorTrainResult(model=ema.eval(), history=history)
