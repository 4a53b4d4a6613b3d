"""The one tokenizer interface of polymodal's text towers: a Hugging Face ``tokenizers`` pipeline plus the
names of its three special tokens.

``encode(texts, *, context_length)`` returns a :class:`~polymodal.text.batch.TokenBatch` built by
:func:`~polymodal.text.batch.pack` (BOS/EOT added here, not by the pipeline's post-processor, so every
tokenizer truncates and pads by the same rule). ``tokenizer_id`` hashes the serialised pipeline, so caches
keyed on it change whenever the vocabulary or merges do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer as Backend

from polymodal.errors import CheckpointError, ConfigError
from polymodal.text.batch import TokenBatch, clean_text, pack


class Tokenizer:
    """A ``tokenizers.Tokenizer`` with its BOS, EOT and padding tokens.

    Args:
        backend: The ``tokenizers`` pipeline (normaliser, pre-tokeniser, model, decoder).
        kind: Short name of the family, part of :attr:`tokenizer_id` (``"clip-bpe"``, ``"trained-bpe"``...).
        bos_token: Start-of-text token; must be in the vocabulary.
        eot_token: End-of-text token; must be in the vocabulary.
        pad_token: Token written into padding; must be in the vocabulary.
    """

    def __init__(self, backend: Backend, *, kind: str, bos_token: str, eot_token: str, pad_token: str) -> None:
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

    def encode(
        self, texts: Sequence[str | bytes], *, context_length: int, pad_to_context: bool = False
    ) -> TokenBatch:
        """Tokenise ``texts`` into ``[BOS] ... [EOT]`` rows, truncated keeping EOT and right-padded.

        Args:
            texts: Strings, or bytes decoded as UTF-8 with replacement.
            context_length: Longest row, BOS and EOT included.
            pad_to_context: Pad every row to ``context_length`` rather than to the longest row.
        """
        if isinstance(texts, (str, bytes)):
            raise ConfigError("tokenizer: pass a list of texts, not a single string")
        cleaned = [clean_text(t) for t in texts]
        encodings = self.backend.encode_batch([t for t, _ in cleaned], add_special_tokens=False)
        return pack(
            [e.ids for e in encodings],
            context_length=context_length,
            bos_id=self.bos_id,
            eot_id=self.eot_id,
            pad_id=self.pad_id,
            pad_to_context=pad_to_context,
            replaced=sum(r for _, r in cleaned),
        )

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
