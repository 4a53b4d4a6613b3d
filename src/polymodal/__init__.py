"""polymodal: multimodal machine learning, offline-first.

    import polymodal
    model = polymodal.load("runs/demo")
    model.zeroshot(images, ["cat", "dog"])
"""

from polymodal.errors import CheckpointError, ConfigError, DataError, PolymodalError
from polymodal.models.io import load, save_model

__version__ = "0.1.0"
__all__ = ["CheckpointError", "ConfigError", "DataError", "PolymodalError", "__version__", "load", "save_model"]
