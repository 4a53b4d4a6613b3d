"""Image-text matching accuracy of the FLAVA-style model on held-out pairs.

The ITM head (:class:`~polymodal.flava.heads.MatchingHead` on [CLS_M]) says matched when its logit is
positive. Held-out pairs are scored as in pretraining (:mod:`polymodal.flava.pretrain`): within each batch
of ``B`` pairs, the ``B`` true pairs and, for every image, one unmatched text of the same batch, either
drawn from the softmax of the contrastive logits with the positive excluded (``"hard"``, ALBEF's mining,
:func:`~polymodal.losses.mine_hard_negatives`) or uniformly among the others (``"random"``); a text identical to the image's own caption is never
its negative. Accuracy is
over the ``2B`` pairs (half of them matched), so a constant answer scores 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from polymodal.errors import ConfigError, ShapeError
from polymodal.flava.data import same_text
from polymodal.flava.model import FlavaModel
from polymodal.losses import mine_hard_negatives


@dataclass
class MatchingAccuracy:
    """What :func:`evaluate_itm` returns.

    Attributes:
        accuracy: fraction of all scored pairs classified correctly (matched and unmatched equally many).
        matched: fraction of the true pairs with a positive logit.
        unmatched: fraction of the negative pairs with a logit <= 0.
        pairs: true pairs scored (as many negatives).
    """

    accuracy: float
    matched: float
    unmatched: float
    pairs: int


@torch.no_grad()
def evaluate_itm(
    model: FlavaModel,
    images: Tensor,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    negatives: Literal["hard", "random"] = "hard",
    batch_size: int = 64,
    seed: int = 0,
) -> MatchingAccuracy:
    """ITM accuracy on ``M`` held-out pairs, one negative text per image drawn within its batch.

    Args:
        model: the model (put in eval mode).
        images: ``(M, C, S, S)`` normalised pixels; row ``i`` pairs with text ``i``.
        input_ids: ``(M, T)`` token ids.
        attention_mask: ``(M, T)``.
        negatives: ``"hard"`` (from the contrastive similarities, as in training) or ``"random"``.
        batch_size: pairs per batch, the pool negatives come from (a last batch of one pair is dropped).
        seed: seeds the negative draws.
    """
    if negatives not in ("hard", "random"):
        raise ConfigError(f"evaluate_itm: negatives must be 'hard' or 'random', got {negatives!r}")
    m = images.shape[0]
    if input_ids.shape[0] != m or attention_mask.shape != input_ids.shape or m < 2 or batch_size < 2:
        raise ShapeError(
            f"evaluate_itm: need M >= 2 images with as many texts and batch_size >= 2; got {m} images, "
            f"ids {tuple(input_ids.shape)}, mask {tuple(attention_mask.shape)}, batch_size {batch_size}"
        )
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    hits_pos = hits_neg = count = 0
    for start in range(0, m, batch_size):
        stop = min(start + batch_size, m)
        if stop - start < 2:
            break
        ids, mask = input_ids[start:stop], attention_mask[start:stop]
        image_h = model.encode_image(images[start:stop])  # (B, 1 + N, D)
        text_h = model.encode_text(ids, mask)  # (B, 1 + T, D)
        if negatives == "hard":
            image_e = model.contrastive.image(image_h[:, 0])
            text_e = model.contrastive.text(text_h[:, 0])
            sim = model.contrastive.logit_scale.exp() * image_e @ text_e.T  # (B, B)
        else:
            sim = torch.zeros(stop - start, stop - start)  # uniform over the other texts
        neg = mine_hard_negatives(sim, same=same_text(ids, mask), generator=gen).text_for_image  # (B,)
        pos_logits = model.itm_head(model.fuse(image_h, text_h, mask)[:, 0])  # (B,)
        neg_logits = model.itm_head(model.fuse(image_h, text_h[neg], mask[neg])[:, 0])  # (B,)
        hits_pos += int((pos_logits > 0).sum())
        hits_neg += int((neg_logits <= 0).sum())
        count += stop - start
    return MatchingAccuracy(
        accuracy=(hits_pos + hits_neg) / (2 * count),
        matched=hits_pos / count,
        unmatched=hits_neg / count,
        pairs=count,
    )
