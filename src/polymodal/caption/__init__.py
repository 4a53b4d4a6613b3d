"""polymodal.caption: image captioning (EfficientNet grid -> transformer decoder) and its decoders."""

from polymodal.caption.decode import Decoded, beam_search, greedy_decode, length_penalty, sample_decode
from polymodal.caption.model import CaptionConfig, Captioner, extract_grids
from polymodal.caption.train import (
    CaptionTrainConfig,
    CaptionTrainResult,
    caption_loss,
    train_captioner,
)

__all__ = [
    "CaptionConfig",
    "CaptionTrainConfig",
    "CaptionTrainResult",
    "Captioner",
    "Decoded",
    "beam_search",
    "caption_loss",
    "extract_grids",
    "greedy_decode",
    "length_penalty",
    "sample_decode",
    "train_captioner",
]
