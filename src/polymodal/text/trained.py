"""Tokenizers trained on the user's own captions, for CLIP models trained from scratch.

A from-scratch model has no reason to carry CLIP's 49k-token web vocabulary: a few thousand pieces learned
from the training captions cover them with short sequences and a small embedding table. Two families,
trained with Hugging Face ``tokenizers``:

* ``"bpe"``: byte-level BPE (Sennrich et al. 2016; GPT-2's byte alphabet), which can spell any string,
  emoji and replacement characters included, without an unknown token;
* ``"wordpiece"``: BERT's WordPiece (Wu et al. 2016) with ``[UNK]`` for characters it never saw.

Byte-level BPE training is deterministic: the same captions give the same tokenizer in any process, so a
resumed run relearns exactly the tokenizer it started with. ``tokenizers``' WordPiece trainer is not (it
breaks ties between equally frequent merges in hash order); its tokenizer is saved with the model all the
same, but prefer ``"bpe"`` for runs that may be resumed.

Both lowercase and normalise (NFC) the text. The special tokens come first, in this order, so their ids are
fixed: ``[PAD]`` = 0, ``[UNK]`` = 1, ``[BOS]`` = 2, ``[EOT]`` = 3 (not 2: a Hugging Face CLIP text config with
``eos_token_id == 2`` switches to the legacy argmax pooling). The trained pipeline is saved as
``tokenizer.json`` inside the model folder.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, decoders, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as Backend
from tokenizers.models import BPE, WordPiece

from polymodal.errors import ConfigError
from polymodal.text.batch import clean_text
from polymodal.text.hf import HFTokenizer, read_backend

PAD, UNK, BOS, EOT = "[PAD]", "[UNK]", "[BOS]", "[EOT]"
SPECIALS = [PAD, UNK, BOS, EOT]
KINDS = ("bpe", "wordpiece")


def _normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])


def train_tokenizer(
    texts: Iterable[str | bytes], *, kind: str = "bpe", vocab_size: int = 4096, min_frequency: int = 2
) -> HFTokenizer:
    """Learn a vocabulary from ``texts``; for ``"bpe"`` the same set of texts gives the same tokenizer.

    Args:
        texts: Training captions (bytes decoded as UTF-8 with replacement).
        kind: ``"bpe"`` (byte-level) or ``"wordpiece"``.
        vocab_size: Largest vocabulary, special tokens and the byte alphabet included; a small corpus may
            give fewer.
        min_frequency: A merge must be seen this many times.
    """
    if kind not in KINDS:
        raise ConfigError(f"train_tokenizer: kind must be one of {KINDS}; got {kind!r}")
    corpus = sorted({clean_text(t).text for t in texts})  # sorted and unique: the result cannot depend on order
    if not corpus:
        raise ConfigError("train_tokenizer: no texts to learn a vocabulary from")
    if kind == "bpe":
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        if vocab_size < len(SPECIALS) + len(alphabet):
            raise ConfigError(
                f"train_tokenizer: byte-level BPE needs vocab_size >= {len(SPECIALS) + len(alphabet)}; got {vocab_size}"
            )
        backend = Backend(BPE(unk_token=None))
        backend.normalizer = _normalizer()
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        backend.decoder = decoders.ByteLevel()
        trainer: trainers.Trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=SPECIALS,
            initial_alphabet=alphabet,
            show_progress=False,
        )
    else:
        if vocab_size < len(SPECIALS) + 1:
            raise ConfigError(f"train_tokenizer: vocab_size must exceed {len(SPECIALS)}; got {vocab_size}")
        backend = Backend(WordPiece(unk_token=UNK))
        backend.normalizer = _normalizer()
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIALS, show_progress=False
        )
    backend.train_from_iterator(corpus, trainer=trainer)
    return HFTokenizer(backend, kind=f"trained-{kind}", bos_token=BOS, eot_token=EOT, pad_token=PAD)


def trained_tokenizer_from_json(text: str, *, kind: str) -> HFTokenizer:
    """Rebuild a trained tokenizer from the text of its ``tokenizer.json``.

    Args:
        text: The serialised pipeline.
        kind: ``"bpe"`` or ``"wordpiece"``.
    """
    if kind not in KINDS:
        raise ConfigError(f"trained tokenizer: kind must be one of {KINDS}; got {kind!r}")
    return HFTokenizer(Backend.from_str(text), kind=f"trained-{kind}", bos_token=BOS, eot_token=EOT, pad_token=PAD)


def load_trained_tokenizer(path: str | Path, *, kind: str) -> HFTokenizer:
    """Read a trained tokenizer from a ``tokenizer.json`` file.

    Args:
        path: The file.
        kind: ``"bpe"`` or ``"wordpiece"``.
    """
    backend = read_backend(path)
    return trained_tokenizer_from_json(backend.to_str(), kind=kind)
