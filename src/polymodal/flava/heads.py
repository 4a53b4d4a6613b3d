"""Heads on FLAVA's encoders: MLM, MIM pixels, ITM, and the contrastive projections with their scale.

The MLM and MIM heads follow BERT's prediction head (Devlin et al. 2019; ``BertLMPredictionHead``): a dense
layer, GELU and LayerNorm, then the output layer (token logits, or the ``P * P * C`` normalised pixels of a
patch, MAE's decoder target). The ITM head is BERT's pooler (dense + tanh on [CLS_M]) and one match logit.
The contrastive projections map [CLS_I] and [CLS_T] into the joint space, L2-normalised, with CLIP's
learned log inverse temperature.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PredictionHead(nn.Module):
    """BERT's prediction head: ``Linear -> GELU -> LayerNorm -> Linear(out_dim)``.

    Args:
        width: input width ``D``.
        out_dim: output width (vocabulary size for MLM, ``P * P * C`` for MIM).
    """

    def __init__(self, width: int, out_dim: int) -> None:
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width))
        self.out = nn.Linear(width, out_dim)

    def forward(self, hidden: Tensor) -> Tensor:
        """``(..., D)`` hidden states to ``(..., out_dim)`` predictions.

        Args:
            hidden: hidden states of the positions to predict.
        """
        return self.out(self.transform(hidden))


class MatchingHead(nn.Module):
    """ITM head: BERT's pooler (dense + tanh) on [CLS_M], then one matched/unmatched logit.

    Args:
        width: input width ``D``.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.pooler = nn.Sequential(nn.Linear(width, width), nn.Tanh())
        self.out = nn.Linear(width, 1)

    def forward(self, cls_hidden: Tensor) -> Tensor:
        """``(B, D)`` multimodal [CLS] states to ``(B,)`` match logits.

        Args:
            cls_hidden: [CLS_M] outputs.
        """
        return self.out(self.pooler(cls_hidden)).squeeze(-1)


class ContrastiveHead(nn.Module):
    """Image and text projections into a joint space plus CLIP's learned ``logit_scale = log(1/tau)``.

    Args:
        width: encoder width ``D``.
        embed_dim: joint-space width ``E``.
        init_temperature: ``tau`` at initialisation.
    """

    def __init__(self, width: int, embed_dim: int, *, init_temperature: float) -> None:
        super().__init__()
        self.image_proj = nn.Linear(width, embed_dim)
        self.text_proj = nn.Linear(width, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def image(self, cls_image: Tensor) -> Tensor:
        """``(B, D)`` [CLS_I] states to unit-norm ``(B, E)`` embeddings.

        Args:
            cls_image: image class-token outputs.
        """
        return F.normalize(self.image_proj(cls_image), dim=-1)

    def text(self, cls_text: Tensor) -> Tensor:
        """``(B, D)`` [CLS_T] states to unit-norm ``(B, E)`` embeddings.

        Args:
            cls_text: text class-token outputs.
        """
        return F.normalize(self.text_proj(cls_text), dim=-1)
