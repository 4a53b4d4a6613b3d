"""Hugging Face CLIP interop: a transformers CLIPModel from a small random config, saved with a tiny
CLIPTokenizer, loads offline through polymodal.load with embeddings and logits equal within 1e-5; polymodal
CLIPs saved with polymodal.save(kind="hf-clip") load back into transformers with the same numbers; broken folders fail clearly."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import polymodal
from _clip_helpers import MERGES, tiny_clip_vocab
from polymodal.errors import CheckpointError, ConfigError
from polymodal.models.build import build_model, load_preset
from polymodal.models.clip import CLIP
from polymodal.models.hf_clip import is_hf_clip_dir
from polymodal.towers.vit import ViTConfig

transformers = pytest.importorskip("transformers")


TEXTS = ["a photo of the cat", "The DOG!!", "photo photo photo photo photo photo photo photo of dogs", "42"]


def hf_config(act: str = "quick_gelu"):
    vocab = tiny_clip_vocab()
    return transformers.CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, hidden_act=act,
                         eos_token_id=vocab["<|endoftext|>"], bos_token_id=vocab["<|startoftext|>"]),
        vision_config=dict(hidden_size=32, intermediate_size=40, num_hidden_layers=2, num_attention_heads=4,
                           image_size=24, patch_size=6, hidden_act=act),
        projection_dim=24,
    )


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf-clip")
    torch.manual_seed(0)
    model = transformers.CLIPModel(hf_config()).eval()
    with torch.no_grad():  # random LayerNorm affines and biases, so a swapped name cannot hide
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.normal_(0.0, 0.3 if name.endswith("bias") else 1.0)
    model.save_pretrained(folder)
    transformers.CLIPTokenizer(vocab=tiny_clip_vocab(), merges=MERGES).save_pretrained(folder)
    return folder


def _hf_outputs(model, tok, texts, pixels, *, max_length=16):
    inputs = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], pixel_values=pixels)


def _ours(model: CLIP, texts, pixels):
    tokens = model.tokenize(texts)
    with torch.no_grad():
        return model(pixels, tokens.input_ids, tokens.attention_mask)


def test_load_hf_clip_folder_matches_transformers(hf_dir):
    ref = transformers.CLIPModel.from_pretrained(hf_dir).eval()
    tok = transformers.CLIPTokenizer.from_pretrained(hf_dir)
    assert is_hf_clip_dir(hf_dir)
    ours = polymodal.load(hf_dir)
    assert isinstance(ours, CLIP) and ours.config.vision.act == "quick_gelu" and ours.model_id
    pixels = torch.randn(3, 3, 24, 24)
    want, got = _hf_outputs(ref, tok, TEXTS, pixels), _ours(ours, TEXTS, pixels)
    assert torch.equal(ours.tokenize(TEXTS).input_ids, tok(TEXTS, padding=True, return_tensors="pt")["input_ids"])
    torch.testing.assert_close(got.image_embeds, want.image_embeds, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.text_embeds, want.text_embeds, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.logits_per_image, want.logits_per_image, rtol=0, atol=1e-5)
    assert ours.scale().item() == pytest.approx(ref.logit_scale.exp().item(), rel=1e-6)
    # Unnormalised features too (the projection outputs).
    torch.testing.assert_close(ours.encode_text(TEXTS[:2], normalize=False),
                               ref.get_text_features(**tok(TEXTS[:2], padding=True, return_tensors="pt")).pooler_output,
                               rtol=0, atol=1e-5)


def test_every_polymodal_command_path_works_on_hf_weights(hf_dir, tmp_path):
    from PIL import Image

    ours = polymodal.load(hf_dir)
    img = Image.new("RGB", (30, 24), (200, 30, 30))
    preds = ours.zeroshot([img], ["cat", "dog", "photo"])
    assert len(preds[0]) == 3
    # Saved in polymodal's own format and loaded back: same numbers.
    polymodal.save(ours, tmp_path / "pm")
    back = polymodal.load(tmp_path / "pm")
    torch.testing.assert_close(back.encode_text(TEXTS), ours.encode_text(TEXTS), rtol=0, atol=0)


@pytest.mark.parametrize("act", ["gelu", "quick_gelu"])
def test_save_hf_round_trip_into_transformers(act, tmp_path):
    cfg = load_preset("clip-tiny")
    cfg.vision.act = cfg.text.act = act
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    model.fit_tokenizer(["red heart", "green apple", "grinning face", "dog face", "cat face"] * 3)
    polymodal.save(model, tmp_path / "hf", kind="hf-clip")
    ref = transformers.CLIPModel.from_pretrained(tmp_path / "hf").eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    texts = ["red heart", "Grinning FACE!!", "an unseen zebra 🦓"]
    pixels = torch.randn(2, 3, 32, 32)
    inputs = tok(texts, padding=True, return_tensors="pt")
    ours = model.tokenize(texts)
    assert torch.equal(inputs["input_ids"], ours.input_ids) and torch.equal(inputs["attention_mask"],
                                                                            ours.attention_mask)
    want = _hf_outputs(ref, tok, texts, pixels, max_length=cfg.text.context_length)
    got = _ours(model, texts, pixels)
    torch.testing.assert_close(got.logits_per_image, want.logits_per_image, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.image_embeds, want.image_embeds, rtol=0, atol=1e-5)
    # ... and polymodal reads its own HF folder back.
    again = polymodal.load(tmp_path / "hf")
    torch.testing.assert_close(_ours(again, texts, pixels).logits_per_image, got.logits_per_image, rtol=0, atol=0)


def test_save_hf_refuses_architectures_transformers_cannot_express(tmp_path):
    cfg = load_preset("clip-tiny")
    cfg.vision = ViTConfig(**{**cfg.vision.to_dict(), "pool": "mean"})
    model = build_model(cfg)
    model.fit_tokenizer(["red heart", "dog face"] * 3)
    with pytest.raises(ConfigError, match="pool='cls'"):
        polymodal.save(model, tmp_path / "hf", kind="hf-clip")
    with pytest.raises(ConfigError, match="no tokenizer"):
        polymodal.save(build_model(load_preset("clip-tiny")), tmp_path / "hf2", kind="hf-clip")


# ------------------------------------------------------------------------------------------ broken folders
def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_weights_file_is_named(hf_dir, tmp_path):
    d = _copy(hf_dir, tmp_path / "d")
    (d / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing model.safetensors"):
        polymodal.load(d)


def test_missing_tokenizer_files_are_named(hf_dir, tmp_path):
    d = _copy(hf_dir, tmp_path / "d")
    (d / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"no tokenizer: missing tokenizer\.json"):
        polymodal.load(d)


def test_unknown_and_missing_keys_are_named(hf_dir, tmp_path):
    d = _copy(hf_dir, tmp_path / "d")
    weights = load_file(str(d / "model.safetensors"))
    weights["vision_model.extra_head.weight"] = torch.zeros(2)
    del weights["text_projection.weight"]
    save_file(weights, str(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing 1 key\(s\), e.g. \['text_projection.weight'\]; "
                                              r"1 unknown key\(s\), e.g. \['vision_model.extra_head.weight'\]"):
        polymodal.load(d)


def test_shape_mismatch_and_bad_config_are_named(hf_dir, tmp_path):
    d = _copy(hf_dir, tmp_path / "d")
    cfg = json.loads((d / "config.json").read_text())
    cfg["projection_dim"] = 16
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"visual.proj.weight has shape \(24, 32\)"):
        polymodal.load(d)
    cfg["vision_config"]["hidden_act"] = "relu"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="hidden_act"):
        polymodal.load(d)
    (d / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="config.json"):
        polymodal.load(d)
