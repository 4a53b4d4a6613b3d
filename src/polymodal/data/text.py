"""One tokenizer interface for every text tower, and the rules for truncation, padding and bad bytes.

:class:`TextTokenizer` is the protocol: ``encode(texts, *, max_length) -> TokenBatch`` plus
``vocab_size`` and ``pad_id``. Two implementations live here:

- :class:`HFTokenizer` wraps a Hugging Face ``tokenizers.Tokenizer`` (the MiniLM WordPiece tokenizer via
  :meth:`HFTokenizer.minilm`, or any ``tokenizer.json``);
- :class:`WordTokenizer` is a word-level vocabulary built from a corpus (for short, closed-vocabulary
  texts such as the VQA questions of :mod:`polymodal.data.shapes`).

The CLIP BPE and trained tokenizers of :mod:`polymodal.text` name the length ``context_length``;
:class:`ContextLengthAdapter` puts them behind this protocol without changing their ids.

Rules, the same for every implementation:

- **Truncation** keeps the special tokens: a text becomes ``[CLS] tokens [SEP]`` (WordPiece) or
  ``<bos> tokens <eos>`` (word-level) with at most ``max_length`` ids in all, by dropping tokens from
  the end of the text, never the closing special token.
- **Padding** is on the right, with ``pad_id``, to the longest text of the batch; ``attention_mask`` is
  1 on real tokens and 0 on padding.
- **Bad UTF-8**: ``bytes`` are decoded with ``errors="replace"`` (each invalid byte sequence becomes
  U+FFFD), and ``str`` holding lone surrogates (bytes smuggled in by ``surrogateescape``) are repaired the
  same way. Nothing raises; the tokenizer's :class:`TextStats` counts the texts and characters affected.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from polymodal.errors import CheckpointError, ConfigError, DataError
from polymodal.towers.minilm import TokenBatch

__all__ = [
    "CleanText",
    "ContextLengthAdapter",
    "HFTokenizer",
    "TextStats",
    "TextTokenizer",
    "TokenBatch",
    "Tokenize",
    "WordTokenizer",
    "clean_text",
    "pad_right",
]


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
        """Tokenize, truncate to ``max_length`` keeping special tokens, right-pad to the longest."""
        ...


@dataclass
class Tokenize:
    """A tokenizer with ``max_length`` bound: the ``text_fn`` of :func:`polymodal.data.collate.collate_records`.

    Args:
        tokenizer: any :class:`TextTokenizer`.
        max_length: longest sequence, special tokens included.
    """

    tokenizer: TextTokenizer
    max_length: int

    @property
    def pad_id(self) -> int:
        """The tokenizer's padding id (collate fills rows without text with it)."""
        return self.tokenizer.pad_id

    def __call__(self, texts: Sequence[str | bytes]) -> TokenBatch:
        return self.tokenizer.encode(texts, max_length=self.max_length)


class ContextLengthAdapter:
    """A tokenizer whose ``encode`` takes ``context_length`` (``polymodal.text.Tokenizer``) as a :class:`TextTokenizer`.

    ``encode(texts, max_length=n)`` is ``tokenizer.encode(texts, context_length=n)``: the same ids and
    mask; its truncation keeps BOS and EOT, as the rules here ask.

    Args:
        tokenizer: an object with ``vocab_size``, ``pad_id`` and ``encode(texts, *, context_length)``.
    """

    def __init__(self, tokenizer: Any) -> None:
        for name in ("vocab_size", "pad_id", "encode"):
            if not hasattr(tokenizer, name):
                raise ConfigError(f"ContextLengthAdapter: {type(tokenizer).__name__} has no {name!r}")
        self.tokenizer = tokenizer

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.vocab_size)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_id)

    def encode(self, texts: Sequence[str | bytes], *, max_length: int) -> TokenBatch:
        """Tokenize with ``context_length=max_length``."""
        out = self.tokenizer.encode(texts, context_length=max_length)
        return TokenBatch(input_ids=out.input_ids, attention_mask=out.attention_mask)


# ---------------------------------------------------------------------------------------------------
# Bad bytes
# ---------------------------------------------------------------------------------------------------


@dataclass
class TextStats:
    """Running counts over a tokenizer's ``encode`` calls.

    Attributes:
        texts: texts encoded.
        bad_utf8: texts that held invalid UTF-8 (bytes) or lone surrogates (str).
        replaced: characters replaced by U+FFFD in those texts.
        truncated: texts cut to ``max_length``.
    """

    texts: int = 0
    bad_utf8: int = 0
    replaced: int = 0
    truncated: int = 0


@dataclass(frozen=True)
class CleanText:
    """A text that is valid Unicode, and how many characters had to be replaced to get it."""

    text: str
    replaced: int


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value: str | bytes | bytearray) -> CleanText:
    """Turn bytes or a str with lone surrogates into valid text; never raises for str or bytes input.

    Args:
        value: ``bytes`` (decoded as UTF-8 with ``errors="replace"``) or ``str``. A ``str`` read with
            ``errors="surrogateescape"`` carries each undecodable byte as a surrogate U+DC80..U+DCFF; those
            bytes are recovered and decoded the same way, so the result does not depend on which reader
            produced the text.

    Returns:
        The text and the count of replacement characters introduced.

    Raises:
        DataError: ``value`` is neither ``str`` nor bytes.
    """
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
        text = raw.decode("utf-8", errors="replace")
        # U+FFFD already in valid input is not a replacement we made
        return CleanText(text, text.count("\ufffd") - _valid_fffd(raw))
    if not isinstance(value, str):
        raise DataError(None, f"text: expected str or bytes, got {type(value).__name__}")
    if not _SURROGATE.search(value):
        return CleanText(value, 0)
    try:
        raw = value.encode("utf-8", errors="surrogateescape")  # smuggled bytes back to bytes
    except UnicodeEncodeError:  # surrogates outside U+DC80..U+DCFF: replace each one
        text, count = _SURROGATE.subn("\ufffd", value)
        return CleanText(text, count)
    text = raw.decode("utf-8", errors="replace")
    return CleanText(text, text.count("\ufffd") - value.count("\ufffd"))


def _valid_fffd(raw: bytes) -> int:
    return raw.count("\ufffd".encode())


def _clean_all(texts: Sequence[str | bytes], stats: TextStats) -> list[str]:
    if isinstance(texts, str | bytes):
        raise DataError(None, "texts: expected a list of texts, got one text")
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str | bytes | bytearray):
            raise DataError(None, f"texts[{i}]: expected str or bytes, got {type(t).__name__}")
        clean = clean_text(t)
        if clean.replaced or (isinstance(t, str) and clean.text != t):
            stats.bad_utf8 += 1
            stats.replaced += clean.replaced
        out.append(clean.text)
    stats.texts += len(out)
    return out


def pad_right(rows: Sequence[Sequence[int]], *, pad_id: int) -> TokenBatch:
    """Right-pad id lists to the longest: ``(B, T)`` ids and a 1/0 attention mask.

    Args:
        rows: token ids per text.
        pad_id: the padding id.
    """
    longest = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return TokenBatch(input_ids=ids, attention_mask=mask)


def _check_max_length(max_length: int, least: int) -> None:
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < least:
        raise ConfigError(f"max_length: must be an int >= {least} (the special tokens), got {max_length!r}")


# ---------------------------------------------------------------------------------------------------
# Hugging Face tokenizers (WordPiece for MiniLM, or any tokenizer.json)
# ---------------------------------------------------------------------------------------------------


class HFTokenizer:
    """A :class:`TextTokenizer` over a Hugging Face ``tokenizers.Tokenizer``.

    The tokenizer is copied, so its padding and truncation settings here never leak into (or from) the
    caller's object: padding is done by :func:`pad_right`, truncation by the library with the post-processor's
    special tokens accounted for (``[CLS]`` and ``[SEP]`` survive).

    Args:
        tokenizer: the tokenizer (its normalizer, pre-tokenizer, model and post-processor are used as they are).
        pad_id: padding id; ``None`` looks up the tokenizer's padding settings, then ``"[PAD]"``.
        name: what to call it in messages (a file path, a model name).
    """

    def __init__(self, tokenizer: Any, *, pad_id: int | None = None, name: str = "tokenizer") -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_str(tokenizer.to_str())
        self._tok.no_padding()
        self.name = name
        if pad_id is None:
            padding = tokenizer.padding
            pad_id = padding["pad_id"] if padding else self._tok.token_to_id("[PAD]")
        if pad_id is None:
            raise ConfigError(f"{name}: no padding id (no padding settings and no [PAD] token); pass pad_id")
        self._pad_id = int(pad_id)
        processor = self._tok.post_processor
        self.num_special = int(processor.num_special_tokens_to_add(False)) if processor is not None else 0
        self.stats = TextStats()
        self._truncation: int | None = None

    @classmethod
    def from_file(cls, path: str | Path, *, pad_id: int | None = None) -> HFTokenizer:
        """Read a ``tokenizer.json``.

        Raises:
            CheckpointError: missing or unreadable file.
        """
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception on missing or malformed files
            raise CheckpointError(f"{path}: cannot read tokenizer ({err})") from err
        return cls(tok, pad_id=pad_id, name=str(path))

    @classmethod
    def minilm(cls) -> HFTokenizer:
        """The all-MiniLM-L6-v2 WordPiece tokenizer (uncased BERT vocabulary) from its weights package."""
        from polymodal.towers.minilm import default_model_dir

        return cls.from_file(default_model_dir() / "tokenizer.json")

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    @property
    def pad_id(self) -> int:
        return self._pad_id

    def encode(self, texts: Sequence[str | bytes], *, max_length: int) -> TokenBatch:
        """Tokenize texts (see the module docstring for the rules).

        Args:
            texts: str or bytes; bad UTF-8 is replaced and counted in :attr:`stats`.
            max_length: longest sequence, special tokens included; at least ``num_special``.

        Returns:
            ``TokenBatch`` of ``(B, T)`` int64 tensors, ``T <= max_length``.
        """
        _check_max_length(max_length, max(1, self.num_special))
        clean = _clean_all(texts, self.stats)
        if not clean:
            empty = torch.zeros(0, 0, dtype=torch.long)
            return TokenBatch(empty, empty.clone())
        if self._truncation != max_length:
            self._tok.enable_truncation(max_length)
            self._truncation = max_length
        encodings = self._tok.encode_batch(clean)
        self.stats.truncated += sum(1 for e in encodings if e.overflowing)
        return pad_right([e.ids for e in encodings], pad_id=self._pad_id)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids, special tokens dropped."""
        return str(self._tok.decode(list(ids), skip_special_tokens=True))


# ---------------------------------------------------------------------------------------------------
# Word-level vocabulary
# ---------------------------------------------------------------------------------------------------

_WORD = re.compile(r"\w+|[^\w\s]")  # words, and each punctuation mark on its own


class WordTokenizer:
    """Word-level tokenizer: ``<bos> w1 w2 ... <eos>``, unknown words as ``<unk>``.

    Ids 0-3 are ``<pad>``, ``<unk>``, ``<bos>``, ``<eos>``; the words follow, most frequent first (ties
    alphabetical), so a vocabulary built from the same corpus is the same on every machine.

    Args:
        words: the vocabulary, without the special tokens.
        lowercase: lower-case texts before splitting.
    """

    SPECIALS: tuple[str, ...] = ("<pad>", "<unk>", "<bos>", "<eos>")
    PAD, UNK, BOS, EOS = 0, 1, 2, 3

    def __init__(self, words: Sequence[str], *, lowercase: bool = True) -> None:
        self.lowercase = lowercase
        self.itos: list[str] = list(self.SPECIALS)
        seen = set(self.itos)
        for w in words:
            if not isinstance(w, str) or not w or w in seen:
                raise ConfigError(f"WordTokenizer: words must be distinct non-empty strings, got {w!r}")
            seen.add(w)
            self.itos.append(w)
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.stats = TextStats()

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
            corpus: texts.
            min_freq: fewest occurrences for a word to get its own id.
            max_size: most words kept (specials not counted); ``None`` keeps all.
            lowercase: lower-case before counting (and when encoding).
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
        return len(self.itos)

    @property
    def pad_id(self) -> int:
        return self.PAD

    def tokens(self, text: str | bytes) -> list[str]:
        """The words of one text as this tokenizer splits them."""
        return self._split(clean_text(text).text, self.lowercase)

    def encode(self, texts: Sequence[str | bytes], *, max_length: int) -> TokenBatch:
        """``<bos> words <eos>``, words cut from the end to fit ``max_length``, right-padded.

        Args:
            texts: str or bytes; bad UTF-8 is replaced and counted in :attr:`stats`.
            max_length: longest sequence including ``<bos>`` and ``<eos>``; at least 2.
        """
        _check_max_length(max_length, 2)
        rows = []
        for text in _clean_all(texts, self.stats):
            ids = [self.stoi.get(w, self.UNK) for w in self._split(text, self.lowercase)]
            if len(ids) > max_length - 2:
                ids = ids[: max_length - 2]
                self.stats.truncated += 1
            rows.append([self.BOS, *ids, self.EOS])
        return pad_right(rows, pad_id=self.PAD)

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
            CheckpointError: not a word tokenizer's state.
        """
        if (
            not isinstance(state, dict)
            or state.get("kind") != "word"
            or not isinstance(state.get("words"), list)
        ):
            raise CheckpointError(
                f"not a WordTokenizer state: {json.dumps(state)[:80] if isinstance(state, dict) else state!r}"
            )
        return cls(state["words"], lowercase=bool(state.get("lowercase", True)))
