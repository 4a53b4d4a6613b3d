"""A word-level vocabulary built from a corpus, for short closed-vocabulary texts (the VQA questions of
:mod:`polymodal.data.shapes`, emoji captions) where a subword tokenizer buys nothing.

A text becomes ``<bos> w1 w2 ... <eos>``, words and punctuation marks split apart, unknown words as
``<unk>``; truncation, padding and bad bytes follow :mod:`polymodal.text.batch`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from polymodal.errors import CheckpointError, ConfigError
from polymodal.text.batch import clean_text
from polymodal.text.protocol import SpecialTokenTokenizer

_WORD = re.compile(r"\w+|[^\w\s]")  # words, and each punctuation mark on its own


class WordTokenizer(SpecialTokenTokenizer):
    """Word-level tokenizer: ``<bos> w1 w2 ... <eos>``, unknown words as ``<unk>``.

    Ids 0-3 are ``<pad>``, ``<unk>``, ``<bos>``, ``<eos>``; the words follow, most frequent first (ties
    alphabetical), so a vocabulary built from the same corpus is the same on every machine.

    Args:
        words: The vocabulary, without the special tokens.
        lowercase: Lower-case texts before splitting.
    """

    SPECIALS: tuple[str, ...] = ("<pad>", "<unk>", "<bos>", "<eos>")
    PAD, UNK, BOS, EOS = 0, 1, 2, 3
    pad_id, bos_id, eot_id = PAD, BOS, EOS

    def __init__(self, words: Sequence[str], *, lowercase: bool = True) -> None:
        super().__init__()
        self.lowercase = lowercase
        self.itos: list[str] = list(self.SPECIALS)
        seen = set(self.itos)
        for w in words:
            if not isinstance(w, str) or not w or w in seen:
                raise ConfigError(f"WordTokenizer: words must be distinct non-empty strings, got {w!r}")
            seen.add(w)
            self.itos.append(w)
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(
        cls,
        corpus: Iterable[str | bytes],
        *,
        min_freq: int = 1,
        max_size: int | None = None,
        lowercase: bool = True,
    ) -> WordTokenizer:
        """Vocabulary of the words seen at least ``min_freq`` times, the ``max_size`` most frequent.

        Args:
            corpus: Texts.
            min_freq: Fewest occurrences for a word to get its own id.
            max_size: Most words kept (specials not counted); ``None`` keeps all.
            lowercase: Lower-case before counting (and when encoding).
        """
        if min_freq < 1 or (max_size is not None and max_size < 0):
            raise ConfigError(
                f"WordTokenizer.build: need min_freq >= 1 and max_size >= 0, got {min_freq}, {max_size}"
            )
        counts: Counter[str] = Counter()
        for text in corpus:
            counts.update(cls._split(clean_text(text).text, lowercase))
        ranked = sorted(
            (w for w, c in counts.items() if c >= min_freq and w not in cls.SPECIALS),
            key=lambda w: (-counts[w], w),
        )
        return cls(ranked[:max_size] if max_size is not None else ranked, lowercase=lowercase)

    @staticmethod
    def _split(text: str, lowercase: bool) -> list[str]:
        return _WORD.findall(text.lower() if lowercase else text)

    @property
    def vocab_size(self) -> int:
        """Number of ids: the specials and the words."""
        return len(self.itos)

    def tokens(self, text: str | bytes) -> list[str]:
        """The words of one text as this tokenizer splits them."""
        return self._split(clean_text(text).text, self.lowercase)

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Word ids of each text (``<unk>`` for words not in the vocabulary), without ``<bos>``/``<eos>``.

        Args:
            texts: Valid Unicode texts (see :func:`~polymodal.text.batch.clean_text`).
        """
        return [[self.stoi.get(w, self.UNK) for w in self._split(t, self.lowercase)] for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        """Words of ids joined by spaces; special tokens dropped."""
        return " ".join(self.itos[i] for i in ids if i >= len(self.SPECIALS) and i < len(self.itos))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state (for checkpoints)."""
        return {"kind": "word", "lowercase": self.lowercase, "words": self.itos[len(self.SPECIALS) :]}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> WordTokenizer:
        """Inverse of :meth:`to_dict`.

        Raises:
            CheckpointError: Not a word tokenizer's state.
        """
        if not isinstance(state, dict) or state.get("kind") != "word" or not isinstance(state.get("words"), list):
            raise CheckpointError(
                f"not a WordTokenizer state: {json.dumps(state)[:80] if isinstance(state, dict) else state!r}"
            )
        return cls(state["words"], lowercase=bool(state.get("lowercase", True)))
