"""Fusion modules: every parameter registered, trained and saved; TFN and LMF against their equations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from polymodal.errors import ConfigError, ShapeError
from polymodal.fusion import FUSIONS, CrossModalFusion, LowRankFusion, TensorFusion

DIMS = {"image": 6, "audio": 5}
OPTIONS = {
    "cross_modal": {"model_dim": 8, "heads": 2, "depth": 1},
    "low_rank": {"rank": 3},
    "relation": {"model_dim": 8, "g_depth": 2, "coordinates": False},  # 3 tokens are no square grid
}


def _inputs(batch: int = 4, tokens: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    feats = {
        m: torch.randn((batch, 3, d) if tokens else (batch, d), generator=g, requires_grad=True)
        for m, d in DIMS.items()
    }
    # row 1 lacks image, row 2 lacks audio: the missing embeddings must be used (and so trained)
    present = {"image": torch.tensor([True, False, True, True]), "audio": torch.tensor([True, True, False, True])}
    return feats, present


def _build(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return FUSIONS[kind](DIMS, 7, **OPTIONS.get(kind, {}))


@pytest.mark.parametrize("kind", sorted(FUSIONS))
def test_every_parameter_registered_trained_and_saved(kind: str, tmp_path: Path) -> None:
    fusion = _build(kind)
    fusion.train()
    feats, present = _inputs(tokens=fusion.uses_tokens)
    out = fusion(feats, present)
    assert out.shape == (4, 7)
    out.square().sum().backward()
    params = dict(fusion.named_parameters())
    # every tensor attribute that is a Parameter anywhere in the module tree is in named_parameters
    reachable = {id(p) for mod in fusion.modules() for p in vars(mod).get("_parameters", {}).values() if p is not None}
    assert reachable == {id(p) for p in params.values()}
    for name, p in params.items():
        assert p.grad is not None, f"{kind}: {name} got no gradient"
        assert float(p.grad.abs().sum()) > 0, f"{kind}: {name} has an all-zero gradient"
    assert "missing.image" in params and "missing.audio" in params
    # save / load through safetensors into a fresh, differently initialised module
    save_file({k: v.detach().contiguous() for k, v in fusion.state_dict().items()}, str(tmp_path / "f.safetensors"))
    torch.manual_seed(123)
    other = FUSIONS[kind](DIMS, 7, **OPTIONS.get(kind, {}))
    other.load_state_dict(load_file(str(tmp_path / "f.safetensors")), strict=True)
    fusion.eval()
    other.eval()
    with torch.no_grad():
        torch.testing.assert_close(other(feats, present), fusion(feats, present), rtol=0, atol=0)


def test_low_rank_factors_are_parameters_unlike_multibench() -> None:
    f = LowRankFusion(DIMS, 7, rank=3)
    names = set(dict(f.named_parameters()))
    assert {"factors.0", "factors.1", "fusion_weights", "fusion_bias"} <= names
    assert set(f.state_dict()) >= {"factors.0", "factors.1"}


@pytest.mark.parametrize("kind", sorted(FUSIONS))
def test_absent_rows_ignore_their_features(kind: str) -> None:
    fusion = _build(kind).eval()
    feats, present = _inputs(tokens=fusion.uses_tokens)
    changed = {m: v.detach().clone() for m, v in feats.items()}
    changed["image"][1] += 100.0  # row 1 has no image: whatever is there must not matter
    with torch.no_grad():
        a, b = fusion(feats, present), fusion(changed, present)
    torch.testing.assert_close(a[1], b[1])
    changed["image"][0] += 1.0  # row 0 has its image: it must matter
    with torch.no_grad():
        assert not torch.allclose(fusion(changed, present)[0], a[0])


def test_tensor_fusion_is_the_outer_product_of_tfn() -> None:
    f = TensorFusion({"a": 2, "b": 3}, 4)
    x, y = torch.randn(5, 2), torch.randn(5, 3)
    present = {"a": torch.ones(5, dtype=torch.bool), "b": torch.ones(5, dtype=torch.bool)}
    za = torch.cat([x, torch.ones(5, 1)], 1)
    zb = torch.cat([y, torch.ones(5, 1)], 1)
    z = torch.einsum("bi,bj->bij", za, zb).reshape(5, -1)  # TFN eq. 2, flattened
    torch.testing.assert_close(f({"a": x, "b": y}, present), f.proj(z))


def test_low_rank_fusion_equals_tfn_with_the_rebuilt_weight_tensor() -> None:
    # LMF eq. 5-6: W = sum_r w_r (W_a^(r) (x) W_b^(r)); h = W . Z + b with Z the TFN outer product
    f = LowRankFusion({"a": 2, "b": 3}, 4, rank=5)
    x, y = torch.randn(6, 2), torch.randn(6, 3)
    present = {"a": torch.ones(6, dtype=torch.bool), "b": torch.ones(6, dtype=torch.bool)}
    fa, fb = f.factors[0], f.factors[1]  # (r, 3, 4), (r, 4, 4)
    w = torch.einsum("r,rio,rjo->ijo", f.fusion_weights[0], fa, fb)  # (3, 4, out)
    za = torch.cat([x, torch.ones(6, 1)], 1)
    zb = torch.cat([y, torch.ones(6, 1)], 1)
    want = torch.einsum("bi,bj,ijo->bo", za, zb, w) + f.fusion_bias
    torch.testing.assert_close(f({"a": x, "b": y}, present), want, rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_named() -> None:
    f = _build("early")
    feats, present = _inputs()
    with pytest.raises(ShapeError, match="modalities"):
        f({"image": feats["image"]}, present)
    with pytest.raises(ShapeError, match="audio"):
        f({**feats, "audio": torch.randn(4, 9)}, present)
    with pytest.raises(ShapeError, match="bool"):
        f(feats, {**present, "image": torch.ones(4)})
    with pytest.raises(ConfigError, match="rank"):
        LowRankFusion(DIMS, 4, rank=0)
    with pytest.raises(ConfigError, match="two modalities"):
        FUSIONS["cross_modal"]({"image": 4}, 4)


def _cross(pool: str) -> CrossModalFusion:
    torch.manual_seed(0)
    return CrossModalFusion(DIMS, 7, model_dim=8, heads=2, depth=2, pool=pool)


def test_cross_modal_query_pool_is_trained_and_old_state_dicts_still_load() -> None:
    mean, query = _cross("mean"), _cross("query")
    # a model saved before the option (mean pooling) has no query tokens: its state dict loads unchanged
    assert set(query.state_dict()) - set(mean.state_dict()) == {"query.image", "query.audio"}
    _cross("mean").load_state_dict(mean.state_dict(), strict=True)
    feats, present = _inputs(tokens=True)
    query(feats, present).square().sum().backward()
    for m in DIMS:
        assert float(query.query[m].grad.abs().sum()) > 0, m
    with pytest.raises(ConfigError, match="pool"):
        CrossModalFusion(DIMS, 7, model_dim=8, heads=2, pool="max")


@pytest.mark.parametrize("pool", ["mean", "query"])
def test_cross_modal_pools_ignore_padding_but_not_the_valid_tokens(pool: str) -> None:
    fusion = _cross(pool).eval()
    feats, present = _inputs(tokens=True)
    feats = {m: v.detach() for m, v in feats.items()}
    masks = {m: torch.ones(4, 3, dtype=torch.bool) for m in DIMS}
    padded = {**feats, "image": torch.cat([feats["image"], 50 * torch.randn(4, 2, DIMS["image"])], 1)}
    padded_masks = {**masks, "image": torch.cat([masks["image"], torch.zeros(4, 2, dtype=torch.bool)], 1)}
    with torch.no_grad():
        a = fusion(feats, present, masks)
        b = fusion(padded, present, padded_masks)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)  # padded image tokens: as if not there
        # the query (or the mean) still reads the valid tokens of both modalities
        for m in DIMS:
            changed = {**feats, m: feats[m].clone()}
            changed[m][0, 1] += 1.0
            assert not torch.allclose(fusion(changed, present, masks)[0], a[0]), m


def test_query_pool_output_is_the_query_token_through_the_blocks() -> None:
    # the definition: prepend the learned query to the target's tokens, run the blocks, normalise, take
    # token 0 (BERT's [CLS]); the other modality's tokens are the memory, without a query.
    fusion = _cross("query").eval()
    feats, present = _inputs(tokens=True)
    with torch.no_grad():
        tok = {m: fusion.inputs[m](fusion.fill_missing(feats[m], present[m], m)) + fusion.type_embed[m] for m in DIMS}
        # an absent modality keeps one (filled) token: rows 1 (image) and 2 (audio) here
        pad = {m: torch.zeros(4, 3, dtype=torch.bool) for m in DIMS}
        for m in DIMS:
            pad[m][~present[m], 1:] = True
        pooled = []
        for m in fusion.modalities:
            (o,) = [o for o in fusion.modalities if o != m]
            x = torch.cat([fusion.query[m].expand(4, 1, -1), tok[m]], 1)  # (B, 1 + N, d)
            x_pad = torch.cat([torch.zeros(4, 1, dtype=torch.bool), pad[m]], 1)  # (B, 1 + N)
            for block in fusion.blocks[m]:
                x = block(x, tok[o], key_padding_mask=x_pad, memory_key_padding_mask=pad[o])
            pooled.append(fusion.norm(x)[:, 0])
        want = fusion.out(torch.cat(pooled, -1))
        torch.testing.assert_close(fusion(feats, present), want, rtol=1e-5, atol=1e-5)
