"""A tiny CLIP BPE vocabulary built offline, shared by the tokenizer and Hugging Face interop tests."""

from __future__ import annotations

from tokenizers.pre_tokenizers import ByteLevel

# Byte-level BPE merges in priority order; word-final pieces carry CLIP's "</w>" suffix.
MERGES = [("t", "h"), ("th", "e</w>"), ("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"), ("p", "h"),
          ("o", "t"), ("ph", "ot"), ("phot", "o</w>"), ("o", "f</w>")]  # fmt: skip


def tiny_clip_vocab() -> dict[str, int]:
    """The 256 byte symbols, their word-final forms, the merged pieces, then <|startoftext|>, <|endoftext|>."""
    alphabet = sorted(ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for piece in [*alphabet, *(a + "</w>" for a in alphabet), *(a + b for a, b in MERGES)]:
        vocab.setdefault(piece, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab
