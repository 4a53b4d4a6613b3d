"""FLAVA-style objectives (polymodal.losses, section 5) and the small FLAVA model (polymodal.flava).

Losses: float64 gradcheck, parity with plain torch references, masking behaviour (unmasked positions
contribute nothing), BERT 80/10/10 statistics, hard-negative mining. Model: shapes, padding and masking
invariants, one pretraining run lowering the loss, VQA fine-tuning keeping its best epoch, save/load.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

import polymodal
from polymodal.core import distributed
from polymodal.errors import CheckpointError, ConfigError, ShapeError
from polymodal.flava import (
    FlavaConfig,
    FlavaForVqa,
    FlavaModel,
    FlavaObjectives,
    PretrainConfig,
    VqaConfig,
    VqaTensors,
    evaluate_itm,
    evaluate_vqa,
    finetune_vqa,
    image_embeddings,
    pretrain,
    same_text,
    tokenize,
    zeroshot_classify_images,
)
from polymodal.losses import (
    IGNORE_INDEX,
    GlobalContrastiveLoss,
    ImageTextMatchingLoss,
    MaskedImageModelingLoss,
    MaskedLanguageModelingLoss,
    MaskedMultimodalModelingLoss,
    mask_patches,
    mask_tokens,
    mine_hard_negatives,
    patchify,
)
from polymodal.text import WordTokenizer

D64 = torch.float64


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------
# MLM
# ---------------------------------------------------------------------------------------------------------


def _mlm_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(1)
    logits = torch.randn(2, 5, 7, generator=g, dtype=D64)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 1], labels[0, 3], labels[1, 4] = 2, 6, 0
    return logits, labels


def test_mlm_matches_cross_entropy_over_masked_positions_and_gradchecks():
    logits, labels = _mlm_inputs()
    loss = MaskedLanguageModelingLoss()(logits, labels)
    ref = F.cross_entropy(logits.reshape(-1, 7), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss, ref)
    by_hand = (
        -(logits[0, 1].log_softmax(-1)[2] + logits[0, 3].log_softmax(-1)[6] + logits[1, 4].log_softmax(-1)[0])
        / 3
    )
    torch.testing.assert_close(loss, by_hand)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: MaskedLanguageModelingLoss()(x, labels), (logits,))


def test_mlm_unmasked_positions_contribute_nothing():
    logits, labels = _mlm_inputs()
    logits.requires_grad_(True)
    loss = MaskedLanguageModelingLoss()(logits, labels)
    loss.backward()
    unmasked = labels == IGNORE_INDEX
    assert logits.grad is not None
    assert torch.all(logits.grad[unmasked] == 0) and torch.any(logits.grad[~unmasked] != 0)
    changed = logits.detach().clone()
    changed[unmasked] = 100.0 * torch.randn(int(unmasked.sum()), 7, dtype=D64)
    torch.testing.assert_close(MaskedLanguageModelingLoss()(changed, labels), loss.detach(), rtol=0, atol=0)


def test_mlm_custom_ignore_index_and_empty_batch():
    logits, labels = _mlm_inputs()
    custom = torch.where(labels == IGNORE_INDEX, torch.full_like(labels, -1), labels)
    torch.testing.assert_close(
        MaskedLanguageModelingLoss(ignore_index=-1)(logits, custom),
        MaskedLanguageModelingLoss()(logits, labels),
    )
    nothing = torch.full((2, 5), IGNORE_INDEX)
    x = logits.clone().requires_grad_(True)
    zero = MaskedLanguageModelingLoss()(x, nothing)
    zero.backward()
    assert float(zero.detach()) == 0.0 and x.grad is not None and torch.all(x.grad == 0)
    with pytest.raises(ShapeError, match="labels"):
        MaskedLanguageModelingLoss()(logits, labels[:, :4])


def test_mask_tokens_bert_80_10_10_and_never_touches_padding_or_specials():
    vocab, mask_id, specials = 50, 50, (0, 1, 2, 3)
    b, t = 400, 40
    g = _gen(3)
    ids = torch.randint(4, vocab, (b, t), generator=g)
    ids[:, 0] = 2  # <bos>
    lengths = torch.randint(5, t, (b,), generator=g)
    ids[torch.arange(b), lengths] = 3  # <eos>
    attention = (torch.arange(t)[None, :] <= lengths[:, None]).long()
    ids = ids.masked_fill(attention == 0, 0)
    out = mask_tokens(
        ids, attention_mask=attention, mask_token_id=mask_id, vocab_size=vocab, special_ids=specials,
        mask_prob=0.15, generator=_gen(7),
    )  # fmt: skip
    eligible = (attention == 1) & (ids > 3)
    assert not torch.any(out.mask & ~eligible)  # padding, <bos>, <eos> never selected
    torch.testing.assert_close(out.input_ids[~out.mask], ids[~out.mask], rtol=0, atol=0)  # nor changed
    assert torch.all(out.labels[~out.mask] == IGNORE_INDEX) and torch.all(
        out.labels[out.mask] == ids[out.mask]
    )
    rate = out.mask.sum().item() / eligible.sum().item()
    assert abs(rate - 0.15) < 0.01
    chosen_in, chosen_orig = out.input_ids[out.mask], ids[out.mask]
    n = chosen_in.numel()
    frac_mask = (chosen_in == mask_id).sum().item() / n
    frac_same = (chosen_in == chosen_orig).sum().item() / n
    assert abs(frac_mask - 0.8) < 0.03
    # "unchanged" = the 10% kept plus random draws that happen to hit the original id (1 / 46 of 10%)
    assert abs(frac_same - (0.1 + 0.1 / 46)) < 0.02
    replaced = chosen_in[(chosen_in != mask_id) & (chosen_in != chosen_orig)]
    assert replaced.numel() > 0 and torch.all((replaced >= 4) & (replaced < vocab))  # no specials drawn
    again = mask_tokens(
        ids, attention_mask=attention, mask_token_id=mask_id, vocab_size=vocab, special_ids=specials,
        generator=_gen(7),
    )  # fmt: skip
    assert torch.equal(again.input_ids, out.input_ids) and torch.equal(again.labels, out.labels)


def test_mask_tokens_rejects_bad_input():
    ids = torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(ShapeError, match="attention_mask"):
        mask_tokens(ids, attention_mask=torch.ones(2, 4), mask_token_id=9, vocab_size=9)
    with pytest.raises(ConfigError, match="mask_prob"):
        mask_tokens(ids, attention_mask=torch.ones(2, 3), mask_token_id=9, vocab_size=9, mask_prob=0.0)


# ---------------------------------------------------------------------------------------------------------
# MIM
# ---------------------------------------------------------------------------------------------------------


def test_patchify_matches_einops_and_the_conv_patch_embedding_order():
    x = torch.randn(2, 3, 8, 12, generator=_gen(0))
    p = patchify(x, 4)
    assert torch.equal(p, rearrange(x, "b c (h p) (w q) -> b (h w) (p q c)", p=4, q=4))
    conv = torch.nn.Conv2d(3, 5, 4, stride=4, bias=False)
    tokens = conv(x).flatten(2).transpose(1, 2)  # (B, N, D) as the image encoder orders its patches
    weight = conv.weight.permute(0, 2, 3, 1).reshape(5, -1)  # (D, P*P*C) in patchify's value order
    torch.testing.assert_close(tokens, p @ weight.T)


def test_mask_patches_exact_count_seeded_and_varied():
    m = mask_patches(6, 16, mask_ratio=0.4, generator=_gen(2))
    assert m.dtype == torch.bool and m.shape == (6, 16)
    assert torch.all(m.sum(dim=1) == round(0.4 * 16))
    assert torch.equal(m, mask_patches(6, 16, mask_ratio=0.4, generator=_gen(2)))
    assert len({tuple(r.tolist()) for r in m}) > 1
    with pytest.raises(ConfigError):
        mask_patches(2, 16, mask_ratio=1.0)


def _mim_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = _gen(4)
    pred = torch.randn(2, 6, 12, generator=g, dtype=D64)
    patches = torch.rand(2, 6, 12, generator=g, dtype=D64)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, [1, 4]] = True
    mask[1, [0, 2, 5]] = True
    return pred, patches, mask


def test_mim_is_mse_to_per_patch_normalised_pixels_on_masked_patches():
    pred, patches, mask = _mim_inputs()
    loss = MaskedImageModelingLoss()(pred, patches, mask)
    target = (patches - patches.mean(-1, keepdim=True)) / (
        patches.var(-1, unbiased=False, keepdim=True) + 1e-6
    ).sqrt()
    per_patch = ((pred - target) ** 2).mean(-1)  # MAE's loss: mean over pixels, then over masked patches
    torch.testing.assert_close(loss, (per_patch * mask).sum() / mask.sum())
    raw = MaskedImageModelingLoss(norm_pix=False)(pred, patches, mask)
    torch.testing.assert_close(raw, ((pred - patches) ** 2).mean(-1)[mask].mean())
    pred.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: MaskedImageModelingLoss()(x, patches, mask), (pred,))


def test_mim_visible_patches_change_nothing():
    pred, patches, mask = _mim_inputs()
    x = pred.clone().requires_grad_(True)
    loss = MaskedImageModelingLoss()(x, patches, mask)
    loss.backward()
    assert x.grad is not None and torch.all(x.grad[~mask] == 0) and torch.any(x.grad[mask] != 0)
    other_pred, other_patches = pred.clone(), patches.clone()
    other_pred[~mask] = 50.0
    other_patches[~mask] = torch.rand(int((~mask).sum()), 12, dtype=D64)  # a different unmasked target
    torch.testing.assert_close(
        MaskedImageModelingLoss()(other_pred, other_patches, mask), loss.detach(), rtol=0, atol=0
    )
    changed = patches.clone()
    changed[mask] += 0.5 * torch.rand(int(mask.sum()), 12, dtype=D64)  # a masked target does matter
    assert not torch.isclose(MaskedImageModelingLoss()(pred, changed, mask), loss.detach())


# ---------------------------------------------------------------------------------------------------------
# MMM, ITM, contrastive
# ---------------------------------------------------------------------------------------------------------


def test_mmm_is_weighted_mlm_plus_mim_and_gradchecks():
    logits, labels = _mlm_inputs()
    pred, patches, mask = _mim_inputs()
    out = MaskedMultimodalModelingLoss(text_weight=0.5, image_weight=2.0)(logits, labels, pred, patches, mask)
    torch.testing.assert_close(out.text, MaskedLanguageModelingLoss()(logits, labels))
    torch.testing.assert_close(out.image, MaskedImageModelingLoss()(pred, patches, mask))
    torch.testing.assert_close(out.loss, 0.5 * out.text + 2.0 * out.image)
    logits.requires_grad_(True)
    pred.requires_grad_(True)
    mmm = MaskedMultimodalModelingLoss()
    assert torch.autograd.gradcheck(lambda a, b: mmm(a, labels, b, patches, mask).loss, (logits, pred))


def test_itm_loss_is_binary_cross_entropy_and_gradchecks():
    logits = torch.randn(6, generator=_gen(5), dtype=D64)
    labels = torch.tensor([1, 1, 0, 0, 0, 1])
    loss = ImageTextMatchingLoss()(logits, labels)
    p = torch.sigmoid(logits)
    ref = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean()
    torch.testing.assert_close(loss, ref)
    weighted = ImageTextMatchingLoss(pos_weight=2.0)(logits[:, None], labels)
    torch.testing.assert_close(weighted, -(2 * labels * p.log() + (1 - labels) * (1 - p).log()).mean())
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: ImageTextMatchingLoss()(x, labels), (logits,))
    with pytest.raises(ShapeError, match="0/1"):
        ImageTextMatchingLoss()(logits, torch.full((6,), 2))


def test_hard_negatives_never_pick_the_positive():
    g = _gen(6)
    for _ in range(50):
        sim = torch.randn(5, 5, generator=g) * 5
        sim.diagonal().add_(20.0)  # even a dominant positive is never drawn
        neg = mine_hard_negatives(sim, generator=g)
        assert torch.all(neg.text_for_image != torch.arange(5)) and torch.all(
            neg.image_for_text != torch.arange(5)
        )


def test_hard_negatives_follow_the_similarity():
    sim = torch.tensor(
        [[0.0, 2.0, 1.0, 0.0], [1.0, 0.0, 0.0, 3.0], [0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    )
    g = _gen(8)
    draws = 4000
    counts_t = torch.zeros(4, 4)
    counts_i = torch.zeros(4, 4)
    for _ in range(draws):
        neg = mine_hard_negatives(sim, generator=g)
        counts_t[torch.arange(4), neg.text_for_image] += 1
        counts_i[torch.arange(4), neg.image_for_text] += 1
    eye = torch.eye(4, dtype=torch.bool)
    expected_t = sim.masked_fill(eye, -math.inf).softmax(dim=1)
    expected_i = sim.T.masked_fill(eye, -math.inf).softmax(dim=1)
    # 4000 draws: binomial standard error <= 0.008, so 0.03 is about 4 sigma
    torch.testing.assert_close(counts_t / draws, expected_t, atol=0.03, rtol=0)
    torch.testing.assert_close(counts_i / draws, expected_i, atol=0.03, rtol=0)
    peaked = torch.zeros(3, 3)
    peaked[0, 2] = peaked[1, 0] = peaked[2, 1] = 50.0
    neg = mine_hard_negatives(peaked, generator=g)
    assert neg.text_for_image.tolist() == [2, 0, 1] and neg.image_for_text.tolist() == [1, 2, 0]
    with pytest.raises(ShapeError):
        mine_hard_negatives(torch.zeros(1, 1))


def test_hard_negatives_skip_pairs_marked_same_and_fall_back_when_nothing_is_left():
    # Rows 0 and 1 carry the same caption: the contrastive similarity ranks them first, yet neither is a
    # negative of the other.
    sim = torch.zeros(4, 4)
    sim[0, 1] = sim[1, 0] = 30.0
    same = torch.eye(4, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True
    g = _gen(9)
    for _ in range(200):
        neg = mine_hard_negatives(sim, same=same, generator=g)
        assert neg.text_for_image[0] not in (0, 1) and neg.text_for_image[1] not in (0, 1)
        assert neg.image_for_text[0] not in (0, 1) and neg.image_for_text[1] not in (0, 1)
    # Everything marked: the draw falls back to any other row instead of failing.
    neg = mine_hard_negatives(torch.zeros(3, 3), same=torch.ones(3, 3, dtype=torch.bool), generator=g)
    assert torch.all(neg.text_for_image != torch.arange(3))
    with pytest.raises(ShapeError, match="same"):
        mine_hard_negatives(sim, same=torch.ones(3, 3, dtype=torch.bool))


def test_same_text_ignores_padding():
    ids = torch.tensor([[2, 5, 3, 0], [2, 5, 3, 7], [2, 5, 3, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 0]])
    assert same_text(ids, mask).tolist() == [[True, False, True], [False, True, False], [True, False, True]]


_COLOURS = {
    "red": (1, -1, -1), "green": (-1, 1, -1), "blue": (-1, -1, 1), "yellow": (1, 1, -1),
    "cyan": (-1, 1, 1), "magenta": (1, -1, 1), "white": (1, 1, 1), "black": (-1, -1, -1),
}  # fmt: skip


def _colour_pairs(n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Solid-colour 8x8 images (with pixel noise) and the caption "a <colour> square": trivially separable."""
    g = _gen(seed)
    names = list(_COLOURS)
    idx = torch.randint(len(names), (n,), generator=g)
    rgb = torch.tensor([_COLOURS[names[i]] for i in idx.tolist()], dtype=torch.float32)
    images = rgb[:, :, None, None].expand(n, 3, 8, 8) + 0.1 * torch.randn(n, 3, 8, 8, generator=g)
    return images, [f"a {names[i]} square" for i in idx.tolist()]


def test_itm_learns_a_trivially_separable_set_with_the_contrastive_loss_on():
    # Eight colours, batches of 32: many rows of a batch share a caption. The contrastive similarities rank
    # those rows first, so before the fix their pairs were drawn as "hard negatives" of each other; ITM saw
    # the same (image, caption) labelled matched and unmatched, stayed at ln 2 and [CLS_M] collapsed.
    torch.manual_seed(0)
    tok = WordTokenizer.build([f"a {c} square" for c in _COLOURS])
    model = FlavaModel(
        FlavaConfig(
            vocab_size=tok.vocab_size, max_text_length=6, image_size=8, patch_size=4, width=32, heads=2,
            image_layers=1, text_layers=1, multimodal_layers=1, embed_dim=16,
        )  # fmt: skip
    )
    images, texts = _colour_pairs(256, seed=1)
    config = PretrainConfig(epochs=25, batch_size=32, lr=1e-3, mlm=0, mim=0, mmm=0, seed=0)
    result = pretrain(model, images, [[t] for t in texts], tok, config)
    assert result.history[-1]["itm"] < 0.2, [round(h["itm"], 3) for h in result.history]
    held_images, held_texts = _colour_pairs(128, seed=2)
    held = tokenize(tok, held_texts, max_length=6)
    for negatives in ("hard", "random"):
        acc = evaluate_itm(model, held_images, held.input_ids, held.attention_mask, negatives=negatives)
        assert acc.accuracy > 0.9, (negatives, acc)


def _global_contrastive_by_hand(img: torch.Tensor, txt: torch.Tensor, scale: float) -> float:
    """FLAVA's global contrastive loss written out: mean of image->text and text->image InfoNCE."""
    n = img.shape[0]
    s = [[math.exp(scale) * float(img[i] @ txt[j]) for j in range(n)] for i in range(n)]
    i2t = sum(math.log(sum(math.exp(v) for v in s[i])) - s[i][i] for i in range(n)) / n
    t2i = sum(math.log(sum(math.exp(s[i][j]) for i in range(n))) - s[j][j] for j in range(n)) / n
    return (i2t + t2i) / 2


def test_global_contrastive_is_the_global_batch_infonce(monkeypatch):
    g = _gen(3)
    img = F.normalize(torch.randn(4, 5, generator=g, dtype=D64), dim=-1).requires_grad_(True)
    txt = F.normalize(torch.randn(4, 5, generator=g, dtype=D64), dim=-1).requires_grad_(True)
    scale = math.log(1 / 0.07)
    want = _global_contrastive_by_hand(img.detach(), txt.detach(), scale)
    single = GlobalContrastiveLoss()(img, txt, torch.tensor(scale, dtype=D64))
    assert single.item() == pytest.approx(want, rel=1e-12)
    # "Global" (Singh et al. 2022, sec. 3.2): under 2 processes of 2 rows each, rank 0 scores the gathered
    # 4 x 4 matrix, not its local 2 x 2 one, and gradients flow back through the gather to rank 1's rows.
    chunks = {"image_features": img.chunk(2), "text_features": txt.chunk(2)}
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    monkeypatch.setattr(distributed, "all_gather_with_grad", lambda t, *, name: torch.cat(chunks[name]))
    monkeypatch.setattr(
        distributed, "all_gather_chunks", lambda t, *, name: [c.detach() for c in chunks[name]]
    )
    rank0 = GlobalContrastiveLoss()(chunks["image_features"][0], chunks["text_features"][0], scale)
    assert rank0.item() == pytest.approx(want, rel=1e-12)
    local = _global_contrastive_by_hand(img[:2].detach(), txt[:2].detach(), scale)
    assert rank0.item() != pytest.approx(local)
    rank0.backward()
    assert img.grad is not None and txt.grad is not None
    assert img.grad[2:].abs().sum() > 0 and txt.grad[2:].abs().sum() > 0  # rank 1's rows get gradient


# ---------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------

VOCAB = 20


def _config(**kw: object) -> FlavaConfig:
    base: dict[str, object] = dict(
        vocab_size=VOCAB, max_text_length=8, image_size=16, patch_size=4, width=32, heads=2,
        image_layers=1, text_layers=1, multimodal_layers=1, embed_dim=16,
    )  # fmt: skip
    base.update(kw)
    return FlavaConfig(**base)  # type: ignore[arg-type]


def _batch(b: int = 6, t: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    images = torch.rand(b, 3, 16, 16, generator=g) * 2 - 1
    ids = torch.randint(4, VOCAB, (b, t), generator=g)
    ids[:, 0] = WordTokenizer.BOS
    attention = torch.ones(b, t, dtype=torch.long)
    attention[0, 5:] = 0
    ids = ids.masked_fill(attention == 0, WordTokenizer.PAD)
    ids[0, 4] = WordTokenizer.EOS
    return images, ids, attention


def test_config_validation():
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        _config(image_size=15)
    with pytest.raises(ConfigError, match="heads"):
        _config(width=30, heads=4)
    with pytest.raises(ConfigError, match="unknown keys"):
        FlavaConfig.from_dict({"vocab_size": 5, "depth": 3})
    with pytest.raises(ConfigError, match="every loss weight is 0"):
        PretrainConfig(mlm=0, mim=0, mmm=0, itm=0, contrastive=0)
    with pytest.raises(ConfigError, match="mim"):
        PretrainConfig(mim=-1.0)


def test_shapes_through_the_model_and_one_cls_per_stream():
    torch.manual_seed(0)
    model = FlavaModel(_config()).eval()
    images, ids, attention = _batch()
    n = model.config.num_patches
    image_h = model.encode_image(images)
    text_h = model.encode_text(ids, attention)
    fused = model.fuse(image_h, text_h, attention)
    assert image_h.shape == (6, 1 + n, 32) and text_h.shape == (6, 8, 32)
    assert fused.shape == (6, 1 + (1 + n) + (1 + 7), 32)
    enc = model.multimodal_encoder
    assert fused[:, enc.image_slice()].shape[1] == n and fused[:, enc.text_slice()].shape[1] == 7
    emb = model.image_embedding(images)
    assert emb.shape == (6, 16)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(6))
    assert model.text_embedding(ids, attention).shape == (6, 16)
    assert model.multimodal_cls(images, ids, attention).shape == (6, 32)
    with pytest.raises(ShapeError, match="images"):
        model.encode_image(torch.rand(2, 3, 8, 8))
    with pytest.raises(ShapeError, match="MASK"):
        model.encode_text(torch.full((1, 3), VOCAB + 1), torch.ones(1, 3))


def test_padding_is_invisible_and_an_empty_patch_mask_changes_nothing():
    torch.manual_seed(0)
    model = FlavaModel(_config()).eval()
    images, ids, attention = _batch()
    with torch.no_grad():
        short = model.multimodal_cls(images[:1], ids[:1, :5], attention[:1, :5])
        padded = model.multimodal_cls(images[:1], ids[:1], attention[:1])  # same text plus 2 pads
        torch.testing.assert_close(short, padded, atol=1e-5, rtol=1e-5)
        none = torch.zeros(6, model.config.num_patches, dtype=torch.bool)
        torch.testing.assert_close(model.encode_image(images, patch_mask=none), model.encode_image(images))
        some = none.clone()
        some[:, 0] = True
        assert not torch.allclose(model.encode_image(images, patch_mask=some), model.encode_image(images))


def test_objective_weights_turn_objectives_off_and_sum():
    torch.manual_seed(0)
    model = FlavaModel(_config())
    images, ids, attention = _batch()
    weights = dict(mlm=0.5, mim=2.0, mmm=1.0, itm=0.0, contrastive=3.0)
    out = FlavaObjectives(PretrainConfig(**weights))(model, images, ids, attention, generator=_gen(0))
    assert set(out.parts) == {"mlm", "mim", "mmm", "contrastive"}
    torch.testing.assert_close(out.total, sum(weights[k] * v for k, v in out.parts.items()))
    only_itm = FlavaObjectives(PretrainConfig(mlm=0, mim=0, mmm=0, contrastive=0))(
        model, images, ids, attention, generator=_gen(0)
    )
    assert set(only_itm.parts) == {"itm"}
    only_itm.total.backward()
    assert model.itm_head.out.weight.grad is not None and model.mlm_head.out.weight.grad is None


def test_a_tiny_pretraining_run_lowers_the_loss():
    torch.manual_seed(0)
    model = FlavaModel(_config())
    images, ids, attention = _batch(b=8, seed=1)
    tok = WordTokenizer([f"w{i}" for i in range(VOCAB - 4)])
    captions = [[tok.decode(row[m.bool()].tolist())] for row, m in zip(ids, attention, strict=True)]
    objectives = FlavaObjectives(PretrainConfig())

    def loss_now() -> float:
        with torch.no_grad():
            model.eval()
            return float(objectives(model, images, ids, attention, generator=_gen(42)).total)

    before = loss_now()
    result = pretrain(model, images, captions, tok, PretrainConfig(epochs=15, batch_size=8, lr=3e-3, seed=0))
    after = loss_now()
    assert result.steps == 15 and len(result.history) == 15
    assert after < 0.8 * before, (before, after)
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def _angle(h: torch.Tensor) -> torch.Tensor:
    return torch.cat([(0.3 * h).cos(), (0.3 * h).sin()], dim=-1)  # (B, 2), unit norm


class _IdentityMatcher(torch.nn.Module):
    """A stand-in FlavaModel over 1-pixel "images" and 1-token "texts" that each carry an id.

    The contrastive embedding of id ``k`` is ``(cos 0.3k, sin 0.3k)``, so hard negatives are nearby ids, and
    the ITM logit is ``sign * (0.5 - |id_image - id_text|)``: with ``sign = 1`` exactly the true pairs
    are positive, with ``sign = 0`` every logit is 0 (said "unmatched").
    """

    def __init__(self, sign: float) -> None:
        super().__init__()
        self.sign = sign
        self.contrastive = torch.nn.Module()
        self.contrastive.image = self.contrastive.text = _angle  # type: ignore[assignment]
        self.contrastive.logit_scale = torch.tensor(0.0)  # type: ignore[assignment]
        self.itm_head = lambda x: self.sign * (0.5 - x[:, 0].abs())

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return images.reshape(-1, 1, 1)  # (B, 1, 1): the id

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return ids.to(torch.float64).reshape(-1, 1, 1)

    def fuse(self, image_h: torch.Tensor, text_h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return image_h - text_h  # [CLS_M] = id difference


def test_evaluate_itm_counts_matched_and_unmatched_pairs():
    ids = torch.arange(10, dtype=torch.float64)
    images, texts, mask = ids.reshape(10, 1, 1, 1), ids.long().reshape(10, 1), torch.ones(10, 1)
    for negatives in ("hard", "random"):
        oracle = evaluate_itm(_IdentityMatcher(1.0), images, texts, mask, negatives=negatives, batch_size=4)
        # Batches of 4, 4 and 2 pairs: 10 true pairs and 10 negatives, all classified right.
        assert (oracle.accuracy, oracle.matched, oracle.unmatched, oracle.pairs) == (1.0, 1.0, 1.0, 10)
        blind = evaluate_itm(_IdentityMatcher(0.0), images, texts, mask, negatives=negatives, batch_size=4)
        assert (blind.accuracy, blind.matched, blind.unmatched) == (0.5, 0.0, 1.0)
    # A last batch of one pair has no negative to draw and is left out.
    assert evaluate_itm(_IdentityMatcher(1.0), images[:9], texts[:9], mask[:9], batch_size=4).pairs == 8
    with pytest.raises(ConfigError):
        evaluate_itm(_IdentityMatcher(1.0), images, texts, mask, negatives="easy")  # type: ignore[arg-type]


def _vqa_split(n: int, seed: int) -> VqaTensors:
    # Answer = whether the image is bright: learnable from the image through [CLS_M].
    g = _gen(seed)
    answers = torch.randint(0, 2, (n,), generator=g)
    images = (torch.rand(n, 3, 16, 16, generator=g) - 0.5) * 0.5 + (answers.float() - 0.5)[
        :, None, None, None
    ]
    ids = torch.randint(4, VOCAB, (n, 5), generator=g)
    return VqaTensors(
        images=images, input_ids=ids, attention_mask=torch.ones(n, 5, dtype=torch.long), answers=answers
    )


def test_vqa_finetuning_learns_and_keeps_the_best_validation_epoch():
    torch.manual_seed(0)
    model = FlavaForVqa(FlavaModel(_config()), num_answers=2)
    train, val = _vqa_split(64, 0), _vqa_split(32, 1)
    result = finetune_vqa(model, train, val, VqaConfig(epochs=4, batch_size=16, lr=2e-3))
    assert len(result.history) == 4 and 1 <= result.best_epoch <= 4
    assert result.best_val_acc == max(h["val_acc"] for h in result.history)
    assert evaluate_vqa(model, val) == result.best_val_acc  # the best epoch's weights are the ones kept
    assert result.best_val_acc > 0.8


def test_zeroshot_matches_the_cosine_argmax_of_prompt_means():
    torch.manual_seed(0)
    model = FlavaModel(_config()).eval()
    tok = WordTokenizer([f"w{i}" for i in range(VOCAB - 4)])
    images, _, _ = _batch()
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    prompts = {"a": ["w1 w2", "w3"], "b": ["w4"], "c": ["w5 w6 w7"]}
    metrics = zeroshot_classify_images(
        model, tok, images, labels, classnames=["a", "b", "c"], prompts=prompts
    )
    with torch.no_grad():
        cols = []
        for c in "abc":
            t = tokenize(tok, prompts[c], max_length=8)
            cols.append(F.normalize(model.text_embedding(t.input_ids, t.attention_mask).mean(0), dim=0))
        pred = (image_embeddings(model, images) @ torch.stack(cols, 1)).argmax(1)
    assert metrics.num_classes == 3 and metrics.num_samples == 6
    assert metrics.top1 == pytest.approx((pred == labels).float().mean().item())


@pytest.mark.parametrize("vqa", [False, True])
def test_save_load_round_trip_gives_equal_outputs(tmp_path, vqa):
    torch.manual_seed(0)
    tok = WordTokenizer([f"w{i}" for i in range(VOCAB - 4)])
    flava = FlavaModel(_config(), tokenizer=tok)
    answers = ["yes", "no", "2"] if vqa else []
    model: FlavaModel | FlavaForVqa = FlavaForVqa(flava, answers=answers) if vqa else flava
    model.eval()
    polymodal.save(model, tmp_path / "m", extra={"note": "x"})
    again = polymodal.load(tmp_path / "m")
    assert type(again) is type(model) and again.extra == {"note": "x"}
    assert again.tokenizer is not None and again.tokenizer.itos == tok.itos
    images, ids, attention = _batch()
    with torch.no_grad():
        if isinstance(model, FlavaForVqa):
            assert isinstance(again, FlavaForVqa) and again.answers == answers
            torch.testing.assert_close(again(images, ids, attention), model(images, ids, attention), rtol=0, atol=0)
        else:
            assert isinstance(again, FlavaModel)
            torch.testing.assert_close(again.fuse(again.encode_image(images), again.encode_text(ids, attention), attention),
                                       model.fuse(model.encode_image(images), model.encode_text(ids, attention), attention), rtol=0, atol=0)  # fmt: skip


def test_load_rejects_missing_and_mismatched_folders(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        polymodal.load(tmp_path)
    tok = WordTokenizer([f"w{i}" for i in range(VOCAB - 4)])
    polymodal.save(FlavaModel(_config(), tokenizer=tok), tmp_path / "m")
    cfg = (tmp_path / "m" / "config.json").read_text().replace('"width": 32', '"width": 64')
    (tmp_path / "m" / "config.json").write_text(cfg)
    with pytest.raises(CheckpointError, match="do not fit"):
        polymodal.load(tmp_path / "m")
    with pytest.raises(ConfigError, match="vocab_size"):
        FlavaModel(_config(vocab_size=30), tokenizer=tok)
    with pytest.raises(ConfigError, match="2 answers given for a head of 3"):
        FlavaForVqa(FlavaModel(_config()), num_answers=3, answers=["yes", "no"])


def test_pretraining_and_vqa_resume_bit_identically(tmp_path, monkeypatch):
    from _resume_helpers import assert_same_state, crash_after_checkpoints

    images, ids, attention = _batch(b=16, seed=1)
    tok = WordTokenizer([f"w{i}" for i in range(VOCAB - 4)])
    captions = [[tok.decode(row[m.bool()].tolist())] for row, m in zip(ids, attention, strict=True)]
    cfg = PretrainConfig(epochs=4, batch_size=8, lr=3e-3, seed=0)

    def pretrain_run(**kw):
        torch.manual_seed(0)
        model = FlavaModel(_config(dropout=0.1))  # dropout: the global generator must be restored too
        return model, pretrain(model, images, captions, tok, cfg, **kw)

    whole_model, whole = pretrain_run()
    crash_after_checkpoints(monkeypatch, 2, lambda: pretrain_run(checkpoint=tmp_path / "pre"))
    model, resumed = pretrain_run(checkpoint=tmp_path / "pre", resume=True)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    assert resumed.steps == whole.steps == 8
    assert_same_state(model, whole_model)
    with pytest.raises(ConfigError, match="lr=0.003; this run asks for lr=0.001"):
        pretrain(model, images, captions, tok, PretrainConfig(epochs=4, batch_size=8, lr=1e-3),
                 checkpoint=tmp_path / "pre", resume=True)

    train, val = _vqa_split(64, 0), _vqa_split(32, 1)

    def vqa_run(**kw):
        torch.manual_seed(0)
        model = FlavaForVqa(FlavaModel(_config(dropout=0.1)), num_answers=2)
        return model, finetune_vqa(model, train, val, VqaConfig(epochs=3, batch_size=16, lr=2e-3), **kw)

    whole_model, whole_vqa = vqa_run()
    crash_after_checkpoints(monkeypatch, 1, lambda: vqa_run(checkpoint=tmp_path / "vqa"))
    model, resumed_vqa = vqa_run(checkpoint=tmp_path / "vqa", resume=True)
    assert [h["loss"] for h in resumed_vqa.history] == [h["loss"] for h in whole_vqa.history]
    assert resumed_vqa.best_epoch == whole_vqa.best_epoch
    assert_same_state(model, whole_model)  # the best epoch's weights, kept across the crash


def test_pretrain_command_says_how_many_captions_max_text_length_cuts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from polymodal.cli.main import main
    from polymodal.models.io import load
    from polymodal.recipes import flava as flava_recipe
    from test_cli_resume import _pairs_csv

    monkeypatch.setitem(flava_recipe.VQA_SIZES, "train", 20)  # the questions only add words to the vocabulary
    argv = ["flava", "pretrain", "--data", _pairs_csv(tmp_path / "data"), "--epochs", "1", "--batch-size", "4",
            "--width", "16", "--layers", "1"]
    # "a red square": 3 words + <bos>/<eos> = 5 tokens; all 8 captions fit in 5 and are cut at 4
    assert main([*argv, "--max-text-length", "5", "--out", str(tmp_path / "fit")]) == 0
    assert "are cut" not in capsys.readouterr().err
    assert main([*argv, "--max-text-length", "4", "--out", str(tmp_path / "cut")]) == 0
    assert "8 captions are longer than --max-text-length 4 (with <bos>/<eos>) and are cut" in capsys.readouterr().err
    assert load(tmp_path / "cut").config.max_text_length == 4
