"""Tokenizers built on a Hugging Face ``tokenizers`` pipeline: CLIP's BPE, the ones trained on captions, and
any ``tokenizer.json`` that wraps a text in a start and an end token (BERT's WordPiece for MiniLM).

The pipeline (normaliser, pre-tokeniser, model) turns a text into ids; the special tokens are added by
:func:`~polymodal.text.batch.pack`, not by the pipeline's post-processor, and the pipeline's own padding and
truncation settings are switched off, so every tokenizer truncates and pads by the same rule. For BERT this
gives exactly the ids and mask of ``transformers``' tokenizer with ``truncation=True, padding=True``.
``tokenizer_id`` hashes the serialised pipeline, so caches keyed on it change whenever the vocabulary or
merges do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as Backend

from polymodal.errors import CheckpointError, ConfigError
from polymodal.text.protocol import SpecialTokenTokenizer


class HFTokenizer(SpecialTokenTokenizer):
    """A ``tokenizers.Tokenizer`` with its start, end and padding tokens.

    Args:
        backend: The ``tokenizers`` pipeline (normaliser, pre-tokeniser, model, decoder). Its padding and
            truncation settings are switched off (:func:`~polymodal.text.batch.pack` does both).
        kind: Short name of the family, part of :attr:`tokenizer_id` (``"clip-bpe"``, ``"trained-bpe"``,
            ``"minilm-wordpiece"``...).
        bos_token: Start token (``[CLS]`` for BERT); must be in the vocabulary.
        eot_token: End token (``[SEP]`` for BERT); must be in the vocabulary.
        pad_token: Token written into padding; must be in the vocabulary.

    Raises:
        ConfigError: A special token is not in the vocabulary.
    """

    def __init__(self, backend: Backend, *, kind: str, bos_token: str, eot_token: str, pad_token: str) -> None:
        super().__init__()
        self.backend = backend
        self.kind = kind
        self.bos_token, self.eot_token, self.pad_token = bos_token, eot_token, pad_token
        found = {name: backend.token_to_id(name) for name in (bos_token, eot_token, pad_token)}
        missing = [name for name, i in found.items() if i is None]
        ids = {name: i for name, i in found.items() if i is not None}
        if missing:
            raise ConfigError(f"{kind} tokenizer: special token(s) {missing} are not in the vocabulary")
        # Mark them special (their ids stay), so decode() can skip them.
        backend.add_special_tokens([t for t in dict.fromkeys((bos_token, eot_token, pad_token))])
        if backend.padding is not None:
            backend.no_padding()
        if backend.truncation is not None:
            backend.no_truncation()
        self.bos_id: int = ids[bos_token]
        self.eot_id: int = ids[eot_token]
        self.pad_id: int = ids[pad_token]
        self._json = backend.to_str()

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce (a text tower's embedding needs at least this many rows)."""
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    @property
    def tokenizer_id(self) -> str:
        """``kind:hash`` of the serialised pipeline; equal ids mean equal tokenisation."""
        return f"{self.kind}:{hashlib.sha256(self._json.encode()).hexdigest()[:12]}"

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Ids of each text from the pipeline, without special tokens and untruncated.

        Args:
            texts: Valid Unicode texts (see :func:`~polymodal.text.batch.clean_text`).
        """
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` with special tokens dropped.

        Args:
            ids: Token ids, e.g. one row of :attr:`TokenBatch.input_ids` as a list.
        """
        text = self.backend.decode(list(ids), skip_special_tokens=True)
        return " ".join(text.replace("</w>", " ").split())  # CLIP's BPE marks word ends with </w>

    def to_json(self) -> str:
        """The pipeline serialised as ``tokenizer.json`` text."""
        return self._json

    def save(self, path: str | Path) -> Path:
        """Write the pipeline to ``path`` (a ``tokenizer.json`` file) and return it.

        Args:
            path: File to write.
        """
        path = Path(path)
        path.write_text(self._json, encoding="utf-8")
        return path


def read_backend(path: str | Path) -> Backend:
    """Read a ``tokenizer.json`` file, with a :class:`CheckpointError` naming the file when it is unusable.

    Args:
        path: The ``tokenizer.json`` file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: missing {path.name}")
    try:
        return Backend.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for malformed JSON
        raise CheckpointError(f"{path}: not a readable tokenizers file ({e})") from None


def _wrapping_tokens(processor: dict[str, Any] | None) -> tuple[str, str] | None:
    """The start and end token a post-processor puts around one text, if it adds exactly those two."""
    if not processor:
        return None
    kind = processor.get("type")
    if kind in ("BertProcessing", "RobertaProcessing"):
        return str(processor["cls"][0]), str(processor["sep"][0])
    if kind == "Sequence":
        found = [_wrapping_tokens(p) for p in processor.get("processors", [])]
        wrapping = [f for f in found if f is not None]
        return wrapping[0] if len(wrapping) == 1 else None
    if kind == "TemplateProcessing":
        single = processor.get("single", [])
        shape = [next(iter(piece)) for piece in single]
        if shape != ["SpecialToken", "Sequence", "SpecialToken"]:
            return None
        specials = processor.get("special_tokens", {})
        tokens = [specials.get(single[i]["SpecialToken"]["id"], {}).get("tokens", []) for i in (0, 2)]
        if any(len(t) != 1 for t in tokens):
            return None
        return str(tokens[0][0]), str(tokens[1][0])
    return None


def load_hf_tokenizer(path: str | Path, *, kind: str = "hf") -> HFTokenizer:
    """Read a ``tokenizer.json`` whose post-processor wraps a text in one start and one end token.

    The start and end tokens are the post-processor's (``[CLS]`` and ``[SEP]`` for BERT); padding uses the
    file's padding token, else ``[PAD]``.

    Args:
        path: The ``tokenizer.json`` file.
        kind: Family name, part of :attr:`HFTokenizer.tokenizer_id`.

    Raises:
        CheckpointError: The file is missing or unreadable, or does not name its special tokens.
    """
    path = Path(path)
    backend = read_backend(path)
    wrapping = _wrapping_tokens(json.loads(backend.to_str()).get("post_processor"))
    if wrapping is None:
        raise CheckpointError(
            f"{path}: its post-processor does not wrap a text in one start and one end token "
            "([CLS] text [SEP] or similar), so the special tokens are unknown"
        )
    padding = backend.padding
    pad = str(padding["pad_token"]) if padding else "[PAD]"
    try:
        return HFTokenizer(backend, kind=kind, bos_token=wrapping[0], eot_token=wrapping[1], pad_token=pad)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
