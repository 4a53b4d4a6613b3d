"""Checkpoints that survive a crash and cannot run code.

Weights are safetensors; the optimizer, scheduler and RNG state go through ``torch.save`` and are read
back with ``torch.load(weights_only=True)``, so a checkpoint from an untrusted source cannot execute
anything. Every file is written to a temporary name and renamed into place; a checkpoint directory is
built beside the old one and swapped in, so a crash mid-write leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from polymodal.errors import CheckpointError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_weights(path: Path, state: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_weights(path: Path) -> dict[str, Tensor]:
    return load_weights_and_metadata(path)[0]


def load_weights_and_metadata(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors of a safetensors file and its string metadata (empty if none), in one read."""
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: missing {path.name}")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def read_folder_config(path: Path, *, what: str = "model", kinds: Sequence[str] | None = None) -> dict[str, Any]:
    """The parsed ``config.json`` of a folder polymodal saved a model in.

    Args:
        path: The folder.
        what: What the folder should hold, for messages ("captioner", "FLAVA model", ...).
        kinds: The accepted values of the config's ``kind``; ``None`` accepts any.

    Raises:
        CheckpointError: no such folder, no ``config.json``, invalid JSON, or another kind of model.
    """
    cfg_path = path / "config.json"
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a {what} folder (no such directory)")
    if not cfg_path.is_file():
        raise CheckpointError(f"{path}: not a {what} folder (no config.json)")
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object, got {type(cfg).__name__}")
    if kinds is not None and cfg.get("kind") not in kinds:
        raise CheckpointError(f"{cfg_path}: kind is {cfg.get('kind')!r}, expected {' or '.join(map(repr, kinds))}")
    return cfg


def save_checkpoint_dir(path: Path, *, weights: dict[str, Tensor], state: dict[str, Any], config: dict[str, Any]) -> None:
    """Write ``path/{model.safetensors,train_state.pt,config.json}`` as one atomic swap."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.mkdir(parents=True)
    save_weights(tmp / "model.safetensors", weights)
    torch.save(state, tmp / "train_state.pt")
    atomic_write_json(tmp / "config.json", config)
    old = path.with_name(f"{path.name}.old")
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def find_checkpoint_dir(path: Path) -> Path | None:
    """The checkpoint at ``path``, or the one a crash mid-swap left at ``path.old``."""
    path = Path(path)
    for p in (path, path.with_name(f"{path.name}.old")):
        if (p / "train_state.pt").is_file() and (p / "model.safetensors").is_file():
            return p
    return None


def load_train_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(Path(path) / "train_state.pt", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}/train_state.pt: cannot be read safely ({e})") from None
