"""CLIP's byte-level BPE (Radford et al. 2021), for loading real CLIP checkpoints.

The pipeline is the one ``transformers.CLIPTokenizer`` builds (NFC, whitespace collapsed, lowercase; CLIP's
split regex, then byte-level bytes; BPE with the ``</w>`` end-of-word suffix), built on Hugging Face
``tokenizers`` and read offline from a checkpoint folder: its ``tokenizer.json``, or ``vocab.json`` and
``merges.txt``. The special tokens are ``<|startoftext|>`` and ``<|endoftext|>`` unless the folder's
``tokenizer_config.json``/``special_tokens_map.json`` name others; padding uses the pad token named there
(transformers' default is ``<|endoftext|>``). OpenAI's original tokenizer also runs ``ftfy`` and HTML
unescaping; like transformers' fast tokenizer, this one does not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Regex, decoders, normalizers, pre_tokenizers
from tokenizers import Tokenizer as Backend
from tokenizers.models import BPE

from polymodal.errors import CheckpointError
from polymodal.text.hf import HFTokenizer, read_backend

BOS = "<|startoftext|>"
EOT = "<|endoftext|>"
# CLIP's pre-tokeniser pattern (transformers' CLIPTokenizer): specials, contractions, letters, digits one by
# one, and runs of other symbols.
_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
KIND = "clip-bpe"


def clip_backend(vocab: dict[str, int], merges: list[tuple[str, str]], *, unk_token: str = EOT) -> Backend:
    """CLIP's tokenisation pipeline around a BPE vocabulary.

    Args:
        vocab: Token -> id, byte-level symbols with ``</w>`` on word-final pieces, plus the specials.
        merges: BPE merges in priority order.
        unk_token: Token for anything the vocabulary cannot spell (CLIP uses EOT).
    """
    backend = Backend(
        BPE(
            vocab=vocab,
            merges=merges,
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
            fuse_unk=False,
            unk_token=unk_token,
        )
    )
    backend.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    return backend


def _special(folder: Path) -> dict[str, str]:
    """Special-token names from ``tokenizer_config.json`` / ``special_tokens_map.json`` (either may be absent)."""
    names: dict[str, str] = {}
    for fname in ("special_tokens_map.json", "tokenizer_config.json"):
        f = folder / fname
        if not f.is_file():
            continue
        try:
            d: dict[str, Any] = json.loads(f.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{f}: not valid JSON ({e})") from None
        for key in ("bos_token", "eos_token", "pad_token"):
            value = d.get(key)
            if isinstance(value, dict):  # {"content": "<|endoftext|>", "lstrip": false, ...}
                value = value.get("content")
            if isinstance(value, str) and key not in names:
                names[key] = value
    return names


def load_clip_tokenizer(folder: str | Path) -> HFTokenizer:
    """CLIP's BPE from a checkpoint folder: ``tokenizer.json``, else ``vocab.json`` + ``merges.txt``.

    Args:
        folder: The checkpoint folder.
    """
    folder = Path(folder)
    names = _special(folder)
    bos, eot = names.get("bos_token", BOS), names.get("eos_token", EOT)
    pad = names.get("pad_token", eot)
    if (folder / "tokenizer.json").is_file():
        backend = read_backend(folder / "tokenizer.json")
        # A tokenizer.json written by transformers carries its own post-processor; BOS/EOT are added by
        # polymodal's pack(), so drop it to avoid adding them twice.
        backend.post_processor = None
    else:
        missing = [n for n in ("vocab.json", "merges.txt") if not (folder / n).is_file()]
        if missing:
            raise CheckpointError(
                f"{folder}: no tokenizer: missing tokenizer.json, and of vocab.json + merges.txt missing {missing}"
            )
        try:
            vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{folder / 'vocab.json'}: not valid JSON ({e})") from None
        lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
        merges = []
        for n, line in enumerate(lines, start=1):
            if not line.strip() or line.startswith("#version"):
                continue
            parts = line.split()
            if len(parts) != 2:
                raise CheckpointError(f"{folder / 'merges.txt'}: line {n} is not two symbols: {line!r}")
            merges.append((parts[0], parts[1]))
        backend = clip_backend(vocab, merges, unk_token=eot)
    try:
        return HFTokenizer(backend, kind=KIND, bos_token=bos, eot_token=eot, pad_token=pad)
    except Exception as e:
        raise CheckpointError(f"{folder}: tokenizer unusable ({e})") from None


def clip_tokenizer_from_json(text: str) -> HFTokenizer:
    """Rebuild a CLIP BPE tokenizer saved by :meth:`HFTokenizer.save` (polymodal model folders).

    Args:
        text: Contents of the ``tokenizer.json`` file.
    """
    backend = Backend.from_str(text)
    backend.post_processor = None
    return HFTokenizer(backend, kind=KIND, bos_token=BOS, eot_token=EOT, pad_token=EOT)
