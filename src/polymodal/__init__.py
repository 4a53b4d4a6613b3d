"""polymodal: multimodal machine learning, offline-first.

    import polymodal
    model = polymodal.load("runs/demo")          # any saved kind, or a Hugging Face CLIP folder
    model.zeroshot(images, ["cat", "dog"])
    polymodal.save(model, "runs/copy")
    fresh = polymodal.create("clip-tiny")        # a preset name, a preset file or a config
"""

from polymodal.errors import CheckpointError, ConfigError, DataError, PolymodalError
from polymodal.models.io import create, load, save

__version__ = "0.1.0"
__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "PolymodalError",
    "__version__",
    "create",
    "load",
    "save",
]
