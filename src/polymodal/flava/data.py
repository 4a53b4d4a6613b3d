"""Inputs of the FLAVA-style model: pixels at the model's size, and one word vocabulary for all its texts.

Images become ``(B, 3, S, S)`` float tensors scaled to ``[-1, 1]`` (``(x - 0.5) / 0.5``); the MIM target is
computed from these same pixels. Texts go through a :class:`~polymodal.text.WordTokenizer`, whose
``<pad>``, ``<unk>``, ``<bos>`` and ``<eos>`` are the special ids masking leaves alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from PIL import Image
from torch import Tensor

from polymodal.data.pixels import ImagePreprocess, Normalization
from polymodal.errors import ConfigError, ShapeError
from polymodal.text import TokenBatch, WordTokenizer

SPECIAL_IDS: tuple[int, ...] = (WordTokenizer.PAD, WordTokenizer.UNK, WordTokenizer.BOS, WordTokenizer.EOS)


def image_preprocess(size: int, channels: int = 3) -> ImagePreprocess:
    """The model's pixels: the whole image resized to ``size x size`` (Lanczos), ``(x / 255 - 0.5) / 0.5``.

    Args:
        size: the model's input side.
        channels: 3 (RGB) or 1 (grey).
    """
    half = (0.5,) * channels
    return ImagePreprocess(size=size, fit="squash", resample="lanczos", channels=channels,
                           normalization=Normalization(half, half, scale=255.0))


def pixels(images: Sequence[Image.Image], *, size: int) -> Tensor:
    """RGB images resized to ``size`` x ``size`` (Lanczos) as a ``(B, 3, S, S)`` float32 tensor in ``[-1, 1]``.

    Args:
        images: PIL images (any mode; converted to RGB).
        size: output side in pixels.
    """
    if size <= 0:
        raise ConfigError(f"pixels: size must be positive, got {size}")
    if not images:
        raise ShapeError("pixels: no images")
    return image_preprocess(size)(images)


def build_vocabulary(texts: Iterable[str], *, min_freq: int = 1) -> WordTokenizer:
    """A word vocabulary of ``texts`` (deterministic: most frequent first, ties alphabetical).

    Args:
        texts: every text the model should be able to spell (training captions, training questions).
        min_freq: fewest occurrences for a word to get its own id; rarer words read as ``<unk>``.
    """
    return WordTokenizer.build(texts, min_freq=min_freq)


def tokenize(tokenizer: WordTokenizer, texts: Sequence[str], *, max_length: int) -> TokenBatch:
    """``<bos> words <eos>`` ids, right-padded, with attention masks.

    Args:
        tokenizer: the vocabulary.
        texts: the texts.
        max_length: longest sequence, specials included (the model's ``max_text_length``).
    """
    return tokenizer.encode(list(texts), max_length=max_length)


def same_text(input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """``(B, B)`` bool, ``True`` where texts ``i`` and ``j`` have the same tokens (``i == j`` included).

    Two rows of a batch with one caption are a matched pair across rows too, so neither may serve as the
    other's negative for image-text matching (:func:`polymodal.losses.mine_hard_negatives`'s ``same``).

    Args:
        input_ids: ``(B, T)`` token ids.
        attention_mask: ``(B, T)``, 1 on real tokens; padding positions are ignored.
    """
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise ShapeError(
            f"same_text: expected (B, T) ids and mask, got {tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
        )
    ids = input_ids.masked_fill(~attention_mask.bool(), -1)  # (B, T), padding all alike
    return (ids[:, None, :] == ids[None, :, :]).all(dim=-1)  # (B, B)
