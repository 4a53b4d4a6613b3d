"""FLAVA-style pretraining: a weighted sum of five objectives over image-caption pairs, and its loop.

Per batch of ``B`` pairs (Singh et al. 2022, sec. 3.2, at toy scale and on paired data only; FLAVA also
runs MLM on text-only and MIM on image-only corpora):

1. **Global contrastive** (``contrastive``): clean images and texts through the unimodal encoders; symmetric
   InfoNCE between the projected [CLS_I] and [CLS_T] (:class:`~polymodal.losses.ClipLoss`).
2. **ITM** (``itm``): for every image a text and for every text an image is drawn as a hard negative from the
   softmax of the contrastive logits, the positive excluded (:func:`~polymodal.losses.mine_hard_negatives`,
   ALBEF), and so is every other row with the same caption (those are matches, not negatives; the
   contrastive similarities rank them first, and labelling them unmatched stalls ITM at ln 2). To keep the multimodal encoder's batch at ``2B``, even rows contribute (image, its hard negative
   text) and odd rows (hard negative image, text): ``B`` matched and ``B`` unmatched pairs. The match logit
   is read off [CLS_M].
3. **MLM** (``mlm``): BERT's 15 % masking with 80/10/10 corruption of the caption; the text encoder's outputs
   predict the original words.
4. **MIM** (``mim``): ``image_mask_ratio`` of the patches replaced by [MASK]; the image encoder's outputs at
   the masked patches predict their per-patch normalised pixels (MAE's target; FLAVA predicts dVAE codes).
5. **MMM** (``mmm``): the masked image and the masked caption through the multimodal encoder; separate
   heads predict the masked words and pixels from the joint outputs (text and image parts weigh the same).

The total is ``sum_k w_k L_k`` with the weights of :class:`~polymodal.flava.config.PretrainConfig`; an
objective of weight 0 is not computed at all (and its passes are skipped). With the contrastive weight at 0
the projections stay at their initialisation, so ITM's "hard" negatives are then close to uniform.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from polymodal.errors import ShapeError
from polymodal.flava.config import OBJECTIVES, PretrainConfig
from polymodal.flava.data import SPECIAL_IDS, same_text, tokenize
from polymodal.flava.model import FlavaModel
from polymodal.losses import (
    ClipLoss,
    ImageTextMatchingLoss,
    MaskedImageModelingLoss,
    MaskedLanguageModelingLoss,
    MaskedMultimodalModelingLoss,
    mask_patches,
    mask_tokens,
    mine_hard_negatives,
    patchify,
)
from polymodal.text import WordTokenizer
from polymodal.train.loop import Checkpointer, log, param_groups, progress_bar, warmup_cosine

__all__ = ["FlavaObjectives", "PretrainLosses", "PretrainResult", "param_groups", "pretrain"]


@dataclass
class PretrainLosses:
    """The output of :class:`FlavaObjectives`.

    Attributes:
        total: the weighted sum, the scalar to backpropagate.
        parts: the unweighted loss of each objective that was computed (weight > 0), by name.
    """

    total: Tensor
    parts: dict[str, Tensor]


class FlavaObjectives(nn.Module):
    """The weighted sum of FLAVA's objectives on one batch of pairs (see the module docstring).

    Args:
        config: masking rates and loss weights.
        special_ids: token ids masking never selects (padding, unknown, begin/end).
    """

    def __init__(self, config: PretrainConfig, *, special_ids: tuple[int, ...] = SPECIAL_IDS) -> None:
        super().__init__()
        self.config = config
        self.special_ids = special_ids
        self.contrastive = ClipLoss()
        self.itm = ImageTextMatchingLoss()
        self.mlm = MaskedLanguageModelingLoss()
        self.mim = MaskedImageModelingLoss(norm_pix=True)
        self.mmm = MaskedMultimodalModelingLoss(norm_pix=True)

    def forward(
        self,
        model: FlavaModel,
        images: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> PretrainLosses:
        """Compute every objective of positive weight on the batch and their weighted sum.

        Args:
            model: the model (its heads supply the predictions).
            images: ``(B, C, S, S)`` normalised pixels.
            input_ids: ``(B, T)`` caption ids; row ``i`` describes image ``i``.
            attention_mask: ``(B, T)``.
            generator: random source of the masks and the negative draws.
        """
        w = self.config.weights
        c = model.config
        b = images.shape[0]
        if input_ids.shape[0] != b or b < 2:
            raise ShapeError(
                f"FlavaObjectives: need B >= 2 images and as many captions; got {b} and {input_ids.shape[0]}"
            )
        parts: dict[str, Tensor] = {}

        if w["contrastive"] > 0 or w["itm"] > 0:
            image_h = model.encode_image(images)  # (B, 1 + N, D)
            text_h = model.encode_text(input_ids, attention_mask)  # (B, 1 + T, D)
            image_e = model.contrastive.image(image_h[:, 0])  # (B, E)
            text_e = model.contrastive.text(text_h[:, 0])  # (B, E)
            scale = model.contrastive.logit_scale
            if w["contrastive"] > 0:
                parts["contrastive"] = self.contrastive(image_e, text_e, scale)
            if w["itm"] > 0:
                parts["itm"] = self._itm(
                    model, image_h, text_h, input_ids, attention_mask, scale.exp() * image_e @ text_e.T, generator
                )

        masked_text = masked_image = None
        patches = patchify(images, c.patch_size)  # (B, N, P*P*C)
        if w["mlm"] > 0 or w["mmm"] > 0:
            masked_text = mask_tokens(
                input_ids, attention_mask=attention_mask, mask_token_id=c.mask_token_id, vocab_size=c.vocab_size,
                special_ids=self.special_ids, mask_prob=self.config.text_mask_prob, generator=generator,
            )  # fmt: skip
            text_m = model.encode_text(masked_text.input_ids, attention_mask)  # (B, 1 + T, D)
            if w["mlm"] > 0:
                # Only the selected positions go through the head (the loss ignores the others anyway).
                logits = model.mlm_head(text_m[:, 1:][masked_text.mask])  # (M, V)
                parts["mlm"] = self.mlm(logits, masked_text.labels[masked_text.mask])
        if w["mim"] > 0 or w["mmm"] > 0:
            masked_image = mask_patches(
                b,
                c.num_patches,
                mask_ratio=self.config.image_mask_ratio,
                generator=generator,
                device=images.device,
            )  # (B, N)
            image_m = model.encode_image(images, patch_mask=masked_image)  # (B, 1 + N, D)
            if w["mim"] > 0:
                parts["mim"] = self.mim(model.mim_head(image_m[:, 1:]), patches, masked_image)
        if w["mmm"] > 0:
            assert masked_text is not None and masked_image is not None
            fused = model.fuse(image_m, text_m, attention_mask)  # (B, 2 + N + 1 + T, D)
            enc = model.multimodal_encoder
            text_logits = model.mmm_text_head(fused[:, enc.text_slice()][masked_text.mask])  # (M, V)
            patch_pred = model.mmm_image_head(fused[:, enc.image_slice()])  # (B, N, P*P*C)
            parts["mmm"] = self.mmm(
                text_logits, masked_text.labels[masked_text.mask], patch_pred, patches, masked_image
            ).loss

        total = sum((w[name] * loss for name, loss in parts.items()), start=images.new_zeros(()))
        return PretrainLosses(total=total, parts=parts)

    def _itm(
        self,
        model: FlavaModel,
        image_h: Tensor,
        text_h: Tensor,
        input_ids: Tensor,
        attention_mask: Tensor,
        logits: Tensor,
        generator: torch.Generator | None,
    ) -> Tensor:
        """ITM over ``B`` matched pairs and ``B`` hard-negative pairs (see the module docstring)."""
        b = image_h.shape[0]
        negatives = mine_hard_negatives(logits, same=same_text(input_ids, attention_mask), generator=generator)
        rows = torch.arange(b, device=image_h.device)
        even = rows % 2 == 0
        # Even rows: image i with a hard negative text; odd rows: a hard negative image with text i.
        neg_image = torch.where(even, rows, negatives.image_for_text)  # (B,)
        neg_text = torch.where(even, negatives.text_for_image, rows)  # (B,)
        image_pairs = torch.cat([image_h, image_h[neg_image]])  # (2B, 1 + N, D)
        text_pairs = torch.cat([text_h, text_h[neg_text]])  # (2B, 1 + T, D)
        mask_pairs = torch.cat([attention_mask, attention_mask[neg_text]])  # (2B, T)
        match_logits = model.itm_head(model.fuse(image_pairs, text_pairs, mask_pairs)[:, 0])  # (2B,)
        labels = torch.cat([torch.ones(b), torch.zeros(b)]).to(match_logits.device)
        return self.itm(match_logits, labels)


@dataclass
class PretrainResult:
    """What :func:`pretrain` returns.

    Attributes:
        history: one dict per epoch: ``epoch``, ``loss`` (mean weighted total), the mean of every computed
            objective, ``seconds`` (cumulative), plus whatever ``on_epoch`` returned.
        seconds: wall time of the whole run.
        steps: optimiser steps taken.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0


def pretrain(
    model: FlavaModel,
    images: Tensor,
    captions: list[list[str]],
    tokenizer: WordTokenizer,
    config: PretrainConfig,
    *,
    on_epoch: Callable[[int], dict[str, float]] | None = None,
    progress: bool = False,
    checkpoint: Path | None = None,
    resume: bool = False,
) -> PretrainResult:
    """Pretrain ``model`` in place on image-caption pairs with the weighted objectives.

    Every epoch visits every image once in a seeded random order, each time with one of its captions drawn
    at random (the caption variants are augmentation). AdamW without decay on biases, norms and embeddings,
    linear warm-up then cosine decay (:mod:`polymodal.train.loop`), gradients clipped at norm 1, the
    contrastive scale clamped at ``max_logit_scale`` (CLIP). Shuffling, caption choice and masks draw from
    a generator seeded with ``config.seed``; the model's initialisation is the caller's.

    Args:
        model: the model, trained in place.
        images: ``(M, C, S, S)`` normalised pixels.
        captions: ``M`` lists of caption variants (each non-empty).
        tokenizer: the vocabulary of the model's ids.
        config: the recipe and loss weights.
        on_epoch: called after each epoch with its number (1-based), e.g. to measure validation metrics;
            its dict is merged into that epoch's history entry.
        progress: a bar per epoch on stderr (``config.log_every`` lines go to stderr too).
        checkpoint: a folder to write a resumable checkpoint to after every epoch
            (:class:`polymodal.train.loop.Checkpointer`).
        resume: continue from ``checkpoint`` exactly as if the run had not stopped (same ``config``).
    """
    if len(captions) != images.shape[0] or any(not c for c in captions):
        raise ShapeError(
            f"pretrain: {images.shape[0]} images need as many non-empty caption lists, got {len(captions)}"
        )
    if images.shape[0] < 2:
        raise ShapeError("pretrain: need at least 2 image-caption pairs")
    gen = torch.Generator().manual_seed(config.seed)
    objectives = FlavaObjectives(config)
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.98))
    batch = min(config.batch_size, images.shape[0])
    per_epoch = images.shape[0] // batch  # drop the last partial batch: contrastive wants full batches
    total_steps = per_epoch * config.epochs
    scheduler = warmup_cosine(
        optimizer,
        warmup_steps=int(config.warmup_fraction * total_steps),
        total_steps=total_steps,
        min_ratio=0.01,
    )
    saver = Checkpointer(checkpoint, settings=asdict(config), kind="flava-pretrain-checkpoint", optimizer=optimizer,
                         scheduler=scheduler, generators={"data": gen})
    result, first = PretrainResult(), 1
    if resume:
        saved = saver.restore(model)
        result = PretrainResult(history=list(saved["history"]), seconds=float(saved["seconds"]),
                                steps=int(saved["steps"]))
        first = len(result.history) + 1
    start = time.perf_counter() - result.seconds
    for epoch in range(first, config.epochs + 1):
        model.train()
        order = torch.randperm(images.shape[0], generator=gen)
        sums: dict[str, float] = {}
        for step in progress_bar(range(per_epoch), desc=f"epoch {epoch}/{config.epochs}", enabled=progress):
            idx = order[step * batch : (step + 1) * batch]
            texts = [
                captions[i][int(torch.randint(len(captions[i]), (1,), generator=gen))] for i in idx.tolist()
            ]
            tokens = tokenize(tokenizer, texts, max_length=model.config.max_text_length)
            out = objectives(model, images[idx], tokens.input_ids, tokens.attention_mask, generator=gen)
            optimizer.zero_grad(set_to_none=True)
            out.total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                model.contrastive.logit_scale.clamp_(0.0, config.max_logit_scale)
            result.steps += 1
            sums["loss"] = sums.get("loss", 0.0) + float(out.total.detach())
            for name, value in out.parts.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            if config.log_every and result.steps % config.log_every == 0:
                log(f"  step {result.steps}/{total_steps} loss {float(out.total.detach()):.4f}")
        entry: dict[str, float] = {"epoch": float(epoch)}
        entry.update({k: v / max(1, per_epoch) for k, v in sums.items() if k == "loss" or k in OBJECTIVES})
        if on_epoch is not None:
            model.eval()
            entry.update(on_epoch(epoch))
        entry["seconds"] = time.perf_counter() - start
        result.history.append(entry)
        if not all(math.isfinite(v) for v in entry.values()):
            raise FloatingPointError(f"pretrain: non-finite loss at epoch {epoch}: {entry}")
        saver.save(model, {"history": result.history, "seconds": entry["seconds"], "steps": result.steps})
    result.seconds = time.perf_counter() - start
    model.eval()
    return result
