"""FLAVA's text encoder: a transformer over token ids with a text [CLS_T] token and a [MASK] embedding.

A learned [CLS_T] vector is prepended to the tokenizer's ids (whatever its own specials are), so every
stream has its own class token as in the lecture's figure of FLAVA. The token embedding has
``vocab_size + 1`` rows: the last is [MASK] (id ``config.mask_token_id``), so masked language modelling needs
no change to the tokenizer. Padding is masked out of attention.

    ids (B, T) -> [CLS_T] + embed(ids) + pos -> encoder (padding masked) -> (B, 1 + T, D)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from polymodal.errors import ShapeError
from polymodal.flava.config import FlavaConfig
from polymodal.nn import LearnedPositionalEmbedding, TransformerEncoder


def text_padding_mask(attention_mask: Tensor) -> Tensor:
    """Key padding mask ``(B, 1 + T)`` of the encoder's output, ``True`` = padding; [CLS_T] is never padding.

    Args:
        attention_mask: ``(B, T)``, 1 on real tokens, 0 on padding.
    """
    cls = torch.zeros(attention_mask.shape[0], 1, dtype=torch.bool, device=attention_mask.device)
    return torch.cat([cls, ~attention_mask.bool()], dim=1)  # (B, 1 + T)


class FlavaTextEncoder(nn.Module):
    """Token ids to ``(B, 1 + T, D)`` hidden states; position 0 is [CLS_T].

    Args:
        config: the model's sizes.
    """

    def __init__(self, config: FlavaConfig) -> None:
        super().__init__()
        self.config = c = config
        self.token_embed = nn.Embedding(c.vocab_size + 1, c.width)  # last row: [MASK]
        nn.init.trunc_normal_(self.token_embed.weight, std=0.02)
        self.cls_token = nn.Parameter(torch.zeros(c.width))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.pos = LearnedPositionalEmbedding(c.width, 1 + c.max_text_length)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = TransformerEncoder(
            c.width, c.heads, c.text_layers, mlp_ratio=c.mlp_ratio, dropout=c.dropout, norm_first=True
        )

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Encode a padded batch of token ids.

        Args:
            input_ids: ``(B, T)`` ids in ``[0, vocab_size]`` (``vocab_size`` = [MASK]), ``T <= max_text_length``.
            attention_mask: ``(B, T)``, 1 on real tokens, 0 on padding.

        Returns:
            ``(B, 1 + T, D)``; index 0 is [CLS_T], index ``1 + t`` is token ``t``.
        """
        c = self.config
        if input_ids.dim() != 2 or input_ids.is_floating_point():
            raise ShapeError(
                f"input_ids: expected integer (B, T), got {input_ids.dtype} {tuple(input_ids.shape)}"
            )
        if attention_mask.shape != input_ids.shape:
            raise ShapeError(
                f"attention_mask {tuple(attention_mask.shape)} must match input_ids {tuple(input_ids.shape)}"
            )
        if input_ids.shape[1] > c.max_text_length:
            raise ShapeError(
                f"input_ids: {input_ids.shape[1]} tokens exceed max_text_length={c.max_text_length}"
            )
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) > c.vocab_size):
            raise ShapeError(f"input_ids: ids must lie in [0, {c.vocab_size}] ({c.vocab_size} = [MASK])")
        tokens = self.token_embed(input_ids)  # (B, T, D)
        cls = self.cls_token.to(tokens.dtype).expand(tokens.shape[0], 1, -1)  # (B, 1, D)
        x = self.pos(torch.cat([cls, tokens], dim=1))  # (B, 1 + T, D)
        return self.encoder(self.drop(x), key_padding_mask=text_padding_mask(attention_mask))
