"""polymodal.flava: a small FLAVA-style multimodal foundation model (Singh et al. 2022).

Image encoder (ViT with [CLS_I]), text encoder ([CLS_T]), multimodal encoder over [CLS_M] and both streams;
pretrained with a weighted sum of MLM, MIM (pixels), masked multimodal modelling, image-text matching with
hard negatives and the global contrastive loss (:mod:`polymodal.losses`, section 5); evaluated zero-shot and
by fine-tuning a VQA head on [CLS_M]. Saved and loaded with ``polymodal.save`` / ``polymodal.load``
(kinds ``"flava"`` and ``"flava-vqa"``). See docs/flava.md.
"""

from polymodal.flava.config import OBJECTIVES, FlavaConfig, PretrainConfig
from polymodal.flava.data import SPECIAL_IDS, build_vocabulary, pixels, same_text, tokenize
from polymodal.flava.heads import ContrastiveHead, MatchingHead, PredictionHead
from polymodal.flava.image_encoder import FlavaImageEncoder
from polymodal.flava.matching import MatchingAccuracy, evaluate_itm
from polymodal.flava.model import FlavaModel
from polymodal.flava.multimodal_encoder import FlavaMultimodalEncoder
from polymodal.flava.pretrain import FlavaObjectives, PretrainLosses, PretrainResult, param_groups, pretrain
from polymodal.flava.text_encoder import FlavaTextEncoder, text_padding_mask
from polymodal.flava.vqa import (
    VqaConfig,
    VqaResult,
    VqaTensors,
    evaluate_vqa,
    finetune_vqa,
    vqa_tensors,
)
from polymodal.flava.vqa_model import FlavaForVqa
from polymodal.flava.zeroshot import image_embeddings, zeroshot_classify_images

__all__ = [
    "OBJECTIVES",
    "SPECIAL_IDS",
    "ContrastiveHead",
    "FlavaConfig",
    "FlavaForVqa",
    "FlavaImageEncoder",
    "FlavaModel",
    "FlavaMultimodalEncoder",
    "FlavaObjectives",
    "FlavaTextEncoder",
    "MatchingAccuracy",
    "MatchingHead",
    "PredictionHead",
    "PretrainConfig",
    "PretrainLosses",
    "PretrainResult",
    "VqaConfig",
    "VqaResult",
    "VqaTensors",
    "build_vocabulary",
    "evaluate_itm",
    "evaluate_vqa",
    "finetune_vqa",
    "image_embeddings",
    "param_groups",
    "pixels",
    "pretrain",
    "same_text",
    "text_padding_mask",
    "tokenize",
    "vqa_tensors",
    "zeroshot_classify_images",
]
