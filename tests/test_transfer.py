"""The ImageNet transfer (models/transfer.py), whole-image preprocessing and the generalisation sets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from polymodal.errors import CheckpointError, ConfigError, ShapeError
from polymodal.models.transfer import ImageNetTransfer, TransferConfig, class_name_prompts


def _bank(num_classes: int = 4, feat: int = 3, sent: int = 5, seed: int = 0) -> ImageNetTransfer:
    g = torch.Generator().manual_seed(seed)
    fc = nn.Linear(feat, num_classes)
    fc.weight.data = torch.randn(num_classes, feat, generator=g)
    fc.bias.data.zero_()
    names = F.normalize(torch.randn(num_classes, sent, generator=g), dim=-1)
    reference = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])[:, :feat]
    return ImageNetTransfer(fc, names, reference, TransferConfig(top_k=2, gate_center=0.5, gate_scale=10.0))


def test_embed_is_the_top_k_probability_weighted_mean_of_name_embeddings() -> None:
    t = _bank()
    head = nn.Linear(5, 5)
    x = torch.randn(3, 3)
    p = t.probabilities(x)
    assert torch.allclose(p.sum(-1), torch.ones(3))
    got = t.embed(p, head)
    names = F.normalize(head(t.names), dim=-1)
    for i in range(3):  # ConSE written out: the two most probable classes, weighted by their probabilities
        top = p[i].topk(2)
        want = F.normalize(sum(v * names[j] for v, j in zip(top.values, top.indices)), dim=-1)
        assert torch.allclose(got[i], want, atol=1e-6)


def test_gate_follows_the_distance_to_the_training_images() -> None:
    t = _bank()
    on_a_training_image = torch.tensor([[2.0, 0.0, 0.0]])  # cosine 1 to the first reference
    far_from_all = torch.tensor([[0.0, 0.0, 1.0]])  # cosine 0 to both
    assert torch.allclose(t.nearest_similarity(on_a_training_image), torch.tensor([[1.0]]))
    g_near, g_far = t.gate(on_a_training_image).item(), t.gate(far_from_all).item()
    assert g_near == pytest.approx(1 / (1 + math.exp(10 * 0.5)), rel=1e-5)  # sigmoid(10 (0.5 - 1))
    assert g_far == pytest.approx(1 / (1 + math.exp(-10 * 0.5)), rel=1e-5)  # sigmoid(10 (0.5 - 0))
    always = t.with_settings(gate="always")
    assert always.gate(on_a_training_image).item() == 1.0
    # mix: near the training images the aligner's embedding dominates, far from them the transfer.
    aligned = F.normalize(torch.randn(1, 5), dim=-1)
    head = nn.Identity()
    near = t.mix(aligned, on_a_training_image, head)
    far = t.mix(aligned, far_from_all, head)
    assert (near @ aligned.T).item() > 0.9
    assert (far @ t.embed(t.probabilities(far_from_all), head).T).item() > 0.9


def test_save_load_round_trip_and_bad_inputs(tmp_path) -> None:
    t = _bank()
    t.save(tmp_path / "transfer.safetensors")
    back = ImageNetTransfer.load(tmp_path / "transfer.safetensors", t.classifier)
    assert back.config == t.config
    assert torch.allclose(back.names, t.names, atol=1e-3) and torch.allclose(back.reference, t.reference, atol=1e-3)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        ImageNetTransfer.load(tmp_path / "junk.safetensors", t.classifier)
    with pytest.raises(ShapeError):
        ImageNetTransfer(t.classifier, torch.zeros(3, 5), t.reference)
    with pytest.raises(ShapeError):
        ImageNetTransfer(t.classifier, t.names, torch.zeros(2, 7))
    with pytest.raises(ConfigError):
        TransferConfig(gate="sometimes")
    with pytest.raises(ConfigError):
        TransferConfig(top_k=0)


def test_class_prompts_use_lemmas_hypernym_and_gloss() -> None:
    from polymodal.towers.imagenet import imagenet_class_table

    table = imagenet_class_table()
    magpie = next(c for c in table if c.synset == "n01582220")
    assert magpie.hypernyms[:2] == ("corvine bird", "oscine") and "crow" in magpie.gloss
    prompts = class_name_prompts([magpie], TransferConfig())[0]
    assert prompts[0] == "a photo of a magpie."
    assert prompts[-1].startswith("magpie, a kind of corvine bird: long-tailed")
    assert all(c.gloss for c in table) and sum(bool(c.hypernyms) for c in table) == 1000


def test_pad_keeps_the_whole_image_and_square_images_are_unchanged() -> None:
    from polymodal.data.pixels import pad_to_square
    from polymodal.towers.preprocess import effnet_preprocess, preprocess_id

    def image_to_tensor(img: Image.Image, size: int, fit: str) -> torch.Tensor:
        return effnet_preprocess(size, fit).one(img)

    wide = Image.new("RGB", (200, 50), (255, 255, 255))
    wide.paste((255, 0, 0), (0, 0, 10, 50))  # a red strip at the far left end
    padded = pad_to_square(wide)
    assert padded.size == (200, 200) and padded.getpixel((100, 10)) == (255, 255, 255)
    x_pad, x_crop = image_to_tensor(wide, 32, "pad"), image_to_tensor(wide, 32, "crop")
    red = (x_pad[0] > 0.9) & (x_pad[1] < -0.9)
    assert red.any()  # the padded view still shows the left end...
    assert not ((x_crop[0] > 0.9) & (x_crop[1] < -0.9)).any()  # ...the centre crop cuts it off
    square = Image.new("RGB", (40, 40), (10, 200, 30))
    assert torch.allclose(image_to_tensor(square, 32, "pad"), image_to_tensor(square.resize((32, 32), Image.Resampling.BICUBIC), 32, "pad"))
    assert preprocess_id(224, "pad") != preprocess_id(224, "crop")
    with pytest.raises(ConfigError):
        image_to_tensor(square, 32, "stretch")


def test_with_transfer_is_a_view_that_leaves_the_model_alone() -> None:
    from polymodal.models.aligner import Aligner, AlignerConfig

    model = Aligner(AlignerConfig(image_size=64), pretrained=False).eval()
    bank = ImageNetTransfer(model.image_tower._fc, F.normalize(torch.randn(1000, 384), dim=-1),
                            torch.randn(4, 1280))
    model.transfer = bank
    view = model.with_transfer(None)
    assert model.transfer is bank and view.transfer is None
    assert view.image_head is model.image_head  # weights shared, not copied
    x = torch.randn(2, 3, 64, 64)
    plain = F.normalize(model.image_head(model.image_trunk(x)), dim=-1)
    assert torch.allclose(view.encode_image(x), plain, atol=1e-6)
    assert not torch.allclose(model.encode_image(x), plain, atol=1e-4)


def test_builtin_sets_share_openmoji_splits_and_captions() -> None:
    from polymodal.data.pairs import load_pairs
    from polymodal.data.photos import photo_labels

    om = {s: load_pairs("builtin:openmoji", s) for s in ("train", "test")}
    for style in ("twemoji", "noto"):
        test = load_pairs(f"builtin:{style}", "test")
        assert len(test) == 278 and set(test.keys) <= set(om["test"].keys)
        assert not set(test.keys) & set(load_pairs(f"builtin:{style}", "train").keys)
        by_key = dict(zip(om["test"].keys, om["test"].captions))
        assert all(by_key[k] == c for k, c in zip(test.keys, test.captions))
        assert test.images[0].size == (64, 64)
    photos = {s: load_pairs("builtin:photos", s) for s in ("train", "val", "test")}
    assert len(photos["train"]) == 0 and len(photos["val"]) + len(photos["test"]) == 222
    assert len(photo_labels()) == 84 and photos["test"].classes["label"] == photo_labels()
    assert set(photos["test"].labels["label"]) <= set(photo_labels())


def test_standard_errors_are_binomial() -> None:
    from polymodal.eval.eval_sets import headline, standard_errors

    se = standard_errors({"zeroshot_label/top1": 0.5, "text_retrieval_recall@1": 0.1, "x/top5": 0.9}, 100)
    assert se == {"zeroshot_label/top1_se": pytest.approx(0.05), "text_retrieval_recall@1_se": pytest.approx(0.03)}
    block = {"metrics": {"zeroshot_label/top1": 0.5, "zeroshot_label/top1_se": 0.05, "x/top5": 0.9},
             "baselines": {"chance": {"zeroshot_label/top1": 0.1, "x/top5": 0.2}, "none": {"y": 1.0}}}
    metrics, baselines = headline(block)
    assert list(metrics) == ["zeroshot_label/top1", "zeroshot_label/top1_se"]
    assert baselines == {"chance": {"zeroshot_label/top1": 0.1}}
