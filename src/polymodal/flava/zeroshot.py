"""Zero-shot classification with the FLAVA-style model's unimodal contrastive embeddings.

As CLIP (Radford et al. 2021, sec. 3.1.4) and FLAVA's zero-shot evaluation: each class is the normalised mean
of the text embeddings ([CLS_T] through the text projection) of its prompts, and an image ([CLS_I] through
the image projection) gets the class of highest cosine similarity. Uses
:func:`polymodal.eval.zeroshot.build_zeroshot_classifier` and
:func:`~polymodal.eval.zeroshot.classification_metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from polymodal.errors import ShapeError
from polymodal.eval.zeroshot import ClassificationMetrics, classification_metrics, zeroshot_classify
from polymodal.flava.data import tokenize
from polymodal.flava.model import FlavaModel
from polymodal.models.prompts import build_zeroshot_classifier
from polymodal.text import WordTokenizer


@torch.no_grad()
def image_embeddings(model: FlavaModel, images: Tensor, *, batch_size: int = 256) -> Tensor:
    """Unit-norm ``(M, E)`` contrastive embeddings of ``(M, C, S, S)`` images, in batches.

    Args:
        model: the model.
        images: normalised pixels.
        batch_size: images per pass.
    """
    model.eval()
    return torch.cat(
        [model.image_embedding(images[s : s + batch_size]) for s in range(0, images.shape[0], batch_size)]
    )


@torch.no_grad()
def zeroshot_classify_images(
    model: FlavaModel,
    tokenizer: WordTokenizer,
    images: Tensor,
    labels: Tensor,
    *,
    classnames: Sequence[str],
    prompts: Mapping[str, Sequence[str]],
) -> ClassificationMetrics:
    """Top-1/top-5 and per-class recall of zero-shot classification.

    Args:
        model: the model.
        tokenizer: its vocabulary (words it never saw read as ``<unk>``).
        images: ``(M, C, S, S)`` normalised pixels.
        labels: ``(M,)`` true class indices into ``classnames``.
        classnames: the classes in label order.
        prompts: the prompt texts of each class (e.g. from :func:`polymodal.models.prompts.class_prompts`).
    """
    if labels.shape != (images.shape[0],):
        raise ShapeError(f"labels: expected ({images.shape[0]},), got {tuple(labels.shape)}")
    model.eval()

    def encode_text(texts: list[str]) -> Tensor:
        tokens = tokenize(tokenizer, texts, max_length=model.config.max_text_length)
        return model.text_embedding(tokens.input_ids, tokens.attention_mask)

    classifier = build_zeroshot_classifier(
        encode_text, list(classnames), {c: list(prompts[c]) for c in classnames}
    )
    logits = zeroshot_classify(image_embeddings(model, images), classifier)
    return classification_metrics(logits, labels)
