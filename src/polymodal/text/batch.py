"""Token batches, and the rules every tokenizer of :mod:`polymodal.text` follows for bad bytes,
truncation and padding.

- **Bad UTF-8**: ``bytes`` are decoded as UTF-8 with ``errors="replace"`` (each invalid sequence becomes
  U+FFFD). A ``str`` holding lone surrogates (what ``errors="surrogateescape"`` readers such as
  ``os.fsdecode`` leave for undecodable bytes) has those bytes recovered and decoded the same way, so the
  result does not depend on which reader produced the text. Nothing raises for ``str`` or ``bytes``;
  :func:`clean_text` reports how many characters were replaced, :attr:`TokenBatch.replaced` how many texts
  of a batch needed it, and each tokenizer's :class:`TextStats` keeps running counts.
- **Special tokens**: a text becomes ``[BOS] tokens... [EOT]`` (``[CLS] ... [SEP]`` for BERT's WordPiece,
  ``<|startoftext|> ... <|endoftext|>`` for CLIP, ``<bos> ... <eos>`` for the word-level vocabulary).
- **Truncation** to ``max_length`` ids drops tokens from the end of the text, never the closing token:
  CLIP-style towers read the sentence off the EOT position (Radford et al. 2021, sec. 2.4), and BERT's
  tokenizer keeps ``[SEP]`` the same way.
- **Padding** is on the right, with ``pad_id``, to the longest row of the batch (or to ``max_length`` with
  ``pad_to_context``; an empty batch is ``(0, max_length)``, so any text tower accepts it).
  ``attention_mask`` is 1 on real tokens (BOS and EOT included) and 0 on padding.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from polymodal.errors import ConfigError, DataError

_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class TokenBatch:
    """Token ids of a batch of texts.

    Attributes:
        input_ids: ``(B, T)`` int64 ids, ``[BOS] ... [EOT] [PAD]...``.
        attention_mask: ``(B, T)`` int64, 1 for real tokens (BOS and EOT included), 0 for padding.
        replaced: How many texts held invalid UTF-8 (or lone surrogates) that was replaced by U+FFFD.
        truncated: How many texts were cut to fit ``max_length``.
    """

    input_ids: Tensor
    attention_mask: Tensor
    replaced: int = 0
    truncated: int = 0

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


@dataclass(frozen=True)
class CleanText:
    """A text that is valid Unicode, and how many characters had to be replaced to get it."""

    text: str
    replaced: int


@dataclass
class TextStats:
    """Running counts over a tokenizer's ``encode`` calls.

    Attributes:
        texts: Texts encoded.
        bad_utf8: Texts that held invalid UTF-8 (bytes) or lone surrogates (str).
        replaced: Characters replaced by U+FFFD in those texts.
        truncated: Texts cut to ``max_length``.
    """

    texts: int = 0
    bad_utf8: int = 0
    replaced: int = 0
    truncated: int = 0


def clean_text(value: str | bytes | bytearray) -> CleanText:
    """Turn bytes, or a str with lone surrogates, into valid text; never raises for str or bytes input.

    Args:
        value: ``bytes`` (decoded as UTF-8 with ``errors="replace"``) or ``str``. A ``str`` read with
            ``errors="surrogateescape"`` carries each undecodable byte as a surrogate U+DC80..U+DCFF; those
            bytes are recovered and decoded the same way. Other lone surrogates become one U+FFFD each.

    Returns:
        The text and the count of replacement characters introduced (a U+FFFD already present in valid
        input is not counted).

    Raises:
        DataError: ``value`` is neither ``str`` nor bytes.
    """
    if isinstance(value, bytes | bytearray):
        raw = bytes(value)
        text = raw.decode("utf-8", errors="replace")
        return CleanText(text, text.count("\ufffd") - raw.count("\ufffd".encode()))
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


def clean_texts(texts: Sequence[str | bytes], stats: TextStats | None = None) -> tuple[list[str], int]:
    """:func:`clean_text` over a batch: the valid texts, and how many of them needed a replacement.

    Args:
        texts: A list (or other sequence) of ``str`` or ``bytes``; a single string is refused.
        stats: Counts to update (texts, bad UTF-8 texts, replaced characters), if given.

    Raises:
        DataError: ``texts`` is one string, or an item is neither ``str`` nor bytes (its index is named).
    """
    if isinstance(texts, str | bytes):
        raise DataError(None, "texts: expected a list of texts, got one text")
    out: list[str] = []
    bad = chars = 0
    for i, t in enumerate(texts):
        if not isinstance(t, str | bytes | bytearray):
            raise DataError(None, f"texts[{i}]: expected str or bytes, got {type(t).__name__}")
        clean = clean_text(t)
        if clean.replaced or (isinstance(t, str) and clean.text != t):
            bad += 1
            chars += clean.replaced
        out.append(clean.text)
    if stats is not None:
        stats.texts += len(out)
        stats.bad_utf8 += bad
        stats.replaced += chars
    return out, bad


def check_max_length(max_length: int, least: int = 2) -> None:
    """Refuse a ``max_length`` that cannot hold the special tokens.

    Args:
        max_length: Longest row, special tokens included.
        least: The smallest usable value (2: BOS and EOT).

    Raises:
        ConfigError: ``max_length`` is not an int, or is below ``least``.
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < least:
        raise ConfigError(f"max_length: must be an int >= {least} (the special tokens), got {max_length!r}")


def pack(
    bodies: Sequence[Sequence[int]],
    *,
    max_length: int,
    bos_id: int,
    eot_id: int,
    pad_id: int,
    pad_to_context: bool = False,
    replaced: int = 0,
) -> TokenBatch:
    """Wrap token bodies in BOS/EOT, truncate keeping EOT, right-pad, and stack them.

    Args:
        bodies: Per text, its token ids without special tokens.
        max_length: Longest row, BOS and EOT included; at least 2.
        bos_id: Id of the start token.
        eot_id: Id of the end-of-text token.
        pad_id: Id written into padding positions.
        pad_to_context: Pad every row to ``max_length`` instead of the longest row.
        replaced: Passed through to :attr:`TokenBatch.replaced`.
    """
    check_max_length(max_length)
    keep = max_length - 2
    rows = [[bos_id, *list(body)[:keep], eot_id] for body in bodies]
    truncated = sum(1 for body in bodies if len(body) > keep)
    width = max_length if pad_to_context or not rows else max(len(r) for r in rows)
    # One tensor from padded lists: a per-row copy costs more than the tokenization of a short caption.
    ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in rows], dtype=torch.long).view(len(rows), width)
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)
    mask = (torch.arange(width) < lengths[:, None]).long()  # (B, T)
    return TokenBatch(ids, mask, replaced=replaced, truncated=truncated)
