"""Inputs of the FLAVA-style model: pixels at the model's size, and one word vocabulary for all its texts.

Images become ``(B, 3, S, S)`` float tensors scaled to ``[-1, 1]`` (``(x - 0.5) / 0.5``); the MIM target is
computed from these same pixels. Texts go through a :class:`~polymodal.text.WordTokenizer`, whose
``<pad>``, ``<unk>``, ``<bos>`` and ``<eos>`` are the special ids masking leaves alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from polymodal.errors import ConfigError, ShapeError
from polymodal.text import TokenBatch, WordTokenizer

SPECIAL_IDS: tuple[int, ...] = (WordTokenizer.PAD, WordTokenizer.UNK, WordTokenizer.BOS, WordTokenizer.EOS)


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
    arrays = []
    for im in images:
        rgb = im.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
        arrays.append(np.asarray(rgb, dtype=np.uint8))
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, S, S) in [0, 1]
    return (x - 0.5) / 0.5


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
