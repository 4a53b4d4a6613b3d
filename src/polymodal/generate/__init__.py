"""polymodal.generate: text-to-image by conditional flow matching with classifier-free guidance."""

from polymodal.generate.flow import flow_matching_loss, sample_images
from polymodal.generate.frechet import frechet_distance, tower_features
from polymodal.generate.model import FlowUNet, GeneratorConfig, load_generator, save_generator
from polymodal.generate.train import (
    GeneratorTrainConfig,
    GeneratorTrainResult,
    from_pil,
    to_pil,
    train_generator,
)

__all__ = [
    "FlowUNet",
    "GeneratorConfig",
    "GeneratorTrainConfig",
    "GeneratorTrainResult",
    "flow_matching_loss",
    "frechet_distance",
    "from_pil",
    "load_generator",
    "sample_images",
    "save_generator",
    "to_pil",
    "tower_features",
    "train_generator",
]
