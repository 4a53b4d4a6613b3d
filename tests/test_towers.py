"""Pretrained towers: ImageNet predictions, split/resume identity, parity with Hugging Face BERT."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from polymodal.errors import CheckpointError, ConfigError, DataError, ShapeError
from polymodal.towers.efficientnet import EfficientNetLite0, EfficientNetLiteConfig, SamePadConv2d
from polymodal.towers.efficientnet_runner import EfficientNetLite0Runner
from polymodal.towers.imagenet import imagenet_class_table, imagenet_top5
from polymodal.towers.minilm import BertConfig, MiniLMTextTower, default_model_dir
from polymodal.towers.preprocess import PREPROCESS_ID, effnet_preprocess

SENTENCES = [
    "A dog.",
    "Two children are playing football on a sunny beach near the old lighthouse.",
    "",
    "Café naïve résumé, 東京!",
    "the quick brown fox jumps over the lazy dog " * 3,
]


@pytest.fixture(scope="module")
def effnet() -> EfficientNetLite0:
    return EfficientNetLite0.pretrained()


@pytest.fixture(scope="module")
def minilm() -> MiniLMTextTower:
    return MiniLMTextTower.pretrained()


def sample_image(name: str) -> Image.Image:
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image(name))


# --- image tower ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "word"), [("china.jpg", "palace"), ("flower.jpg", "daisy")])
def test_pretrained_top5_on_sklearn_samples(effnet: EfficientNetLite0, name: str, word: str) -> None:
    top5 = imagenet_top5(effnet, sample_image(name))
    assert len(top5) == 5
    probs = [p for _, p in top5]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert any(word in cls for cls, _ in top5), top5
    assert top5[0][0] == word  # the weights are good enough that it is even the top-1


def test_imagenet_classes_in_index_order() -> None:
    from polymodal.towers import imagenet

    classes = imagenet.IMAGENET_CLASSES
    assert len(classes) == 1000 and len(set(imagenet_class_table())) == 1000
    assert classes[0] == "tench, Tinca tinca" and classes[698] == "palace" and classes[985] == "daisy"
    synsets = [c.synset for c in imagenet_class_table()]
    assert synsets == sorted(synsets)


def test_split_resume_identity_for_every_k(effnet: EfficientNetLite0) -> None:
    # odd size so the stride-2 SAME padding is symmetric in one dimension and lopsided in the other
    x = torch.randn(2, 3, 35, 64)
    with torch.inference_mode():
        full = effnet.forward_features(x)
        assert full.shape == (2, 1280, 2, 2)  # ceil(35/32), 64/32
        for k in range(effnet.num_blocks + 1):
            h = effnet.stem_and_blocks(x, end=k)
            assert torch.equal(effnet.blocks_and_head(h, start=k), full), k
    assert effnet.num_blocks == 16 and effnet.feature_dim == 1280
    with pytest.raises(ConfigError, match="end"):
        effnet.stem_and_blocks(x, end=17)
    with pytest.raises(ShapeError, match="x"):
        effnet.stem_and_blocks(torch.zeros(1, 1, 32, 32), end=0)


def test_embed_and_logits_agree_with_features(effnet: EfficientNetLite0) -> None:
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        feats = effnet.forward_features(x)
        emb = effnet.embed(x)
        logits = effnet(x)
        head = effnet._fc(emb)
    torch.testing.assert_close(emb, feats.mean(dim=(2, 3)))
    torch.testing.assert_close(logits, head)
    assert logits.shape == (2, 1000)


def test_same_padding_matches_tensorflow_rule() -> None:
    torch.manual_seed(0)
    for k, size in [(3, 8), (3, 7), (5, 8), (5, 9)]:
        conv = SamePadConv2d(2, 3, k, stride=2)
        x = torch.randn(1, 2, size, size)
        # TF SAME: total pad = max((ceil(i/s) - 1) * s + k - i, 0), the extra pixel after
        total = max((-(-size // 2) - 1) * 2 + k - size, 0)
        ref = F.conv2d(F.pad(x, [total // 2, total - total // 2] * 2), conv.weight, stride=2)
        torch.testing.assert_close(conv(x), ref)
        assert conv(x).shape[-1] == -(-size // 2)


def test_fused_inference_model_matches(effnet: EfficientNetLite0) -> None:
    fused = effnet.inference_optimized()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = effnet_preprocess(128)([sample_image("china.jpg"), sample_image("flower.jpg")])
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), effnet(x), atol=1e-4, rtol=0)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in effnet.modules())  # original untouched


@pytest.mark.parametrize("onednn", [True, False])
def test_runner_matches_model(effnet: EfficientNetLite0, onednn: bool, monkeypatch) -> None:
    if not onednn:  # the portable F.conv2d path used where PyTorch has no oneDNN
        monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    elif not torch.backends.mkldnn.is_available():
        pytest.skip("no oneDNN in this PyTorch build")
    threads = torch.get_num_threads()
    images = effnet_preprocess(96)([sample_image("china.jpg"), sample_image("flower.jpg")] * 2)
    odd = torch.randn(5, 3, 70, 45)
    training = copy.deepcopy(effnet).train()  # the runner must behave as eval mode regardless
    with EfficientNetLite0Runner(training, threads=2, chunk_size=2, image_size=96) as runner:
        assert runner.onednn is onednn
        assert torch.get_num_threads() == threads  # the caller's thread setting is left alone
        logits = runner.logits(images)
        feats = runner.forward_features(odd)
        emb = runner.embed(odd)
        empty = runner.embed(torch.empty(0, 3, 64, 64))
        with pytest.raises(ShapeError, match="x"):
            runner.logits(torch.zeros(2, 4, 32, 32))
    with torch.no_grad():
        torch.testing.assert_close(logits, effnet(images), atol=1e-4, rtol=0)
        torch.testing.assert_close(feats, effnet.forward_features(odd), atol=1e-4, rtol=0)
        torch.testing.assert_close(emb, effnet.embed(odd), atol=1e-4, rtol=0)
    assert feats.shape == (5, 1280, 3, 2) and empty.shape == (0, 1280)
    assert not logits.requires_grad and not logits.is_inference()  # usable as training inputs


def test_training_mode_backward_reaches_the_stem() -> None:
    torch.manual_seed(0)
    model = EfficientNetLite0(EfficientNetLiteConfig(num_classes=3)).train()
    loss = F.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 2]))
    loss.backward()
    grad = model._conv_stem.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_effnet_strict_loading_errors(tmp_path, effnet: EfficientNetLite0) -> None:
    state = effnet.state_dict()
    extra = dict(state, **{"_blocks.16._bn1.weight": torch.zeros(3)})
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"extra\.pth.*unexpected keys: _blocks\.16\._bn1\.weight"):
        EfficientNetLite0.from_file(tmp_path / "extra.pth")
    missing = {k: v for k, v in state.items() if k != "_fc.bias"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing keys: _fc\.bias"):
        EfficientNetLite0.from_file(tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="cannot read"):
        EfficientNetLite0.from_file(tmp_path / "nope.pth")


# --- preprocessing --------------------------------------------------------------------------------


def test_image_to_tensor_scaling_and_center_crop() -> None:
    # 400x200 image: grey 255 in the central 200 columns, 0 elsewhere. After resizing the short side to
    # 256 (-> 512x256) and cropping the centre 224, every pixel is in the bright band.
    arr = np.zeros((200, 400, 3), dtype=np.uint8)
    arr[:, 100:300] = 255
    x = effnet_preprocess().one(Image.fromarray(arr))
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert torch.allclose(x[:, 8:-8, 8:-8], torch.ones(()), atol=1e-6)  # (255 - 127) / 128
    grey = effnet_preprocess(32).one(Image.new("L", (50, 80), 127))
    assert grey.shape == (3, 32, 32) and torch.count_nonzero(grey) == 0
    batch = effnet_preprocess(16)([Image.new("RGBA", (10, 10)), Image.new("RGB", (7, 30))])
    assert batch.shape == (2, 3, 16, 16)
    assert effnet_preprocess()([]).shape == (0, 3, 224, 224)
    assert PREPROCESS_ID.startswith("effnet-lite0:224:bicubic")
    with pytest.raises(DataError, match="PIL"):
        effnet_preprocess().one(np.zeros((4, 4, 3)))


# --- text tower -----------------------------------------------------------------------------------


def test_tokenize_pads_to_longest_and_truncates(minilm: MiniLMTextTower) -> None:
    tok = minilm.tokenize(SENTENCES, max_length=16)
    lengths = tok.attention_mask.sum(dim=1)
    assert tok.input_ids.shape == (5, 16) and tok.input_ids.dtype == torch.long
    assert lengths.tolist()[2] == 2 and lengths.max() == 16  # "" -> [CLS] [SEP]; long one truncated
    assert (tok.input_ids[:, 0] == 101).all()  # [CLS]
    for row, n in zip(tok.input_ids, lengths.tolist(), strict=True):
        assert row[n - 1] == 102 and (row[n:] == 0).all()  # [SEP] then [PAD]
    assert minilm.tokenize(["a b"], max_length=64).input_ids.shape == (1, 4)  # padded to longest only
    with pytest.raises(DataError, match=r"texts\[1\]"):
        minilm.tokenize(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="max_length"):
        minilm.tokenize(["ok"], max_length=1000)
    # an untrained tower still tokenizes with the package's vocabulary ("a" is WordPiece id 1037)
    assert MiniLMTextTower().tokenize(["A"]).input_ids.tolist() == [[101, 1037, 102]]


def test_sentence_embeddings_match_hugging_face_bert(minilm: MiniLMTextTower) -> None:
    transformers = pytest.importorskip("transformers")
    ref = transformers.BertModel.from_pretrained(str(default_model_dir())).eval()
    tok = minilm.tokenize(SENTENCES)
    with torch.no_grad():
        h_ref = ref(input_ids=tok.input_ids, attention_mask=tok.attention_mask).last_hidden_state
    mask = tok.attention_mask.unsqueeze(-1).float()
    expected = (h_ref * mask).sum(1) / mask.sum(1)
    ours = minilm.encode(SENTENCES, batch_size=2)  # length-sorted batches, different padding
    assert ours.shape == (5, 384)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)
    with torch.no_grad():
        h = minilm(tok.input_ids, tok.attention_mask)
    real = tok.attention_mask.bool()
    torch.testing.assert_close(h[real], h_ref[real], atol=1e-5, rtol=0)
    normed = minilm.encode(SENTENCES, normalize=True)
    torch.testing.assert_close(normed, F.normalize(expected, dim=-1), atol=1e-5, rtol=0)


def test_text_split_resume_and_padding_invariance(minilm: MiniLMTextTower) -> None:
    tok = minilm.tokenize(SENTENCES[:3])
    with torch.no_grad():
        full = minilm(tok.input_ids, tok.attention_mask)
        for k in range(minilm.num_layers + 1):
            low = minilm.run_layers(minilm.embed_tokens(tok.input_ids), tok.attention_mask, start=0, end=k)
            high = minilm.run_layers(low, tok.attention_mask, start=k, end=minilm.num_layers)
            torch.testing.assert_close(high, full, atol=0, rtol=0)
    # each sentence alone (no padding) gives the same embedding as in the padded batch
    alone = torch.cat([minilm.encode([s]) for s in SENTENCES[:3]])
    torch.testing.assert_close(alone, minilm.mean_pool(full, tok.attention_mask), atol=1e-5, rtol=0)
    assert minilm.num_layers == 6 and minilm.hidden_dim == 384
    assert minilm.encode([]).shape == (0, 384)


def test_minilm_strict_loading_errors(tmp_path) -> None:
    src = default_model_dir()
    tiny = BertConfig(
        vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
        max_position_embeddings=32,
    )  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(tiny.__dict__ | {"hidden_act": "gelu"}))
    shutil.copy(src / "tokenizer.json", tmp_path / "tokenizer.json")
    state = MiniLMTextTower(tiny).state_dict()
    save_file(dict(state), tmp_path / "model.safetensors")
    assert MiniLMTextTower.from_dir(tmp_path).hidden_dim == 8  # the intact tiny checkpoint loads

    state.pop("encoder.layer.0.output.LayerNorm.bias")
    state["cls.predictions.bias"] = torch.zeros(50)
    save_file(dict(state), tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*missing keys: encoder\.layer\.0") as err:
        MiniLMTextTower.from_dir(tmp_path)
    assert "unexpected keys: cls.predictions.bias" in str(err.value)

    (tmp_path / "config.json").write_text(json.dumps(tiny.__dict__ | {"hidden_act": "relu"}))
    with pytest.raises(CheckpointError, match="hidden_act"):
        MiniLMTextTower.from_dir(tmp_path)
