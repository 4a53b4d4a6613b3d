"""polymodal: multimodal machine learning, offline-first.

    import polymodal
    model = polymodal.load("runs/demo")          # any saved kind, or a Hugging Face CLIP folder
    model.zeroshot(images, ["cat", "dog"])
    polymodal.save(model, "runs/copy")
    fresh = polymodal.create("clip-tiny")        # a preset name, a preset file or a config

``import polymodal`` is light: the model API (:mod:`polymodal.models.io`, which imports torch) is imported on
first use of ``polymodal.load`` and its siblings, so ``polymodal --help`` answers without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from polymodal.errors import CheckpointError, ConfigError, DataError, PolymodalError

__version__ = "0.1.0"

# Public names reached lazily: name -> the module that defines it.
_LAZY: dict[str, str] = {"create": "polymodal.models.io", "load": "polymodal.models.io", "save": "polymodal.models.io"}

__all__ = ["CheckpointError", "ConfigError", "DataError", "PolymodalError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """``polymodal.load`` and the other model-API names, imported from their module on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'polymodal' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
