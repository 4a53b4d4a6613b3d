"""Training a dual encoder over cached trunk features: symmetric InfoNCE, AdamW, warmup + cosine,
early stopping on validation retrieval, atomic checkpoints every epoch and exact resume.

Any model with the *trunk protocol* trains here: ``preprocess``, ``image_trunk`` (frozen, cached),
``image_features``, ``tokenize``, ``text_trunk`` (frozen, cached), ``text_features``, ``logit_scale``,
``trainable_state_dict`` and ``image_trunk_id``/``text_trunk_id``. For the aligner the trunks are the
frozen lower parts of the pretrained towers; for a CLIP trained from scratch they are just the
preprocessed pixels and the token ids.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polymodal.core import distributed
from polymodal.core.checkpoint import find_checkpoint_dir, load_train_state
from polymodal.core.distributed import broadcast_params
from polymodal.data.pairs import PairSet
from polymodal.errors import ConfigError
from polymodal.losses import ClipLoss
from polymodal.models.io import load_trainable
from polymodal.models.protocol import DualEncoder
from polymodal.train.feature_cache import FeatureCache
from polymodal.train.global_batch import run_global_epoch
from polymodal.train.loop import (
    check_settings,
    load_run,
    log,
    param_groups,
    progress_bar,
    save_run,
    seed_everything,
    warmup_cosine,
)
from polymodal.train.trunk_features import collate_text_trunks, image_trunk_features, text_trunk_features


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3  # heads and temperature
    tower_lr: float = 2e-4  # unlocked tower blocks/layers: smaller, they start from good weights
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    min_lr_ratio: float = 0.02
    patience: int = 6  # epochs without a better validation R@1 before stopping
    seed: int = 0
    image_views: int = 3  # augmented views cached per training image, besides the clean one
    grad_clip: float = 1.0
    # Data parallel / memory (see train/global_batch.py): batch_size is the *global* batch over all
    # processes; each process encodes batch_size / world_size rows, in accum_steps micro-batches.
    accum_steps: int = 1  # micro-batches per process per step; the contrastive batch stays exact
    local_loss: bool = True  # under torchrun, each process builds only its own (B/W, B) logit rows
    # After early stopping, train a fresh model on train+val for the best epoch count along the same
    # schedule, and keep that one (train_aligner; the refit after model selection, as the linear probe does).
    refit: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError(f"need epochs >= 1 and batch_size >= 2, got {self.epochs} and {self.batch_size}")
        if self.lr <= 0 or self.tower_lr < 0 or self.image_views < 0 or self.patience < 1:
            raise ConfigError("lr must be > 0, tower_lr >= 0, image_views >= 0, patience >= 1")
        if self.accum_steps < 1:
            raise ConfigError(f"accum_steps must be >= 1, got {self.accum_steps}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# Settings a resumed run may change: they do not change what is computed (accum_steps, local_loss), or
# act from the resume on and are recorded as the run's (patience, refit). Any other change would be
# overridden by the checkpoint's optimiser and schedule state while config.json says otherwise.
RESUMABLE_CHANGES = frozenset({"accum_steps", "local_loss", "patience", "refit"})


def check_resume(checkpoint_dir: Path, config: TrainConfig) -> None:
    """Refuse to resume the checkpoint at ``checkpoint_dir`` (if any) under other training settings.

    Raises:
        ConfigError: naming each changed setting, its checkpoint value and the one asked for.
    """
    found = find_checkpoint_dir(checkpoint_dir)
    if found is not None:
        _check_same_settings(found, load_train_state(found), config)


def _check_same_settings(found: Path, state: dict[str, Any], config: TrainConfig) -> None:
    """Raise unless the loop state ``state`` of the checkpoint at ``found`` was trained under ``config``
    (up to :data:`RESUMABLE_CHANGES`); a checkpoint from before settings were saved in it passes."""
    check_settings(found, state.get("config"), asdict(config), may_change=RESUMABLE_CHANGES)


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_r1: float
    stopped_early: bool
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@torch.no_grad()
def recall_at_1(img: torch.Tensor, txt: torch.Tensor) -> tuple[float, float]:
    """Image→text and text→image R@1 for one caption per image (row i pairs with row i)."""
    sim = img @ txt.T
    target = torch.arange(len(img))
    return (sim.argmax(1) == target).float().mean().item(), (sim.argmax(0) == target).float().mean().item()


class DualEncoderTrainer:
    """Holds the cached features, the optimiser and the loop; ``fit`` runs it to the end or resumes it."""

    def __init__(self, model: DualEncoder, train: PairSet, val: PairSet, config: TrainConfig, *,
                 cache: FeatureCache, progress: bool = True) -> None:
        self.model, self.train_set, self.val_set, self.config = model, train, val, config
        self.cache, self.progress = cache, progress
        seed_everything(config.seed)
        self.views = [
            image_trunk_features(model, train.images, view=v, cache=cache, keys=train.keys, progress=progress,
                                 desc="train images")
            for v in range(config.image_views + 1)
        ]
        self.val_images = image_trunk_features(model, val.images, view=0, cache=cache, progress=progress,
                                               desc="val images")
        all_caps = sorted({c for caps in train.captions for c in caps} | set(val.texts))
        feats = dict(zip(all_caps, text_trunk_features(model, all_caps, cache=cache, progress=progress)))
        self.train_text = [[feats[c] for c in caps] for caps in train.captions]
        self.val_text = [feats[c] for c in val.texts]

        # Heads and temperature at ``lr``, unlocked tower blocks at ``tower_lr``; no decay on biases, norms,
        # embeddings or the temperature (loop.param_groups).
        named = list(model.named_parameters())
        in_tower = [n.split(".")[0].endswith("tower") for n, _ in named]
        groups = (param_groups([np for np, t in zip(named, in_tower) if not t], config.weight_decay, lr=config.lr)
                  + param_groups([np for np, t in zip(named, in_tower) if t], config.weight_decay, lr=config.tower_lr))
        # An aligner with both towers locked trains only heads over cached pooled features.
        self.heads_only = all(getattr(model.config, k, None) == 0 for k in ("unlock_image", "unlock_text"))
        self.optimizer = torch.optim.AdamW(groups)
        self.steps_per_epoch = max(1, math.ceil(len(train) / config.batch_size))
        total = self.steps_per_epoch * config.epochs
        self.scheduler = warmup_cosine(self.optimizer, warmup_steps=max(1, int(config.warmup_fraction * total)),
                                       total_steps=total, min_ratio=config.min_lr_ratio)
        self.loss_fn = ClipLoss()
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best_val_r1 = -1.0
        self.best_epoch = 0
        self.best_state: dict[str, torch.Tensor] = model.trainable_state_dict()

    # ------------------------------------------------------------ one epoch
    def _epoch(self) -> float:
        model, cfg = self.model, self.config
        if distributed.world_size() > 1 or cfg.accum_steps > 1:
            # Several processes or micro-batches: the same global batch, split (train/global_batch.py).
            return run_global_epoch(self)
        g = torch.Generator().manual_seed(cfg.seed * 1000 + self.epoch)
        order = torch.randperm(len(self.train_set), generator=g)
        view_of = torch.randint(0, len(self.views), (len(order),), generator=g)
        model.train()
        losses = []
        bar = progress_bar(range(self.steps_per_epoch), desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
                           enabled=self.progress)
        for step in bar:
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            if len(idx) < 2:
                continue
            h_img = torch.stack([self.views[int(view_of[i])][int(i)] for i in idx])
            caps = [self.train_text[int(i)] for i in idx]
            picks = torch.randint(0, 1 << 30, (len(idx),), generator=g)
            h_txt = collate_text_trunks([c[int(p) % len(c)] for c, p in zip(caps, picks)])
            img = model.image_features(h_img)
            txt = model.text_features(h_txt)
            loss = self.loss_fn(img, txt, model.logit_scale.clamp(max=model.config.max_logit_scale))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, model.config.max_logit_scale)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.3f}")
        return float(np.mean(losses)) if losses else float("nan")

    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        self.model.eval()
        img = self.model.image_features(self.val_images)
        txt = torch.cat([self.model.text_features(collate_text_trunks(self.val_text[i : i + 512]))
                         for i in range(0, len(self.val_text), 512)])
        return recall_at_1(img, txt)

    # ------------------------------------------------------------ checkpoint / resume
    def state(self) -> dict[str, Any]:
        """The loop's records a checkpoint keeps besides the weights, optimiser, schedule and generators."""
        return {
            "epoch": self.epoch,
            "history": self.history,
            "best_val_r1": self.best_val_r1,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "config": asdict(self.config),
        }

    def save(self, path: Path, model_config: dict[str, Any]) -> None:
        """Write the resumable checkpoint folder ``path`` (:func:`polymodal.train.loop.save_run`)."""
        save_run(path, weights=self.model.trainable_state_dict(), optimizer=self.optimizer,
                 scheduler=self.scheduler, loop=self.state(),
                 config={"kind": self.model.config.kind, "model": model_config})

    def restore(self, path: Path) -> None:
        """Continue from the checkpoint at ``path``, refusing one trained under other settings.

        Raises:
            ConfigError: no checkpoint at ``path``, or other training settings (:func:`check_resume`).
        """
        found = load_run(path, optimizer=self.optimizer, scheduler=self.scheduler,
                         check=lambda where, st: _check_same_settings(where, st, self.config))
        if found is None:
            raise ConfigError(f"{path}: no checkpoint to resume from")
        load_trainable(self.model, found.weights, source=found.path)
        st = found.state
        self.epoch, self.history = int(st["epoch"]), list(st["history"])
        self.best_val_r1, self.best_epoch = float(st["best_val_r1"]), int(st["best_epoch"])
        self.best_state = dict(st["best_state"])

    # ------------------------------------------------------------ the loop
    def fit(self, checkpoint_dir: Path | None = None, *, resume: bool = False,
            fixed_epochs: int | None = None) -> FitResult:
        """Train to the end (or early stop on validation R@1) and load the best epoch's weights.

        With ``fixed_epochs`` it runs exactly that many epochs of the configured schedule instead, without
        early stopping, and keeps the last (a refit whose epoch count was chosen by an earlier run).
        """
        if fixed_epochs is not None and not 1 <= fixed_epochs <= self.config.epochs:
            raise ConfigError(f"fixed_epochs must be in [1, {self.config.epochs}], got {fixed_epochs}")
        if resume and checkpoint_dir is not None:
            self.restore(checkpoint_dir)
        # Under torchrun every process starts from rank 0's weights, as DistributedDataParallel does.
        broadcast_params([p for p in self.model.parameters() if p.requires_grad])
        t0 = time.perf_counter()
        # Heads over cached features are a few small matmuls per step, too small to split across threads:
        # with another process busy on a core, OpenMP's barrier waits made a 2-thread epoch of the demo
        # 10x slower than a 1-thread one (9.9 s against 0.9 s). Towers that train keep every thread.
        previous_threads = torch.get_num_threads()
        if self.heads_only:
            torch.set_num_threads(1)
        try:
            stopped = self._run_epochs(checkpoint_dir, fixed_epochs)
        finally:
            torch.set_num_threads(previous_threads)
        load_trainable(self.model, self.best_state, source=None)
        return FitResult(self.history, self.best_epoch, self.best_val_r1, stopped, time.perf_counter() - t0)

    def _run_epochs(self, checkpoint_dir: Path | None, fixed_epochs: int | None = None) -> bool:
        """Epochs until the last or until early stopping; returns whether it stopped early."""
        cfg = self.config
        fixed = fixed_epochs is not None
        last = cfg.epochs if fixed_epochs is None else fixed_epochs
        while self.epoch < last:
            if not fixed and self.epoch - self.best_epoch >= cfg.patience and self.best_val_r1 >= 0:
                return True
            t = time.perf_counter()
            loss = self._epoch()
            r1_i2t, r1_t2i = self.validate()
            self.epoch += 1
            row = {"epoch": self.epoch, "train_loss": loss, "val_r1_i2t": r1_i2t, "val_r1_t2i": r1_t2i,
                   "lr": self.scheduler.get_last_lr()[0], "logit_scale": self.model.logit_scale.detach().exp().item(),
                   "seconds": time.perf_counter() - t}
            self.history.append(row)
            if fixed or r1_i2t > self.best_val_r1:  # a fixed run keeps its last epoch
                self.best_val_r1, self.best_epoch = r1_i2t, self.epoch
                self.best_state = self.model.trainable_state_dict()
            log(f"epoch {self.epoch:3d}  loss {loss:.4f}  val R@1 i→t {r1_i2t:.3f}  t→i {r1_t2i:.3f}",
                enabled=self.progress)
            if checkpoint_dir is not None and distributed.rank() == 0:  # one writer under torchrun
                self.save(checkpoint_dir, self.model.config.to_dict())
        return False
