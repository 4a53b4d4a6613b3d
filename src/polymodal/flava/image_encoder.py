"""FLAVA's image encoder: a ViT over patches with an image [CLS_I] token and a learned [MASK] patch.

Dosovitskiy et al. (2021): cut the image into ``P x P`` patches, embed each linearly (a ``Conv2d`` with stride
``P``), prepend a learned class token, add learned position embeddings, run a pre-norm transformer. For
masked image modelling a masked patch's embedding is replaced by one learned [MASK] vector before the
position embedding is added (BEiT, Bao et al. 2022, sec. 2.2; FLAVA's image encoder does the same), so
the encoder still sees every position and the multimodal encoder can read all of them. (MAE instead drops
masked patches from the encoder; that would not leave a full sequence for masked multimodal modelling.)

    images (B, C, S, S) -> patches (B, N, D) -> [CLS_I] + patches + pos -> encoder -> (B, 1 + N, D)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polymodal.errors import ShapeError
from polymodal.flava.config import FlavaConfig
from polymodal.nn import LearnedPositionalEmbedding, TransformerEncoder


class FlavaImageEncoder(nn.Module):
    """Pixels to ``(B, 1 + N, D)`` hidden states; position 0 is [CLS_I].

    Args:
        config: the model's sizes.
    """

    def __init__(self, config: FlavaConfig) -> None:
        super().__init__()
        self.config = c = config
        self.patch_embed = nn.Conv2d(c.channels, c.width, c.patch_size, stride=c.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(c.width))
        self.mask_token = nn.Parameter(torch.zeros(c.width))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        self.pos = LearnedPositionalEmbedding(c.width, 1 + c.num_patches)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = TransformerEncoder(
            c.width, c.heads, c.image_layers, mlp_ratio=c.mlp_ratio, dropout=c.dropout, norm_first=True
        )

    def forward(self, images: Tensor, *, patch_mask: Tensor | None = None) -> Tensor:
        """Encode images, replacing the masked patches' embeddings by the [MASK] vector.

        Args:
            images: ``(B, C, S, S)`` normalised pixels.
            patch_mask: optional ``(B, N)`` bool, ``True`` = masked patch.

        Returns:
            ``(B, 1 + N, D)``; index 0 is [CLS_I], index ``1 + n`` is patch ``n`` (row-major).
        """
        c = self.config
        if (
            not isinstance(images, Tensor)
            or images.dim() != 4
            or tuple(images.shape[1:]) != (c.channels, c.image_size, c.image_size)
            or not images.is_floating_point()
        ):
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ShapeError(
                f"images: expected float (B, {c.channels}, {c.image_size}, {c.image_size}), got {got}"
            )
        patches = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, N, D), row-major patches
        if patch_mask is not None:
            if patch_mask.shape != patches.shape[:2] or patch_mask.dtype != torch.bool:
                raise ShapeError(
                    f"patch_mask: expected bool {tuple(patches.shape[:2])}, got {patch_mask.dtype} {tuple(patch_mask.shape)}"
                )
            patches = torch.where(patch_mask[..., None], self.mask_token.to(patches.dtype), patches)
        cls = self.cls_token.to(patches.dtype).expand(patches.shape[0], 1, -1)  # (B, 1, D)
        tokens = self.pos(torch.cat([cls, patches], dim=1))  # (B, 1 + N, D)
        return self.encoder(self.drop(tokens))
