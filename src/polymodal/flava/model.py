"""The FLAVA-style model: image, text and multimodal encoders with the pretraining heads.

Singh et al. (2022), "FLAVA: A Foundational Language And Vision Alignment Model", fig. 2, at toy size: a
ViT image encoder with [CLS_I], a text transformer with [CLS_T], and a multimodal transformer over
[CLS_M] + both projected streams. Heads: MLM and MIM on the unimodal encoders, separate MLM and MIM heads
for masked multimodal modelling on the joint encoder, ITM on [CLS_M], and the contrastive projections of
[CLS_I] / [CLS_T]. The objectives themselves live in :mod:`polymodal.losses` and are combined in
:mod:`polymodal.flava.pretrain`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image
from torch import Tensor, nn

from polymodal.data.pixels import ImagePreprocess
from polymodal.errors import ConfigError
from polymodal.flava.config import FlavaConfig
from polymodal.flava.data import image_preprocess, tokenize
from polymodal.flava.heads import ContrastiveHead, MatchingHead, PredictionHead
from polymodal.flava.image_encoder import FlavaImageEncoder
from polymodal.flava.multimodal_encoder import FlavaMultimodalEncoder
from polymodal.flava.text_encoder import FlavaTextEncoder
from polymodal.text import TokenBatch, WordTokenizer


class FlavaModel(nn.Module):
    """Encoders and heads; every method is one stage, so the objectives can mix them.

    Args:
        config: sizes.
        tokenizer: the word vocabulary (``vocab_size`` ids); kept with the model so a saved folder is
            self-contained. Optional while building, needed by :meth:`tokenize` and ``polymodal.save``.
    """

    kind = "flava"

    def __init__(self, config: FlavaConfig, *, tokenizer: WordTokenizer | None = None) -> None:
        super().__init__()
        self.config = c = config
        self.extra: dict[str, Any] = {}  # config.json entries besides the model's own (polymodal.save / load)
        self.tokenizer: WordTokenizer | None = None
        if tokenizer is not None:
            self.set_tokenizer(tokenizer)
        self.image_encoder = FlavaImageEncoder(c)
        self.text_encoder = FlavaTextEncoder(c)
        self.multimodal_encoder = FlavaMultimodalEncoder(c)
        self.mlm_head = PredictionHead(c.width, c.vocab_size)
        self.mim_head = PredictionHead(c.width, c.patch_dim)
        self.mmm_text_head = PredictionHead(c.width, c.vocab_size)
        self.mmm_image_head = PredictionHead(c.width, c.patch_dim)
        self.itm_head = MatchingHead(c.width)
        self.contrastive = ContrastiveHead(c.width, c.embed_dim, init_temperature=c.init_temperature)

    @property
    def image_preprocess(self) -> ImagePreprocess:
        """How this model turns images into pixels (:func:`polymodal.flava.data.image_preprocess`)."""
        return image_preprocess(self.config.image_size, self.config.channels)

    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        """Images (any mode, any size) to normalised pixels ``(B, C, S, S)``, by :attr:`image_preprocess`."""
        return self.image_preprocess(images)

    def set_tokenizer(self, tokenizer: WordTokenizer) -> None:
        """Use ``tokenizer``; it must spell exactly ``config.vocab_size`` ids.

        Args:
            tokenizer: the vocabulary.
        """
        if tokenizer.vocab_size != self.config.vocab_size:
            raise ConfigError(
                f"FlavaModel: the tokenizer has {tokenizer.vocab_size} ids, config.vocab_size is {self.config.vocab_size}"
            )
        self.tokenizer = tokenizer

    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        """Texts to ``<bos> words <eos>`` ids and attention masks of at most ``max_text_length``.

        Args:
            texts: the texts.
        """
        if self.tokenizer is None:
            raise ConfigError("FlavaModel: no tokenizer; pass one when building the model or call set_tokenizer")
        return tokenize(self.tokenizer, texts, max_length=self.config.max_text_length)
    def encode_image(self, images: Tensor, *, patch_mask: Tensor | None = None) -> Tensor:
        """``(B, C, S, S)`` pixels to ``(B, 1 + N, D)``, index 0 = [CLS_I].

        Args:
            images: normalised pixels.
            patch_mask: optional ``(B, N)`` bool of masked patches.
        """
        return self.image_encoder(images, patch_mask=patch_mask)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """``(B, T)`` ids to ``(B, 1 + T, D)``, index 0 = [CLS_T].

        Args:
            input_ids: token ids (``config.mask_token_id`` = [MASK]).
            attention_mask: 1 on real tokens, 0 on padding.
        """
        return self.text_encoder(input_ids, attention_mask)

    def fuse(self, image_hidden: Tensor, text_hidden: Tensor, attention_mask: Tensor) -> Tensor:
        """The multimodal encoder's ``(B, 2 + N + 1 + T, D)`` output, index 0 = [CLS_M].

        Args:
            image_hidden: ``(B, 1 + N, D)`` from :meth:`encode_image`.
            text_hidden: ``(B, 1 + T, D)`` from :meth:`encode_text`.
            attention_mask: ``(B, T)`` of the text.
        """
        return self.multimodal_encoder(image_hidden, text_hidden, attention_mask)

    def image_embedding(self, images: Tensor) -> Tensor:
        """Unit-norm ``(B, E)`` contrastive embeddings of images (from [CLS_I]).

        Args:
            images: normalised pixels ``(B, C, S, S)``.
        """
        return self.contrastive.image(self.encode_image(images)[:, 0])

    def text_embedding(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Unit-norm ``(B, E)`` contrastive embeddings of texts (from [CLS_T]).

        Args:
            input_ids: ``(B, T)`` token ids.
            attention_mask: ``(B, T)``.
        """
        return self.contrastive.text(self.encode_text(input_ids, attention_mask)[:, 0])

    def multimodal_cls(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """The ``(B, D)`` [CLS_M] state of image-text pairs (for ITM and downstream heads such as VQA).

        Args:
            images: ``(B, C, S, S)`` pixels.
            input_ids: ``(B, T)`` token ids.
            attention_mask: ``(B, T)``.
        """
        fused = self.fuse(
            self.encode_image(images), self.encode_text(input_ids, attention_mask), attention_mask
        )
        return fused[:, 0]
