"""CLIP from scratch: towers, the one-position last layer, padding, bad input, presets, save/load with the
tokenizer, attention maps, the trainer's loop end to end, and (slow) learning on OpenMoji."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from polymodal.data.pairs import PairSet, load_pairs
from polymodal.errors import CheckpointError, ConfigError, ShapeError
from polymodal.models.aligner import TextTrunk
from polymodal.models.build import PRESET_DIR, build_model, load_preset, preset_names
from polymodal.models.clip import CLIP, CLIPConfig
from polymodal.models.io import load, save
from polymodal.towers.text_transformer import TextTransformer, TextTransformerConfig
from polymodal.towers.vit import VisionTransformer, ViTConfig, patch_grid_attention

CAPTIONS = ["red heart", "green apple", "grinning face", "dog face", "cat face", "rocket", "thumbs up",
            "party popper", "red apple", "smiling face with heart-eyes"]  # fmt: skip


def tiny_config(**kw) -> CLIPConfig:
    return CLIPConfig(
        embed_dim=16,
        vision=ViTConfig(image_size=16, patch_size=4, width=32, layers=2, heads=2),
        text=TextTransformerConfig(context_length=12, vocab_size=300, width=32, layers=2, heads=2),
        **kw,
    )


@pytest.fixture
def tiny() -> CLIP:
    torch.manual_seed(0)
    model = CLIP(tiny_config())
    model.fit_tokenizer(CAPTIONS * 2)
    return model


def images(n: int, size: int = 20) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size, size + 3 * i, 3), dtype=np.uint8)) for i in range(n)]


# ------------------------------------------------------------------------------------------ config
def test_configs_reject_bad_values():
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        ViTConfig(image_size=30, patch_size=4)
    with pytest.raises(ConfigError, match="multiple of heads"):
        TextTransformerConfig(width=30, heads=4)
    with pytest.raises(ConfigError, match="pool"):
        ViTConfig(pool="max")
    with pytest.raises(ConfigError, match="activation"):
        TextTransformerConfig(act="swish2")
    with pytest.raises(ConfigError, match="tokenizer"):
        CLIPConfig(tokenizer="sentencepiece")
    with pytest.raises(ConfigError, match="unknown clip config keys: colour"):
        CLIPConfig.from_dict({"kind": "clip", "colour": 1})
    with pytest.raises(ConfigError, match=r"ViTConfig: unknown keys \['depth'\]"):
        CLIPConfig.from_dict({"kind": "clip", "vision": {"depth": 3}})


def test_config_round_trips_through_json():
    cfg = tiny_config(autocast_bf16=True)
    again = CLIPConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize("name", [n for n in preset_names() if n.startswith("clip")])
def test_every_clip_preset_builds_trains_one_step(name):
    cfg = load_preset(name)
    assert isinstance(cfg, CLIPConfig)
    assert "description" in json.loads((PRESET_DIR / f"{name}.json").read_text())
    torch.manual_seed(0)
    model = build_model(cfg)
    model.fit_tokenizer(CAPTIONS)
    x = torch.randn(2, 3, cfg.vision.image_size, cfg.vision.image_size)
    tokens = model.tokenize(CAPTIONS[:2])
    out = model(x, tokens.input_ids, tokens.attention_mask)
    assert out.logits_per_image.shape == (2, 2)
    out.logits_per_image.diagonal().sum().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n


def test_bench_preset_is_the_issues_architecture():
    cfg = load_preset("clip-bench")
    v, t = cfg.vision, cfg.text
    assert (v.image_size, v.patch_size, v.width, v.layers, v.heads) == (32, 4, 192, 6, 3)
    assert (t.context_length, t.width, t.layers, t.heads, cfg.embed_dim) == (32, 192, 4, 3, 128)


# ------------------------------------------------------------------------------------------ towers
@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_one_position_last_layer_equals_the_full_stack(pool):
    torch.manual_seed(0)
    vit = VisionTransformer(ViTConfig(image_size=16, patch_size=4, width=32, layers=3, heads=4, pool=pool),
                            output_dim=8).double()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    fast = vit.pooled(x)
    h = vit.encoder(vit.embed(x))  # every position through every layer
    full = vit.ln_post(h[:, 0]) if pool == "cls" else vit.ln_post(h).mean(dim=1)
    torch.testing.assert_close(fast, full, rtol=0, atol=1e-12)
    g_fast, = torch.autograd.grad(fast.square().sum(), x)
    g_full, = torch.autograd.grad(full.square().sum(), x)
    torch.testing.assert_close(g_fast, g_full, rtol=0, atol=1e-12)


def test_vit_patch_embedding_matches_a_manual_patch_projection():
    torch.manual_seed(0)
    vit = VisionTransformer(ViTConfig(image_size=8, patch_size=4, width=8, layers=1, heads=2, pool="mean",
                                      ln_pre=False, pos_embedding="sinusoidal"), output_dim=4)
    x = torch.randn(1, 3, 8, 8)
    patches = x.unfold(2, 4, 4).unfold(3, 4, 4)  # (1, 3, 2, 2, 4, 4)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(1, 4, 48)  # row-major patches, (C, P, P) each
    want = patches @ vit.patch_embed.weight.reshape(8, 48).T + vit.pos.table[:4]
    torch.testing.assert_close(vit.embed(x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("causal", "pool"), [(True, "eot"), (False, "eot"), (True, "mean"), (False, "mean")])
def test_text_features_do_not_depend_on_padding(causal, pool):
    torch.manual_seed(0)
    tower = TextTransformer(TextTransformerConfig(context_length=10, vocab_size=50, width=16, layers=2, heads=2,
                                                  causal=causal, pool=pool), output_dim=8).double()
    lengths = [10, 4, 7, 2]
    ids = torch.randint(4, 50, (4, 10))
    mask = torch.zeros(4, 10, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, n:] = 0
    batched = tower(ids, mask)
    alone = torch.cat([tower(ids[i : i + 1, :n]) for i, n in enumerate(lengths)])  # each row unpadded
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-12)
    # Garbage in the padding changes nothing either.
    noisy = ids.masked_fill(mask == 0, 49)
    torch.testing.assert_close(tower(noisy, mask), batched, rtol=0, atol=1e-12)


def test_bad_tower_inputs_raise_one_clear_error(tiny):
    ids = torch.randint(4, 100, (2, 5))
    with pytest.raises(ShapeError, match=r"images must be a float tensor \(B, 3, 16, 16\)"):
        tiny.image_features(torch.randn(2, 3, 32, 32))
    with pytest.raises(ShapeError, match="attention_mask must be a bool or integer tensor of shape"):
        tiny.text_features(TextTrunk(ids, torch.ones(2, 5)))  # float mask
    with pytest.raises(ShapeError, match=r"shape \(2, 5\)"):
        tiny.text_features(TextTrunk(ids, torch.ones(2, 4, dtype=torch.long)))  # wrong length
    with pytest.raises(ShapeError, match="right padding"):
        tiny.text_features(TextTrunk(ids, torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])))
    with pytest.raises(ShapeError, match=r"token ids must be in \[0, 300\)"):
        tiny.text_features(TextTrunk(ids + 300, None))
    with pytest.raises(ShapeError, match="context length is 12"):
        tiny.text_features(TextTrunk(torch.randint(4, 100, (2, 13)), None))
    with pytest.raises(ShapeError, match="int64"):
        tiny.text_features(TextTrunk(ids.float(), None))


def test_tokenizer_must_be_fitted_first():
    model = CLIP(tiny_config())
    with pytest.raises(ConfigError, match="fit_tokenizer"):
        model.encode_text(["red heart"])
    with pytest.raises(ConfigError, match="fit_tokenizer"):
        _ = model.text_trunk_id
    big = CLIP(CLIPConfig(text=TextTransformerConfig(vocab_size=270)))
    with pytest.raises(ConfigError, match="raise text.vocab_size"):
        big.set_tokenizer(CLIP(tiny_config()).fit_tokenizer(CAPTIONS * 30))


# ------------------------------------------------------------------------------------------ model API
def test_trunk_protocol_and_encoders(tiny):
    imgs = images(3)
    x = tiny.preprocess(imgs)
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.float32
    assert torch.equal(tiny.image_trunk(x), x)
    z = tiny.image_features(x)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(tiny.encode_image(imgs), z)
    tokens = tiny.tokenize(CAPTIONS[:4])
    trunk = tiny.text_trunk(tokens)
    assert trunk.hidden.dtype == torch.long and torch.equal(trunk.mask, tokens.attention_mask)
    torch.testing.assert_close(tiny.encode_text(CAPTIONS[:4]), tiny.text_features(trunk))
    assert tiny.tokenizer is not None and tiny.tokenizer.tokenizer_id in tiny.text_trunk_id
    assert "size=16" in tiny.image_trunk_id
    assert set(tiny.trainable_state_dict()) == {n for n, _ in tiny.named_parameters()}
    probs = tiny.zeroshot(imgs[:2], ["red heart", "rocket", "dog face"])
    assert [len(p) for p in probs] == [3, 3]
    assert math.isclose(sum(pr for _, pr in probs[0]), 1.0, rel_tol=1e-5)
    assert probs[0][0][1] >= probs[0][1][1]
    assert tiny.scale().item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_transparent_images_are_composited_on_white(tiny):
    clear = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    white = Image.new("RGB", (16, 16), (255, 255, 255))
    assert torch.equal(tiny.preprocess([clear]), tiny.preprocess([white]))


def test_bf16_autocast_option_keeps_float32_features(tiny):
    x = tiny.preprocess(images(2))
    ref = tiny.image_features(x)
    tiny.config.autocast_bf16 = True
    got = tiny.image_features(x)
    txt = tiny.encode_text(CAPTIONS[:2])
    assert got.dtype == torch.float32 and txt.dtype == torch.float32
    assert F.cosine_similarity(got, ref).min() > 0.98


def test_save_and_load_keep_weights_and_tokenizer(tiny, tmp_path):
    save(tiny, tmp_path / "m")
    assert (tmp_path / "m" / "tokenizer.json").is_file()
    back = load(tmp_path / "m")
    assert isinstance(back, CLIP) and not back.training
    assert back.tokenizer is not None and back.tokenizer.tokenizer_id == tiny.tokenizer.tokenizer_id
    tiny.eval()
    x = tiny.preprocess(images(2))
    torch.testing.assert_close(back.image_features(x), tiny.image_features(x), rtol=0, atol=0)
    torch.testing.assert_close(back.encode_text(CAPTIONS), tiny.encode_text(CAPTIONS), rtol=0, atol=0)
    (tmp_path / "m" / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="missing tokenizer.json"):
        load(tmp_path / "m")


# ------------------------------------------------------------------------------------------ attention
def test_attention_maps_and_figure(tiny, tmp_path):
    from polymodal.models.clip_plots import plot_attention_maps

    imgs = images(2)
    maps = tiny.attention_maps(imgs)
    assert maps.shape == (2, 2, 2, 17, 17)  # (L, B, H, 1 + 16 patches, same)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 2, 17))
    for rollout in (False, True):
        grid = patch_grid_attention(maps, has_cls=True, grid=4, rollout=rollout)
        assert grid.shape == (2, 4, 4)
        torch.testing.assert_close(grid.sum(dim=(1, 2)), torch.ones(2))
    png = plot_attention_maps(tiny, imgs, tmp_path / "attn.png", captions=["a", "b"])
    assert Image.open(png).size[0] > 300


# ------------------------------------------------------------------------------------------ training
def _subset(ps: PairSet, n: int) -> PairSet:
    return PairSet(ps.name, ps.images[:n], ps.captions[:n], ps.keys[:n],
                   {k: v[:n] for k, v in ps.labels.items()})


def test_trainer_runs_clip_end_to_end(tmp_path):
    from polymodal.eval.aligner_eval import evaluate_aligner
    from polymodal.train.feature_cache import FeatureCache
    from polymodal.train.fit import DualEncoderTrainer, TrainConfig
    from polymodal.train.loop import seed_everything

    train, val, test = (_subset(load_pairs("builtin:openmoji", s), n) for s, n in
                        (("train", 48), ("val", 16), ("test", 16)))
    seed_everything(0)
    model = build_model(load_preset("clip-tiny"))
    model.fit_tokenizer([c for caps in train.captions for c in caps])
    cache = FeatureCache(tmp_path / "cache")
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-3, image_views=1, patience=5)
    before = {k: v.clone() for k, v in model.trainable_state_dict().items()}
    fit = DualEncoderTrainer(model, train, val, cfg, cache=cache, progress=False).fit(tmp_path / "ckpt")
    assert len(fit.history) == 2 and all(math.isfinite(h["train_loss"]) for h in fit.history)
    after = model.trainable_state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in ("visual.proj.weight", "text.proj.weight"))
    ev = evaluate_aligner(model, test, cache=cache, train=train, val=val, probe=False)
    assert 0.0 <= ev.metrics["image_retrieval_recall@1"] <= 1.0
    save(model, tmp_path / "run")
    back = load(tmp_path / "run")
    torch.testing.assert_close(back.encode_text(test.texts), model.eval().encode_text(test.texts))


@pytest.mark.slow
def test_from_scratch_tiny_clip_beats_chance_on_openmoji(tmp_path):
    """About a minute on 2 idle cores: 15 epochs of clip-tiny on OpenMoji's 1,857 training pairs."""
    from polymodal.eval.aligner_eval import evaluate_aligner
    from polymodal.train.feature_cache import FeatureCache
    from polymodal.train.fit import DualEncoderTrainer, TrainConfig
    from polymodal.train.loop import seed_everything

    torch.set_num_threads(2)
    train, val, test = (load_pairs("builtin:openmoji", s) for s in ("train", "val", "test"))
    seed_everything(0)
    model = build_model(load_preset("clip-tiny"))
    model.fit_tokenizer([c for caps in train.captions for c in caps])
    cache = FeatureCache(tmp_path / "cache")
    cfg = TrainConfig(epochs=15, batch_size=128, lr=2e-3, image_views=1, patience=15, warmup_fraction=0.1)
    DualEncoderTrainer(model, train, val, cfg, cache=cache, progress=False).fit()
    ev = evaluate_aligner(model, test, cache=cache, probe=False)
    chance = ev.baselines["chance"]
    for key in ("image_retrieval_recall@10", "text_retrieval_recall@10"):
        assert ev.metrics[key] > 4 * chance[key], (key, ev.metrics[key], chance[key])
    assert ev.metrics["text_retrieval_recall@1"] > 5 * chance["text_retrieval_recall@1"]
