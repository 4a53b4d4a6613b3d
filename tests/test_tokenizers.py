"""Tokenizers of polymodal.text: CLIP's BPE against transformers' CLIPTokenizer, tokenizers learned from
captions, the truncation/padding rule, bad UTF-8, and saving/loading."""

from __future__ import annotations

import json

import pytest
import torch

from _clip_helpers import MERGES, tiny_clip_vocab
from polymodal.errors import CheckpointError, ConfigError, DataError
from polymodal.text import (
    CleanText,
    TokenBatch,
    clean_text,
    load_clip_tokenizer,
    load_trained_tokenizer,
    pack,
    train_tokenizer,
)

CAPTIONS = [
    "grinning face", "grinning face with big eyes", "red heart", "green apple", "red apple",
    "smiling face with heart-eyes", "dog face", "cat face", "face with tears of joy", "thumbs up",
    "an emoji of a red heart.", "an icon of a green apple.", "party popper", "rocket", "pile of poo",
]  # fmt: skip

@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """vocab.json + merges.txt as OpenAI/transformers ship them."""
    folder = tmp_path_factory.mktemp("clip-tok")
    (folder / "vocab.json").write_text(json.dumps(tiny_clip_vocab()))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in MERGES) + "\n")
    return folder


TEXTS = ["a photo of the cat", "The DOG!!  photo", "x" * 40, "cat 42 dogs", "café, naïve — ok?", "😀 emoji"]


# ------------------------------------------------------------------------------------------ CLIP BPE
def test_clip_bpe_matches_transformers_clip_tokenizer(clip_folder, tmp_path):
    from transformers import CLIPTokenizer

    ref = CLIPTokenizer(vocab=tiny_clip_vocab(), merges=MERGES)
    ours = load_clip_tokenizer(clip_folder)
    got = ours.encode(TEXTS, max_length=16)
    want = ref(TEXTS, padding=True, truncation=True, max_length=16, return_tensors="pt")
    assert torch.equal(got.attention_mask, want["attention_mask"])
    # transformers pads with <|endoftext|> (its pad token); so does ours when the folder names no other.
    assert torch.equal(got.input_ids, want["input_ids"])
    assert got.input_ids[0, 0] == ours.bos_id and got.input_ids[2, -1] == ours.eot_id  # truncated, EOT kept

    # The same tokenizer read back from transformers' own tokenizer.json (with its post-processor).
    ref.save_pretrained(tmp_path)
    again = load_clip_tokenizer(tmp_path)
    assert torch.equal(again.encode(TEXTS, max_length=16).input_ids, got.input_ids)
    assert ours.decode(got.input_ids[0].tolist()) == "a photo of the cat"


def test_clip_folder_without_tokenizer_files_is_a_checkpoint_error(tmp_path):
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"merges\.txt"):
        load_clip_tokenizer(tmp_path)


# ------------------------------------------------------------------------------------------ packing rule
def test_pack_truncates_keeping_eot_and_pads_right():
    batch = pack([[5, 6, 7, 8, 9], [5]], max_length=4, bos_id=1, eot_id=2, pad_id=0)
    assert batch.input_ids.tolist() == [[1, 5, 6, 2], [1, 5, 2, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch.truncated == 1 and len(batch) == 2
    full = pack([[5]], max_length=6, bos_id=1, eot_id=2, pad_id=0, pad_to_context=True)
    assert full.input_ids.tolist() == [[1, 5, 2, 0, 0, 0]]
    assert pack([], max_length=6, bos_id=1, eot_id=2, pad_id=0).input_ids.shape == (0, 6)
    with pytest.raises(ConfigError, match="max_length"):
        pack([[5]], max_length=1, bos_id=1, eot_id=2, pad_id=0)


def test_bad_utf8_is_replaced_and_counted_never_raised():
    tok = train_tokenizer(CAPTIONS, vocab_size=300)
    batch = tok.encode([b"red \xff\xfe heart", "lone \udcff surrogate", "red heart", b"ok"], max_length=32)
    assert isinstance(batch, TokenBatch) and batch.replaced == 2
    assert "\ufffd" in tok.decode(batch.input_ids[0].tolist())
    assert clean_text(b"\xffa") == CleanText("\ufffda", 1)
    assert clean_text("fine") == CleanText("fine", 0)
    assert tok.stats.bad_utf8 == 2 and tok.stats.texts == 4
    with pytest.raises(DataError, match="list of texts"):
        tok.encode("red heart", max_length=8)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ trained
@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_trained_tokenizer_round_trips(kind, tmp_path):
    tok = train_tokenizer(CAPTIONS, kind=kind, vocab_size=300, min_frequency=1)
    # Special ids are fixed, and EOT is not 2 (transformers' legacy argmax pooling trigger).
    assert (tok.pad_id, tok.bos_id, tok.eot_id) == (0, 2, 3)
    # Learned from the captions: a frequent caption word is one token, not a spelling.
    ids = tok.encode(["face"], max_length=8).input_ids[0].tolist()
    assert len(ids) == 3, ids
    batch = tok.encode(CAPTIONS, max_length=32)
    for row, caption in zip(batch.input_ids.tolist(), CAPTIONS):
        assert tok.decode(row).replace(" ", "") == caption.lower().replace(" ", "")
    if kind == "bpe":  # deterministic (a resumed run relearns the same one); tokenizers' WordPiece is not
        assert train_tokenizer(CAPTIONS[::-1], vocab_size=300, min_frequency=1).tokenizer_id == tok.tokenizer_id
    # Saved and loaded: same ids, same id string.
    back = load_trained_tokenizer(tok.save(tmp_path / "tokenizer.json"), kind=kind)
    assert back.tokenizer_id == tok.tokenizer_id
    assert torch.equal(back.encode(CAPTIONS, max_length=32).input_ids, batch.input_ids)


def test_byte_level_bpe_spells_unseen_characters_without_unk():
    tok = train_tokenizer(CAPTIONS, vocab_size=300)
    row = tok.encode(["zebra 🦓"], max_length=32).input_ids[0].tolist()
    assert 1 not in row  # [UNK]
    assert tok.decode(row) == "zebra 🦓"


def test_trainer_rejects_bad_settings():
    with pytest.raises(ConfigError, match="kind"):
        train_tokenizer(CAPTIONS, kind="sentencepiece")
    with pytest.raises(ConfigError, match="vocab_size"):
        train_tokenizer(CAPTIONS, vocab_size=100)
    with pytest.raises(ConfigError, match="no texts"):
        train_tokenizer([])


def test_unreadable_tokenizer_file_is_a_checkpoint_error(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="tokenizer.json"):
        load_trained_tokenizer(tmp_path / "tokenizer.json", kind="bpe")
    with pytest.raises(CheckpointError, match="missing"):
        load_trained_tokenizer(tmp_path / "absent.json", kind="bpe")
