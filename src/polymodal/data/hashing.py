"""A content hash of a record: equal hashes mean equal data, wherever the record came from.

Used to check that a round trip (manifest -> tar shards -> streaming read, in any number of workers)
loses, duplicates and changes nothing. The hash covers every modality (decoded pixels and samples, or the
raw file bytes when the record carries paths or bytes), the key, the label and the extra fields; it leaves
out ``Record.source``, which says where the copy came from and so differs between copies by design.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from polymodal.data.record import MODALITIES, Record
from polymodal.errors import ConfigError


def content_hash(record: Record) -> str:
    """SHA-256 (hex) of a record's modalities, key, label and extras.

    A decoded record and a record holding paths or bytes hash differently (pixels vs. file bytes), so
    compare records read the same way (both decoded, or both raw).

    Args:
        record: the record.

    Returns:
        64 hex digits.

    Raises:
        ConfigError: a modality holds a type that has no defined content (not an image, array, tensor,
            dataclass of those, str, bytes or path).
    """
    h = hashlib.sha256()
    for modality in MODALITIES:
        h.update(modality.encode())
        _update(h, getattr(record, modality))
    # JSON text, as stored in a shard's key.json: a tuple and the list it comes back as hash the same.
    meta = {"key": record.key, "label": record.label, "extra": record.extra}
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _update(h: Any, value: Any) -> None:
    """Feed one value to the hash, with a type tag so that different kinds of content never collide."""
    if value is None:
        h.update(b"<none>")
    elif isinstance(value, str):
        h.update(b"<str>" + value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, bytes | bytearray | memoryview):
        h.update(b"<bytes>" + bytes(value))
    elif isinstance(value, Path):
        h.update(b"<bytes>" + value.read_bytes())  # same as the bytes a raw shard read gives
    elif isinstance(value, Image.Image):
        h.update(f"<image {value.mode} {value.size}>".encode() + value.tobytes())
    elif isinstance(value, torch.Tensor):
        _update(h, value.detach().cpu().numpy())
    elif isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        h.update(f"<array {a.dtype.str} {a.shape}>".encode() + a.tobytes())
    elif isinstance(value, bool | int | float):
        h.update(f"<{type(value).__name__} {value!r}>".encode())
    elif isinstance(value, list | tuple):
        h.update(f"<seq {len(value)}>".encode())
        for item in value:
            _update(h, item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        h.update(f"<{type(value).__name__}>".encode())
        for f in dataclasses.fields(value):
            h.update(f.name.encode())
            _update(h, getattr(value, f.name))
    else:
        raise ConfigError(f"content_hash: no defined content for a {type(value).__name__}")
