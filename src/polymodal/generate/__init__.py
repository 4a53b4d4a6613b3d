"""polymodal.generate: text-to-image by conditional flow matching with classifier-free guidance."""

from polymodal.generate.flow import flow_matching_loss, sample_images
from polymodal.generate.frechet import frechet_distance, tower_features
from polymodal.generate.model import FlowUNet, GeneratorConfig, from_pil, to_pil
from polymodal.generate.prompt_match import PromptMatch, colour_variants, prompt_match, recolour
from polymodal.generate.train import (
    GeneratorTrainConfig,
    GeneratorTrainResult,
    train_generator,
)

__all__ = [
    "FlowUNet",
    "GeneratorConfig",
    "GeneratorTrainConfig",
    "GeneratorTrainResult",
    "PromptMatch",
    "colour_variants",
    "flow_matching_loss",
    "frechet_distance",
    "from_pil",
    "prompt_match",
    "recolour",
    "sample_images",
    "to_pil",
    "tower_features",
    "train_generator",
]
