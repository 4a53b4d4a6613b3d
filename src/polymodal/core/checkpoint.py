"""Checkpoints that survive a crash and cannot run code.

Weights are safetensors; the optimizer, scheduler and RNG state go through ``torch.save`` and are read
back with ``torch.load(weights_only=True)``, so a checkpoint from an untrusted source cannot execute
anything. Every file is written to a temporary name and renamed into place; a checkpoint directory is
built beside the old one, flushed to disk (its files, then the folder) and swapped in, so a crash or a
power cut mid-write leaves the previous checkpoint whole. The temporary folder a killed save leaves
(as large as the checkpoint) is removed by the next save or resume.
"""

from __future__ import annotations

import glob
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
    _fsync_file(tmp)  # on disk before the rename makes it the file: a power cut must not leave it empty
    os.replace(tmp, path)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """Make the folder's entries (new names, renames) durable; Windows cannot open a folder, nor needs to."""
    if os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    """Write ``path/{model.safetensors,train_state.pt,config.json}`` as one atomic swap.

    The files and the new folder are fsync'ed before the swap, and the parent folder after it. The
    temporaries of earlier saves that were killed are removed first.
    """
    path = Path(path)
    remove_stale_temporaries(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.mkdir(parents=True)
    save_weights(tmp / "model.safetensors", weights)
    with open(tmp / "train_state.pt", "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    atomic_write_json(tmp / "config.json", config)
    _fsync_dir(tmp)
    old = path.with_name(f"{path.name}.old")
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the ``.NAME.*.tmp`` folders that saves of the checkpoint ``path`` left when killed.

    One process writes a run's checkpoints (rank 0 under torchrun), and it calls this before it
    saves, so a temporary found then belongs to a save that can no longer finish.

    Returns:
        The folders removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = [p for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp") if p.is_dir()]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)  # ranks that resume together may race to remove it
    return stale


def find_checkpoint_dir(path: Path) -> Path | None:
    """The checkpoint at ``path``, or the one a crash mid-swap left at ``path.old``.

    Called when a run resumes, it also removes the temporaries of saves that were killed
    (:func:`remove_stale_temporaries`): a resume is the first chance to.
    """
    path = Path(path)
    remove_stale_temporaries(path)
    for p in (path, path.with_name(f"{path.name}.old")):
        if (p / "train_state.pt").is_file() and (p / "model.safetensors").is_file():
            return p
    return None


def load_train_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(Path(path) / "train_state.pt", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}/train_state.pt: cannot be read safely ({e})") from None
