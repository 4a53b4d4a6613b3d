"""The one tokenizer interface of polymodal, and the plumbing its implementations share.

:class:`TextTokenizer` is what a text tower, a collate function or a trainer asks for:
``encode(texts, *, max_length) -> TokenBatch``, ``decode(ids)``, ``vocab_size`` and ``pad_id``.
:class:`SpecialTokenTokenizer` implements ``encode`` once for every tokenizer here (clean the texts, split
them into token ids, then :func:`~polymodal.text.batch.pack`), so they all follow the same rules
(:mod:`polymodal.text.batch`); a subclass only says how one text becomes ids.
:class:`Tokenize` binds ``max_length``, giving the ``texts -> TokenBatch`` callable that data-layer code
(``polymodal.data.collate``) takes as a parameter instead of importing a tokenizer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from polymodal.text.batch import TextStats, TokenBatch, check_max_length, clean_texts, pack


@runtime_checkable
class TextTokenizer(Protocol):
    """What a text tower needs from a tokenizer."""

    @property
    def vocab_size(self) -> int:
        """Number of token ids (embedding rows)."""
        ...

    @property
    def pad_id(self) -> int:
        """The id used for padding."""
        ...

    def encode(self, texts: Sequence[str | bytes], *, max_length: int) -> TokenBatch:
        """Tokenize, truncate to ``max_length`` keeping the special tokens, right-pad to the longest."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids, special tokens dropped."""
        ...


class SpecialTokenTokenizer(ABC):
    """Base of the tokenizers here: ``[BOS] tokens [EOT]`` rows built by :func:`~polymodal.text.batch.pack`.

    A subclass sets :attr:`bos_id`, :attr:`eot_id` and :attr:`pad_id` and implements :meth:`token_ids`
    (one clean text -> its ids without special tokens), :attr:`vocab_size` and :meth:`decode`.

    Attributes:
        stats: Running counts of texts encoded, bad UTF-8 replaced and texts truncated.
    """

    bos_id: int
    eot_id: int
    pad_id: int

    def __init__(self) -> None:
        self.stats = TextStats()

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce (a text tower's embedding needs at least this many rows)."""

    @abstractmethod
    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Ids of each (already clean) text, without special tokens and untruncated."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` with special tokens dropped."""

    def encode(
        self, texts: Sequence[str | bytes], *, max_length: int, pad_to_context: bool = False
    ) -> TokenBatch:
        """Tokenize ``texts`` into ``[BOS] ... [EOT]`` rows, truncated keeping EOT and right-padded.

        Args:
            texts: Strings, or bytes; bad UTF-8 is replaced, counted in :attr:`TokenBatch.replaced` and
                :attr:`stats`.
            max_length: Longest row, BOS and EOT included; at least 2.
            pad_to_context: Pad every row to ``max_length`` rather than to the longest row.

        Raises:
            ConfigError: ``max_length`` below 2.
            DataError: ``texts`` is one string, or holds something other than str or bytes.
        """
        check_max_length(max_length)
        clean, replaced = clean_texts(texts, self.stats)
        batch = pack(
            self.token_ids(clean),
            max_length=max_length,
            bos_id=self.bos_id,
            eot_id=self.eot_id,
            pad_id=self.pad_id,
            pad_to_context=pad_to_context,
            replaced=replaced,
        )
        self.stats.truncated += batch.truncated
        return batch


@dataclass
class Tokenize:
    """A tokenizer with ``max_length`` bound: a ``text_fn`` for :func:`polymodal.data.collate.collate_records`.

    Args:
        tokenizer: Any :class:`TextTokenizer`.
        max_length: Longest sequence, special tokens included.
    """

    tokenizer: TextTokenizer
    max_length: int

    @property
    def pad_id(self) -> int:
        """The tokenizer's padding id (collate fills rows without text with it)."""
        return self.tokenizer.pad_id

    def __call__(self, texts: Sequence[str | bytes]) -> TokenBatch:
        return self.tokenizer.encode(texts, max_length=self.max_length)
