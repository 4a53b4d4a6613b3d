"""The plumbing every training loop shares, in one place: AdamW parameter groups, the warmup-cosine
schedule, seeding, atomic checkpoint/resume and progress on stderr.

The trainers that use it: :mod:`polymodal.train.fit` (dual encoders, with
:mod:`polymodal.train.global_batch` for its torchrun / micro-batch epoch), :mod:`polymodal.train.classifier_fit`
(fusion and VQA classifiers), :mod:`polymodal.caption.train`, :mod:`polymodal.generate.train`,
:mod:`polymodal.flava.pretrain` and :mod:`polymodal.flava.vqa`. Each keeps only what is its own: the batch,
the loss and the model selection.

* **Parameter groups** (:func:`param_groups`): weight decay on weight matrices only. Biases, norm gains,
  scalars such as a temperature, and embeddings/tokens are not decayed (BERT, Devlin et al. 2019; ViT;
  CLIP; decaying a LayerNorm gain or a positional embedding towards 0 is a prior nobody wants).
* **Schedule** (:func:`warmup_cosine`): linear warm-up, then a half cosine to a floor (CLIP, OpenCLIP).
* **Seeding** (:func:`seed_everything`): Python, NumPy and torch's global generator.
* **Checkpoint/resume** (:func:`save_run`, :func:`load_run`): the weights, the optimiser, the schedule,
  every random generator the loop draws from and the loop's own counters, written as one atomic folder
  (:func:`polymodal.core.checkpoint.save_checkpoint_dir`), so a run resumed from it continues bit for bit as
  if it had not stopped.
* **Progress** (:func:`progress_bar`, :func:`log`): tqdm bars and lines on stderr (stdout stays free for
  ``--json``), silenced by ``enabled=False``.
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler
from tqdm.auto import tqdm

from polymodal.core.checkpoint import find_checkpoint_dir, load_train_state, load_weights, save_checkpoint_dir
from polymodal.errors import CheckpointError, ConfigError

__all__ = [
    "Checkpointer",
    "RunCheckpoint",
    "check_settings",
    "decays",
    "load_run",
    "log",
    "param_groups",
    "progress_bar",
    "rng_state",
    "save_run",
    "seed_everything",
    "set_rng_state",
    "warmup_cosine",
]

T = TypeVar("T")

# Keys of ``train_state.pt`` that belong to the helper; the loop's own records sit beside them.
_RESERVED = frozenset({"optimizer", "scheduler", "rng", "torch_rng"})

# ---------------------------------------------------------------------------------------------------------
# Seeding
# ---------------------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch's global generator with ``seed``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------
# Optimiser parameter groups
# ---------------------------------------------------------------------------------------------------------


def decays(name: str, param: Tensor) -> bool:
    """Whether the parameter ``name`` gets weight decay: weight matrices and kernels only.

    Not decayed: every tensor of fewer than 2 dimensions (biases, norm gains and shifts, scalars such as
    a temperature), and embeddings, learned tokens and positional tables (``embed``/``token`` in the
    name, or a name ending in ``pos.weight``).
    """
    return not (param.dim() < 2 or "embed" in name or "token" in name or name.endswith("pos.weight"))


def param_groups(
    params: nn.Module | Iterable[tuple[str, nn.Parameter]],
    weight_decay: float,
    *,
    lr: float | None = None,
) -> list[dict[str, Any]]:
    """AdamW groups: ``weight_decay`` on the parameters :func:`decays` selects, 0 on the others.

    Parameters that do not require gradients are left out; a group that would be empty is too.

    Args:
        params: a model, or ``(name, parameter)`` pairs (e.g. a filtered ``named_parameters()``).
        weight_decay: the decay of the weight matrices.
        lr: the groups' learning rate; ``None`` leaves it to the optimiser's default ``lr``.

    Returns:
        Up to two groups, decayed first.
    """
    named = params.named_parameters() if isinstance(params, nn.Module) else params
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in named:
        if p.requires_grad:
            (decay if decays(name, p) else no_decay).append(p)
    extra = {} if lr is None else {"lr": lr}
    groups = [{"params": decay, "weight_decay": weight_decay, **extra},
              {"params": no_decay, "weight_decay": 0.0, **extra}]
    return [g for g in groups if g["params"]]


# ---------------------------------------------------------------------------------------------------------
# Learning-rate schedule
# ---------------------------------------------------------------------------------------------------------


def warmup_cosine(optimizer: Optimizer, *, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> LambdaLR:
    """Linear warm-up, then cosine decay to a floor (as in CLIP and OpenCLIP), as a multiplier of each
    group's ``lr``.

    The multiplier of step ``s`` (0-based, the step about to be taken) is ``(s + 1) / warmup_steps`` during
    the warm-up, then ``min_ratio + (1 - min_ratio) * (1 + cos(pi * p)) / 2`` with ``p`` going from 0 to 1
    over the remaining ``total_steps - warmup_steps`` steps (and staying at 1 after them).

    Args:
        optimizer: the optimiser whose groups' ``lr`` are the peaks.
        warmup_steps: steps of linear warm-up (0: start at the peak).
        total_steps: steps of the whole run.
        min_ratio: the floor, as a fraction of the peak.
    """

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


# ---------------------------------------------------------------------------------------------------------
# Checkpoint / resume
# ---------------------------------------------------------------------------------------------------------


def rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """The state of every random source a loop may draw from, in a form ``torch.load(weights_only=True)``
    reads back: torch's global generator, Python's ``random``, NumPy's global generator and the loop's own
    ``generators`` by name."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }


def set_rng_state(state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Restore what :func:`rng_state` saved; ``generators`` are set in place by name.

    Raises:
        CheckpointError: a generator the loop uses is not in the saved state.
    """
    torch.set_rng_state(state["torch"])
    if "python" in state:
        random.setstate(_as_tuple(state["python"]))
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
    saved = state.get("generators", {})
    for name, g in (generators or {}).items():
        if name not in saved:
            raise CheckpointError(f"the checkpoint has no state for the random generator {name!r}")
        g.set_state(saved[name])


def _as_tuple(x: Any) -> Any:
    """``random.setstate`` wants tuples all the way down; a reloaded state may hold lists."""
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


@dataclass(frozen=True)
class RunCheckpoint:
    """A checkpoint :func:`load_run` found and applied to the optimiser, schedule and generators.

    Attributes:
        path: the folder read (the run's checkpoint, or the ``.old`` one a crash mid-save left).
        weights: the saved weights, for the trainer to load into its model.
        state: the loop's own counters and records, as given to :func:`save_run` (``loop``).
    """

    path: Path
    weights: dict[str, Tensor]
    state: dict[str, Any]


def save_run(
    path: Path,
    *,
    weights: dict[str, Tensor],
    optimizer: Optimizer,
    scheduler: LRScheduler | None,
    loop: dict[str, Any],
    config: dict[str, Any],
    generators: Mapping[str, torch.Generator] | None = None,
) -> None:
    """Write a resumable checkpoint of a run as one atomic folder (``model.safetensors``, ``train_state.pt``,
    ``config.json``; :func:`polymodal.core.checkpoint.save_checkpoint_dir`).

    Args:
        path: the checkpoint folder (replaced whole).
        weights: the tensors the model needs to continue: its trainable state, plus any other tensors of
            the run that change as it trains (an EMA copy, prefixed).
        optimizer: its state (moments, step counts) is saved.
        scheduler: its state is saved; ``None`` for a loop without one.
        loop: the loop's counters and records (epoch or step, history, best score, ...); tensors, numbers,
            strings, lists and dicts only. They are stored at the top level of ``train_state.pt``, beside
            ``optimizer``, ``scheduler`` and ``rng``, which they may not be named.
        config: written as ``config.json`` (what the folder is, the settings of the run).
        generators: the loop's own ``torch.Generator`` objects by name, besides the global ones.
    """
    clash = sorted(_RESERVED & set(loop))
    if clash:
        raise ValueError(f"save_run: loop records may not be named {clash}")
    # safetensors refuses tensors that share memory (tied embeddings): give each name its own copy.
    seen: set[int] = set()
    own = {}
    for k, v in weights.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        own[k] = v.detach().clone() if ptr in seen else v
        seen.add(ptr)
    weights = own
    state = {
        **loop,
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "rng": rng_state(generators),
    }
    save_checkpoint_dir(path, weights=weights, state=state, config=config)


def load_run(
    path: Path,
    *,
    optimizer: Optimizer,
    scheduler: LRScheduler | None,
    generators: Mapping[str, torch.Generator] | None = None,
    check: Callable[[Path, dict[str, Any]], None] | None = None,
) -> RunCheckpoint | None:
    """Read the checkpoint :func:`save_run` wrote at ``path`` and restore the optimiser, the schedule and
    every random generator from it; the caller loads :attr:`RunCheckpoint.weights` into its model and
    continues from :attr:`RunCheckpoint.state`.

    Args:
        path: the checkpoint folder (or where it would be).
        optimizer: built as for a fresh run, same parameter groups.
        scheduler: likewise.
        generators: the loop's own generators, set in place.
        check: called with the folder found and its ``loop`` state before anything is restored, to refuse
            a checkpoint of other settings (raise).

    Returns:
        ``None`` when there is no checkpoint at ``path``.

    Raises:
        CheckpointError: an unreadable checkpoint, or one of another run (other parameter groups).
    """
    found = find_checkpoint_dir(path)
    if found is None:
        return None
    state = load_train_state(found)
    loop = {k: v for k, v in state.items() if k not in _RESERVED}
    if check is not None:
        check(found, loop)
    # Checkpoints written before the loop helper saved torch's global generator only, as ``torch_rng``.
    rng = state.get("rng", {"torch": state.get("torch_rng", torch.get_rng_state())})
    missing = sorted(set(generators or {}) - set(rng.get("generators", {})))
    if missing:
        raise CheckpointError(f"{found}: the checkpoint has no state for the random generator(s) {missing}")
    weights = load_weights(found / "model.safetensors")
    try:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{found}: the optimiser state does not fit this run's parameters ({e})") from None
    set_rng_state(rng, generators)
    return RunCheckpoint(found, weights, loop)


def check_settings(found: Path, saved: Mapping[str, Any] | None, asked: Mapping[str, Any], *,
                   may_change: Iterable[str] = ()) -> None:
    """Refuse to resume a checkpoint trained under other settings: its optimiser and schedule state
    would keep the old ones while the run reported the new.

    Args:
        found: the checkpoint folder, for the message.
        saved: the settings saved in the checkpoint (``None``: a checkpoint without them, accepted).
        asked: this run's settings.
        may_change: settings that change nothing computed, or act only from the resume on.

    Raises:
        ConfigError: naming each changed setting, its checkpoint value and the one asked for.
    """
    if not isinstance(saved, Mapping):
        return
    free = set(may_change)
    changed = [k for k, v in asked.items() if k in saved and k not in free and saved[k] != v]
    if changed:
        raise ConfigError(
            f"{found}: cannot resume with other training settings: the checkpoint has "
            + ", ".join(f"{k}={saved[k]!r}" for k in changed) + "; this run asks for "
            + ", ".join(f"{k}={asked[k]!r}" for k in changed)
            + ". Resume with the checkpoint's settings, or train into a new folder"
        )


class Checkpointer:
    """A loop's resumable checkpoint folder: the model's whole state (parameters and buffers), the
    optimiser, the schedule, the generators and the loop's records, written by :meth:`save` after each
    epoch (or every few steps) and read back by :meth:`restore`.

    Args:
        path: the checkpoint folder; ``None`` turns checkpointing off (both methods then do nothing).
        settings: the run's settings, saved in the checkpoint; a resume under other ones is refused
            (:func:`check_settings`).
        kind: what the folder is, written in its ``config.json`` (``"flava-pretrain-checkpoint"``).
        optimizer: the loop's optimiser.
        scheduler: the loop's schedule, or ``None``.
        generators: the loop's own generators by name.
        may_change: settings a resume may change (see :func:`check_settings`).
    """

    def __init__(self, path: Path | None, *, settings: Mapping[str, Any], kind: str, optimizer: Optimizer,
                 scheduler: LRScheduler | None, generators: Mapping[str, torch.Generator] | None = None,
                 may_change: Iterable[str] = ()) -> None:
        self.path = None if path is None else Path(path)
        self.settings = dict(settings)
        self.kind, self.optimizer, self.scheduler = kind, optimizer, scheduler
        self.generators = dict(generators or {})
        self.may_change = frozenset(may_change)

    def save(self, model: nn.Module, loop: dict[str, Any], *, extra: Mapping[str, nn.Module] | None = None) -> None:
        """Write the checkpoint (atomically replacing the last one).

        Args:
            model: its ``state_dict()`` is saved.
            loop: the loop's counters and records (:func:`save_run`).
            extra: other modules that change as the run trains (an EMA copy), by prefix.
        """
        if self.path is None:
            return
        weights = dict(model.state_dict())
        for prefix, module in (extra or {}).items():
            weights.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
        save_run(self.path, weights=weights, optimizer=self.optimizer, scheduler=self.scheduler,
                 loop={**loop, "settings": self.settings}, config={"kind": self.kind, "settings": self.settings},
                 generators=self.generators)

    def restore(self, model: nn.Module, *, extra: Mapping[str, nn.Module] | None = None) -> dict[str, Any]:
        """Load the checkpoint into ``model``, ``extra``, the optimiser, the schedule and the generators.

        Returns:
            The loop's records as saved.

        Raises:
            ConfigError: no checkpoint folder given, none there, or one trained under other settings.
            CheckpointError: it does not fit the model or the optimiser.
        """
        if self.path is None:
            raise ConfigError("resume needs the checkpoint folder of the run")
        found = load_run(self.path, optimizer=self.optimizer, scheduler=self.scheduler, generators=self.generators,
                         check=lambda where, st: check_settings(where, st.get("settings"), self.settings,
                                                                may_change=self.may_change))
        if found is None:
            raise ConfigError(f"{self.path}: no checkpoint to resume from")
        others = dict(extra or {})
        parts: dict[str, dict[str, Tensor]] = {p: {} for p in ["", *others]}
        for k, v in found.weights.items():
            prefix = next((p for p in others if k.startswith(p + ".")), "")
            parts[prefix][k[len(prefix) + 1 :] if prefix else k] = v
        for prefix, module in [("", model), *others.items()]:
            try:
                module.load_state_dict(parts[prefix])
            except RuntimeError as e:
                raise CheckpointError(f"{found.path}: the weights do not fit the model ({e})") from None
        return found.state


# ---------------------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------------------


def progress_bar(iterable: Iterable[T], *, desc: str, enabled: bool = True, total: int | None = None,
                 leave: bool = False) -> tqdm:
    """A tqdm bar over ``iterable`` on stderr; ``enabled=False`` draws nothing (the iteration is the same).

    Args:
        iterable: what the loop iterates.
        desc: the bar's label ("epoch 3/30").
        enabled: draw it.
        total: its length, when ``iterable`` has none.
        leave: keep the finished bar on screen.
    """
    return tqdm(iterable, desc=desc, total=total, disable=not enabled, leave=leave, file=sys.stderr,
                dynamic_ncols=True)


def log(message: str, *, enabled: bool = True) -> None:
    """Print a progress line on stderr without breaking a bar being drawn."""
    if enabled:
        tqdm.write(message, file=sys.stderr)

