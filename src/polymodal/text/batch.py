"""Token batches and the one rule every tokenizer here follows for truncation and padding.

A text becomes ``[BOS] tokens... [EOT]``. Too long a text is cut in the middle of its tokens, never at the
ends: the EOT token survives truncation, because CLIP-style text towers read the sentence embedding off the
EOT position (Radford et al. 2021, sec. 2.4). Rows are right-padded with ``pad_id`` to the longest row of
the batch (or to ``context_length``), and ``attention_mask`` marks the real tokens with 1.

Texts may arrive as ``bytes`` in any state: they are decoded as UTF-8 with ``errors="replace"`` (U+FFFD for
each bad sequence), and ``str`` values holding lone surrogates (what ``surrogateescape`` leaves) are repaired
the same way, so a bad caption costs a replacement character, never a crash.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from polymodal.errors import ConfigError

_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class TokenBatch:
    """Token ids of a batch of texts.

    Attributes:
        input_ids: ``(B, T)`` int64 ids, ``[BOS] ... [EOT] [PAD]...``.
        attention_mask: ``(B, T)`` int64, 1 for real tokens (BOS and EOT included), 0 for padding.
        replaced: How many texts needed invalid UTF-8 replaced before tokenizing.
    """

    input_ids: Tensor
    attention_mask: Tensor
    replaced: int = 0

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def clean_text(text: str | bytes) -> tuple[str, bool]:
    """Return ``text`` as valid UTF-8 ``str`` and whether anything had to be replaced.

    Args:
        text: A ``str`` (possibly with lone surrogates) or raw ``bytes``.
    """
    if isinstance(text, bytes):
        out = text.decode("utf-8", errors="replace")
        return out, out.encode("utf-8") != text
    if not isinstance(text, str):
        raise ConfigError(f"tokenizer: texts must be str or bytes; got {type(text).__name__}")
    fixed = _SURROGATE.sub("\ufffd", text)  # lone surrogates cannot be encoded: one U+FFFD for each
    return fixed, fixed != text


def pack(
    bodies: Sequence[Sequence[int]],
    *,
    context_length: int,
    bos_id: int,
    eot_id: int,
    pad_id: int,
    pad_to_context: bool = False,
    replaced: int = 0,
) -> TokenBatch:
    """Wrap token bodies in BOS/EOT, truncate keeping EOT, right-pad, and stack them.

    Args:
        bodies: Per text, its token ids without special tokens.
        context_length: Longest row, BOS and EOT included; at least 2.
        bos_id: Id of the start token.
        eot_id: Id of the end-of-text token.
        pad_id: Id written into padding positions.
        pad_to_context: Pad every row to ``context_length`` instead of the longest row.
        replaced: Passed through to :attr:`TokenBatch.replaced`.
    """
    if context_length < 2:
        raise ConfigError(f"tokenizer: context_length must be >= 2 (BOS and EOT); got {context_length}")
    rows = [[bos_id, *list(body)[: context_length - 2], eot_id] for body in bodies]
    width = context_length if pad_to_context or not rows else max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return TokenBatch(ids, mask, replaced)
