"""Captioner: shapes, loss masking and gradients, decoders (beam 1 = greedy), save/load, a tiny run."""

from __future__ import annotations

import math

import pytest
import torch

import polymodal
from polymodal.caption import (
    CaptionConfig,
    Captioner,
    CaptionTrainConfig,
    beam_search,
    caption_loss,
    extract_grids,
    greedy_decode,
    length_penalty,
    sample_decode,
    train_captioner,
)
from polymodal.caption.decode import _blocked
from polymodal.errors import CheckpointError, ConfigError, ShapeError
from polymodal.text import WordTokenizer

CAPTIONS = ["red heart", "blue heart", "grinning face", "smiling face with smiling eyes", "cat face", "red apple"]


def _model(seed: int = 0, **kw: object) -> Captioner:
    torch.manual_seed(seed)
    tok = WordTokenizer.build(CAPTIONS)
    cfg = CaptionConfig(vocab_size=tok.vocab_size, feature_dim=16, grid_cells=4, dim=32, heads=4, depth=2,
                        max_length=10, dropout=0.0, **kw)  # type: ignore[arg-type]
    return Captioner(cfg, tok).eval()


def test_initial_loss_is_uniform_prediction() -> None:
    # Tied input/output embeddings start small, so an untrained captioner predicts ~uniformly: its loss
    # starts at ln V. With torch's default N(0, 1) embedding init it started near 26 on OpenMoji.
    torch.manual_seed(0)
    tok = WordTokenizer.build(CAPTIONS)
    model = Captioner(CaptionConfig(vocab_size=tok.vocab_size, feature_dim=16, grid_cells=4, dim=192, heads=4,
                                    depth=2, max_length=10, dropout=0.0), tok).eval()
    ids = tok.encode(CAPTIONS, max_length=10).input_ids
    loss = caption_loss(model(torch.randn(len(CAPTIONS), 16, 2, 2), ids), ids, pad_id=tok.pad_id, label_smoothing=0.0)
    assert loss.item() == pytest.approx(math.log(tok.vocab_size), abs=0.3)
    assert torch.all(model.embed.weight[tok.pad_id] == 0)


def test_forward_shapes_and_causality() -> None:
    model = _model()
    grid = torch.randn(2, 16, 2, 2)
    ids = model.tokenizer.encode(["red heart", "cat face"], max_length=10).input_ids
    logits = model(grid, ids)
    assert logits.shape == (2, ids.shape[1], model.config.vocab_size)
    # Changing a later token must not change earlier positions' logits (causal decoder).
    ids2 = ids.clone()
    ids2[:, -1] = 5
    assert torch.allclose(model(grid, ids2)[:, :-1], logits[:, :-1], atol=1e-6)
    with pytest.raises(ShapeError, match="grid"):
        model(torch.randn(2, 8, 2, 2), ids)


def test_loss_ignores_padding_and_has_gradients() -> None:
    model = _model()
    grid = torch.randn(2, 16, 2, 2)
    ids = model.tokenizer.encode(["red heart", "smiling face with smiling eyes"], max_length=10).input_ids
    assert (ids == 0).any()
    logits = model(grid, ids)
    loss = caption_loss(logits, ids, pad_id=0, label_smoothing=0.0)
    # Manual: mean NLL over non-pad target positions only.
    logp = torch.log_softmax(logits[:, :-1], -1)
    tgt = ids[:, 1:]
    keep = tgt != 0
    manual = -logp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)[keep].mean()
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)
    # Changing the logits at padded target positions does not change the loss.
    bumped = logits.clone()
    bumped[:, :-1][~keep] += 100.0
    assert caption_loss(bumped, ids, pad_id=0, label_smoothing=0.0).item() == pytest.approx(loss.item(), rel=1e-5)
    # Label smoothing: (1 - eps) * NLL + eps * mean over the vocabulary of -log p.
    eps = 0.1
    smooth = (1 - eps) * manual + eps * (-logp.mean(-1))[keep].mean()
    assert caption_loss(logits, ids, pad_id=0, label_smoothing=eps).item() == pytest.approx(smooth.item(), rel=1e-5)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.memory_proj[1].weight.grad.abs().sum() > 0  # gradient reaches the image side


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_one_equals_greedy(seed: int) -> None:
    model = _model(seed)
    grid = torch.randn(3, 16, 2, 2, generator=torch.Generator().manual_seed(seed))
    g = greedy_decode(model, grid)
    b = beam_search(model, grid, beam_size=1, alpha=0.6)
    assert b.ids == g.ids
    g3 = greedy_decode(model, grid, no_repeat_ngram_size=2)
    b3 = beam_search(model, grid, beam_size=1, no_repeat_ngram_size=2)
    assert b3.ids == g3.ids


def test_beam_search_finds_at_least_greedy_probability() -> None:
    model = _model(3)
    grid = torch.randn(4, 16, 2, 2, generator=torch.Generator().manual_seed(3))
    greedy = greedy_decode(model, grid)
    beam = beam_search(model, grid, beam_size=4, alpha=0.0)  # alpha 0: raw log-probability
    for gi, gs, bs in zip(greedy.ids, greedy.scores, beam.scores, strict=True):
        if len(gi) + 2 <= model.config.max_length:  # greedy finished with eos within the limit
            assert bs >= gs - 1e-5


def test_ngram_blocking() -> None:
    assert sorted(_blocked([2, 5, 6, 5], 2)) == [6]  # "5 6" seen, prefix ends in 5 -> 6 banned
    assert _blocked([2, 5, 6], 3) == []
    model = _model(4)
    grid = torch.randn(3, 16, 2, 2)
    out = beam_search(model, grid, beam_size=3, no_repeat_ngram_size=1)
    for ids in out.ids:
        assert len(ids) == len(set(ids))  # no word twice
    assert length_penalty(1, 0.0) == 1.0 and length_penalty(7, 1.0) == pytest.approx(2.0)


def test_sampling_top_p_and_temperature() -> None:
    model = _model(5)
    grid = torch.randn(2, 16, 2, 2)
    # A tiny nucleus keeps only the most probable word: sampling equals greedy.
    s = sample_decode(model, grid, top_p=1e-6, generator=torch.Generator().manual_seed(0))
    assert s.ids == greedy_decode(model, grid).ids
    a = sample_decode(model, grid, temperature=2.0, generator=torch.Generator().manual_seed(1))
    b = sample_decode(model, grid, temperature=2.0, generator=torch.Generator().manual_seed(1))
    assert a.ids == b.ids
    with pytest.raises(ConfigError):
        sample_decode(model, grid, top_p=0.0)


def test_cross_attention_maps_are_distributions() -> None:
    model = _model()
    ids = model.tokenizer.encode(["red heart"], max_length=10).input_ids
    maps = model.cross_attention_maps(torch.randn(1, 16, 2, 2), ids)
    assert maps.shape == (2, 1, 4, ids.shape[1], 4)
    assert torch.allclose(maps.sum(-1), torch.ones(()), atol=1e-5)


def test_save_load_roundtrip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = _model()
    polymodal.save(model, tmp_path / "m")
    again = polymodal.load(tmp_path / "m")
    grid = torch.randn(2, 16, 2, 2)
    assert greedy_decode(again, grid).ids == greedy_decode(model, grid).ids
    assert again.head.weight is again.embed.weight
    with pytest.raises(CheckpointError, match="no config.json"):
        polymodal.load(tmp_path)


def test_tiny_end_to_end_learns_captions() -> None:
    # Images whose tower features differ; a random-initialised tower at 64 px keeps this fast.
    from PIL import Image

    from polymodal.towers.efficientnet import EfficientNetLite0

    colours = [(255, 0, 0), (0, 0, 255), (0, 200, 0), (250, 250, 0)]
    images = [Image.new("RGB", (64, 64), c) for c in colours]
    torch.manual_seed(0)
    grids = extract_grids(images, image_size=64, tower=EfficientNetLite0().eval())
    assert grids.shape == (4, 1280, 2, 2)
    grids = (grids - grids.mean(0)) / (grids.std(0) + 1e-6)  # random tower: standardise its features
    captions = ["red heart", "blue square", "green circle", "yellow star"]
    cfg = CaptionTrainConfig(epochs=60, batch_size=4, lr=3e-3, label_smoothing=0.1,
                             model={"dim": 32, "heads": 2, "depth": 1, "max_length": 6, "dropout": 0.0})
    result = train_captioner(grids, captions, cfg)
    assert result.history[-1]["loss"] < result.history[0]["loss"] * 0.5
    assert greedy_decode(result.model, grids).texts == captions
    assert not math.isnan(result.history[-1]["loss"])


def test_cli_captions_an_image_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from PIL import Image

    from polymodal.cli.caption_cmds import caption

    torch.manual_seed(0)
    tok = WordTokenizer.build(CAPTIONS)
    cfg = CaptionConfig(vocab_size=tok.vocab_size, grid_cells=4, dim=32, heads=2, depth=1, max_length=6, image_size=64)
    polymodal.save(Captioner(cfg, tok).eval(), tmp_path / "m")
    Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / "a.png")
    from click.testing import CliRunner

    res = CliRunner().invoke(caption, ["--model", str(tmp_path / "m"), "--json", str(tmp_path / "a.png")])
    assert res.exit_code == 0, res.output
    [row] = json.loads(res.output)  # --json: one document, a list with a row per image
    assert row["image"].endswith("a.png") and isinstance(row["caption"], str)
    assert CliRunner().invoke(caption, []).exit_code != 0  # no model: a usage error


def test_training_resumes_bit_identically(tmp_path, monkeypatch):
    from _resume_helpers import assert_same_state, crash_after_checkpoints

    grids = torch.randn(8, 1280, 2, 2, generator=torch.Generator().manual_seed(0))
    captions = ["red heart", "blue square", "green circle", "yellow star"] * 2
    cfg = CaptionTrainConfig(epochs=4, batch_size=4, lr=3e-3,
                             model={"dim": 32, "heads": 2, "depth": 1, "max_length": 6, "dropout": 0.1})
    whole = train_captioner(grids, captions, cfg)
    crash_after_checkpoints(monkeypatch, 2, lambda: train_captioner(grids, captions, cfg, checkpoint=tmp_path / "c"))
    resumed = train_captioner(grids, captions, cfg, checkpoint=tmp_path / "c", resume=True)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    assert_same_state(resumed.model, whole.model)
