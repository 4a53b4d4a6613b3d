"""A content-addressed cache of frozen-trunk outputs (the LiT trick: encode each image/text once).

Entries live in a *namespace* (a hash of the tower, its weights, the preprocessing, the split point and
the augmentation view) and are keyed by the content hash of the input. Storage is append-only
safetensors chunks per namespace, each written to a temporary name and renamed into place, so a crash
while writing never leaves a half-written chunk that a later run would read.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor


def default_cache_dir() -> Path:
    """``$POLYMODAL_CACHE`` or ``$XDG_CACHE_HOME/polymodal`` (``~/.cache/polymodal``)."""
    env = os.environ.get("POLYMODAL_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "polymodal"


def text_content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def namespace_id(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:24]


class FeatureCache:
    """Tensors keyed by content hash within a namespace. ``root=None`` keeps everything in memory only."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = None if root is None else Path(root)
        self._mem: dict[str, dict[str, Tensor]] = {}

    def _dir(self, namespace: str) -> Path:
        assert self.root is not None
        return self.root / "features" / namespace

    def _load(self, namespace: str) -> dict[str, Tensor]:
        if namespace in self._mem:
            return self._mem[namespace]
        entries: dict[str, Tensor] = {}
        if self.root is not None and self._dir(namespace).is_dir():
            for chunk in sorted(self._dir(namespace).glob("*.safetensors")):
                try:
                    with safe_open(str(chunk), framework="pt") as f:
                        for key in f.keys():
                            entries[key] = f.get_tensor(key)
                except Exception:  # a foreign or damaged file: ignore it, its entries get recomputed
                    continue
        self._mem[namespace] = entries
        return entries

    def get(self, namespace: str, keys: list[str]) -> tuple[dict[str, Tensor], list[int]]:
        """The cached tensors for ``keys`` and the indices of the keys that are missing."""
        entries = self._load(namespace)
        found = {k: entries[k] for k in keys if k in entries}
        missing = [i for i, k in enumerate(keys) if k not in entries]
        return found, missing

    def put(self, namespace: str, items: dict[str, Tensor]) -> None:
        if not items:
            return
        entries = self._load(namespace)
        items = {k: v.detach().contiguous().clone() for k, v in items.items() if k not in entries}
        entries.update(items)
        if self.root is None or not items:
            return
        d = self._dir(namespace)
        d.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        tmp = d / f".{name}.tmp"
        save_file(items, str(tmp))
        os.replace(tmp, d / f"{name}.safetensors")

    def stack(self, namespace: str, keys: list[str]) -> Tensor:
        entries = self._load(namespace)
        return torch.stack([entries[k] for k in keys])
