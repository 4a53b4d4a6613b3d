"""FLAVA's multimodal encoder: one transformer over [CLS_M], the image stream and the text stream.

Singh et al. (2022, sec. 3.1): the unimodal hidden states are linearly projected into the multimodal
encoder's space, concatenated with a learned [CLS_M] in front, and fused by self-attention over the whole
sequence, so every text token can attend to every patch and back. A learned type embedding per stream
(an addition here, as in ViLT) tells the two streams apart beyond their unimodal position embeddings.

    [CLS_M] + proj_I(h_I: [CLS_I], patches) + proj_T(h_T: [CLS_T], tokens) -> encoder -> (B, 1 + (1+N) + (1+T), D)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polymodal.errors import ShapeError
from polymodal.flava.config import FlavaConfig
from polymodal.flava.text_encoder import text_padding_mask
from polymodal.nn import TransformerEncoder


class FlavaMultimodalEncoder(nn.Module):
    """Fuses ``(B, 1 + N, D)`` image and ``(B, 1 + T, D)`` text hidden states.

    Output positions: 0 is [CLS_M]; ``1 .. 1 + N`` the image stream ([CLS_I] then the patches, see
    :meth:`image_slice`); the rest the text stream ([CLS_T] then the tokens, :meth:`text_slice`).

    Args:
        config: the model's sizes.
    """

    def __init__(self, config: FlavaConfig) -> None:
        super().__init__()
        self.config = c = config
        self.image_proj = nn.Linear(c.width, c.width)
        self.text_proj = nn.Linear(c.width, c.width)
        self.cls_token = nn.Parameter(torch.zeros(c.width))
        self.type_embed = nn.Parameter(torch.zeros(2, c.width))  # row 0: image stream, row 1: text stream
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.type_embed, std=0.02)
        self.encoder = TransformerEncoder(
            c.width, c.heads, c.multimodal_layers, mlp_ratio=c.mlp_ratio, dropout=c.dropout, norm_first=True
        )

    def image_slice(self) -> slice:
        """Positions of the patches (not [CLS_I]) in the output."""
        return slice(2, 2 + self.config.num_patches)

    def text_slice(self) -> slice:
        """Positions of the text tokens (not [CLS_T]) in the output."""
        return slice(3 + self.config.num_patches, None)

    def forward(self, image_hidden: Tensor, text_hidden: Tensor, attention_mask: Tensor) -> Tensor:
        """Fuse the two streams.

        Args:
            image_hidden: ``(B, 1 + N, D)`` from the image encoder.
            text_hidden: ``(B, 1 + T, D)`` from the text encoder.
            attention_mask: ``(B, T)`` of the text, 1 on real tokens, 0 on padding (masked out of attention).

        Returns:
            ``(B, 2 + N + 1 + T, D)``.
        """
        c = self.config
        if image_hidden.dim() != 3 or image_hidden.shape[1:] != (1 + c.num_patches, c.width):
            raise ShapeError(
                f"image_hidden: expected (B, {1 + c.num_patches}, {c.width}), got {tuple(image_hidden.shape)}"
            )
        if (
            text_hidden.dim() != 3
            or text_hidden.shape[0] != image_hidden.shape[0]
            or text_hidden.shape[2] != c.width
        ):
            raise ShapeError(
                f"text_hidden: expected ({image_hidden.shape[0]}, 1 + T, {c.width}), got {tuple(text_hidden.shape)}"
            )
        if attention_mask.shape != (text_hidden.shape[0], text_hidden.shape[1] - 1):
            raise ShapeError(
                f"attention_mask: expected {(text_hidden.shape[0], text_hidden.shape[1] - 1)}, got {tuple(attention_mask.shape)}"
            )
        b = image_hidden.shape[0]
        image = self.image_proj(image_hidden) + self.type_embed[0]  # (B, 1 + N, D)
        text = self.text_proj(text_hidden) + self.type_embed[1]  # (B, 1 + T, D)
        cls = self.cls_token.to(image.dtype).expand(b, 1, -1)  # (B, 1, D)
        x = torch.cat([cls, image, text], dim=1)  # (B, 1 + (1 + N) + (1 + T), D)
        visible = torch.zeros(b, 2 + c.num_patches, dtype=torch.bool, device=x.device)  # [CLS_M] + image
        padding = torch.cat([visible, text_padding_mask(attention_mask)], dim=1)  # (B, L)
        return self.encoder(x, key_padding_mask=padding)
