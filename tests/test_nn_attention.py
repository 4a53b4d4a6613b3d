"""Attention: the soft lookup table, multi-head attention against torch.nn.MultiheadAttention, and the
lecture's five-step attention pooling."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from polymodal.errors import CheckpointError, ConfigError, ShapeError
from polymodal.nn import (
    AdditiveAttention,
    KVCache,
    MultiHeadAttention,
    dot_product_attention,
    load_torch_mha_state,
)

# ---------------------------------------------------------------------------------------------------
# dot_product_attention: the lookup table
# ---------------------------------------------------------------------------------------------------


def _table(n_keys: int = 6, dim: int = 8, dv: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    keys = torch.linalg.qr(torch.randn(dim, dim, generator=g)).Q[:n_keys]  # orthonormal rows (S, D)
    values = torch.randn(n_keys, dv, generator=g)  # (S, Dv)
    return keys, values


def test_dot_product_attention_matches_scaled_dot_product_attention() -> None:
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g, dtype=torch.float64) for n in (4, 7, 7))
    mask = torch.rand(2, 1, 4, 7, generator=g) > 0.3
    mask[..., 0] = True
    ours = dot_product_attention(q, k, v, mask=mask)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(ours.output, ref, rtol=0, atol=1e-12)
    assert ours.weights is not None
    torch.testing.assert_close(ours.weights.sum(-1), torch.ones(2, 3, 4, dtype=torch.float64))
    assert (ours.weights[~mask.expand(2, 3, 4, 7)] == 0).all()


def test_zero_temperature_is_an_exact_lookup_table() -> None:
    keys, values = _table()
    # Each query is a noisy version of one key; its best match is that key.
    picks = torch.tensor([3, 0, 5, 3, 1])
    queries = 2.0 * keys[picks] + 0.05 * torch.randn(len(picks), keys.shape[1])
    hard = dot_product_attention(queries, keys, values, temperature=0.0)
    assert torch.equal(hard.output, values[picks])
    assert torch.equal(hard.weights, F.one_hot(picks, len(keys)).float())


def test_temperature_to_zero_converges_to_the_lookup() -> None:
    keys, values = _table()
    picks = torch.tensor([2, 4])
    queries = keys[picks] + 0.1 * torch.randn(2, keys.shape[1])
    errors = [
        (dot_product_attention(queries, keys, values, temperature=t).output - values[picks])
        .abs()
        .max()
        .item()
        for t in (1.0, 0.3, 0.1, 0.01)
    ]
    assert errors == sorted(errors, reverse=True) and errors[0] > 0.1
    # At a small enough temperature the softmax underflows to an exact one-hot in float32.
    assert torch.equal(dot_product_attention(queries, keys, values, temperature=1e-4).output, values[picks])


def test_uniform_keys_return_the_mean_of_values() -> None:
    _, values = _table()
    keys = torch.ones(6, 8) * 0.7
    queries = torch.randn(3, 8)
    for temperature in (1.0, 0.01, 0.0):
        out = dot_product_attention(queries, keys, values, temperature=temperature).output
        torch.testing.assert_close(out, values.mean(0).expand(3, -1))


def test_mask_skips_the_best_key_and_empty_rows_are_zero_without_nan_gradients() -> None:
    keys, values = _table()
    query = (keys[1] * 3 + keys[4] * 2)[None]  # best 1, second 4
    mask = torch.ones(1, 6, dtype=torch.bool)
    mask[0, 1] = False
    assert torch.equal(
        dot_product_attention(query, keys, values, temperature=0.0, mask=mask).output, values[4:5]
    )
    # A float mask of -inf does the same as False.
    additive = torch.zeros(1, 6).masked_fill(~mask, float("-inf"))
    assert torch.equal(
        dot_product_attention(query, keys, values, temperature=0.0, mask=additive).output, values[4:5]
    )

    q = torch.randn(2, 8, requires_grad=True)
    k = keys.clone().requires_grad_(True)
    none = torch.tensor([[True] * 6, [False] * 6])
    out = dot_product_attention(q, k, values, mask=none)
    assert torch.equal(out.output[1], torch.zeros(5)) and torch.equal(out.weights[1], torch.zeros(6))
    out.output.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()
    assert torch.equal(q.grad[1], torch.zeros(8))


def test_dot_product_attention_gradcheck() -> None:
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, n, 4, generator=g, dtype=torch.float64, requires_grad=True) for n in (3, 5, 5))
    assert torch.autograd.gradcheck(
        lambda a, b, c: dot_product_attention(a, b, c, temperature=0.5).output, (q, k, v)
    )


def test_dot_product_attention_rejects_bad_input() -> None:
    q, k, v = torch.randn(3, 4), torch.randn(5, 4), torch.randn(5, 2)
    with pytest.raises(ShapeError, match="k \\(5, 3\\)"):
        dot_product_attention(q, torch.randn(5, 3), v)
    with pytest.raises(ShapeError, match="mask must broadcast"):
        dot_product_attention(q, k, v, mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ConfigError, match="temperature"):
        dot_product_attention(q, k, v, temperature=-1.0)


# ---------------------------------------------------------------------------------------------------
# MultiHeadAttention vs torch.nn.MultiheadAttention
# ---------------------------------------------------------------------------------------------------

DIM, HEADS, B, T, S = 16, 4, 3, 5, 7


def _torch_name(name: str) -> str:
    return name.replace("in_proj.weight", "in_proj_weight").replace("in_proj.bias", "in_proj_bias")


def _pair(
    bias: bool = True, dtype: torch.dtype = torch.float64
) -> tuple[MultiHeadAttention, nn.MultiheadAttention]:
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(DIM, HEADS, bias=bias, batch_first=True).to(dtype)
    with torch.no_grad():  # non-zero biases, so that a bias mix-up shows
        for p in theirs.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ours = MultiHeadAttention.from_torch(theirs)
    assert ours.in_proj.weight.dtype == dtype
    return ours, theirs


def _key_padding(source: int) -> torch.Tensor:
    pad = torch.zeros(B, source, dtype=torch.bool)
    pad[0, -2:] = True
    pad[2, -4:] = True
    return pad


CASES = [
    "self",
    "cross",
    "self_padding",
    "cross_padding",
    "causal",
    "causal_padding",
    "bool_mask",
    "float_mask",
    "batch_mask",
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_mha_forward_and_gradients_match_torch(case: str, bias: bool) -> None:
    ours, theirs = _pair(bias)
    g = torch.Generator().manual_seed(3)
    cross = case.startswith("cross")
    source = S if cross else T
    x = torch.randn(B, T, DIM, generator=g, dtype=torch.float64, requires_grad=True)
    mem = torch.randn(B, S, DIM, generator=g, dtype=torch.float64, requires_grad=True) if cross else x
    ours_kw: dict = {}
    theirs_kw: dict = {}
    if case.endswith("padding"):
        ours_kw["key_padding_mask"] = theirs_kw["key_padding_mask"] = _key_padding(source)
    if case.startswith("causal"):
        ours_kw["causal"] = True
        theirs_kw["attn_mask"] = torch.ones(T, T, dtype=torch.bool).triu(1)  # True = masked, as torch wants
    if case == "bool_mask":
        mask = torch.rand(T, source, generator=g) > 0.6
        mask[:, 0] = False
        ours_kw["attn_mask"] = theirs_kw["attn_mask"] = mask
    if case == "float_mask":
        ours_kw["attn_mask"] = theirs_kw["attn_mask"] = torch.randn(
            T, source, generator=g, dtype=torch.float64
        )
    if case == "batch_mask":
        mask = torch.rand(B, T, source, generator=g) > 0.6
        mask[..., 0] = False
        ours_kw["attn_mask"] = mask
        theirs_kw["attn_mask"] = mask.repeat_interleave(HEADS, dim=0)  # torch wants (B*H, T, S)

    out = ours(x, None if not cross else mem, **ours_kw).output
    ref, _ = theirs(x, mem, mem, need_weights=False, **theirs_kw)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)

    grad_out = torch.randn_like(out)
    inputs = [x, mem] if cross else [x]
    ours_grads = torch.autograd.grad(out, inputs + list(ours.parameters()), grad_out)
    names = [_torch_name(n) for n, _ in ours.named_parameters()]
    theirs_params = dict(theirs.named_parameters())
    ref_grads = torch.autograd.grad(ref, inputs + [theirs_params[n] for n in names], grad_out)
    for name, a, b in zip(["x", "mem"][: len(inputs)] + names, ours_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11, msg=f"gradient of {name}")


@pytest.mark.parametrize("case", ["self", "cross_padding", "causal"])
def test_mha_attention_weights_match_torch(case: str) -> None:
    ours, theirs = _pair()
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    mem = torch.randn(B, S, DIM, dtype=torch.float64) if case.startswith("cross") else x
    pad = _key_padding(S) if case.endswith("padding") else None
    causal_mask = (
        nn.Transformer.generate_square_subsequent_mask(T, dtype=torch.float64) if case == "causal" else None
    )
    res = ours(x, mem, key_padding_mask=pad, causal=case == "causal", need_weights=True)
    ref, ref_w = theirs(x, mem, mem, key_padding_mask=pad, attn_mask=causal_mask, average_attn_weights=False)
    torch.testing.assert_close(res.output, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(res.weights, ref_w, rtol=0, atol=1e-12)
    assert res.weights.shape == (B, HEADS, T, mem.shape[1])
    # The explicit path and the fused kernel agree.
    fused = ours(x, mem, key_padding_mask=pad, causal=case == "causal").output
    torch.testing.assert_close(fused, res.output, rtol=0, atol=1e-12)


def test_mha_float32_parity_within_1e_5() -> None:
    ours, theirs = _pair(dtype=torch.float32)
    x, mem = torch.randn(B, T, DIM), torch.randn(B, S, DIM)
    pad = _key_padding(S)
    ref, _ = theirs(x, mem, mem, key_padding_mask=pad)
    torch.testing.assert_close(ours(x, mem, key_padding_mask=pad).output, ref, rtol=0, atol=1e-5)


def test_load_torch_mha_state_copies_and_checks() -> None:
    _, theirs = _pair(dtype=torch.float32)
    ours = MultiHeadAttention(DIM, HEADS)
    load_torch_mha_state(ours, theirs)
    assert torch.equal(ours.in_proj.weight, theirs.in_proj_weight)
    assert torch.equal(ours.out_proj.bias, theirs.out_proj.bias)
    with pytest.raises(CheckpointError, match="num_heads=4"):
        load_torch_mha_state(MultiHeadAttention(DIM, 2), theirs)
    with pytest.raises(CheckpointError, match="kdim"):
        load_torch_mha_state(ours, nn.MultiheadAttention(DIM, HEADS, kdim=8, vdim=8))
    with pytest.raises(CheckpointError, match="biases"):
        load_torch_mha_state(MultiHeadAttention(DIM, HEADS, bias=False), theirs)


def test_mha_dropout_only_in_training() -> None:
    mha = MultiHeadAttention(DIM, HEADS, dropout=0.5)
    x = torch.randn(B, T, DIM)
    mha.eval()
    assert torch.equal(mha(x).output, mha(x).output)
    mha.train()
    assert not torch.allclose(mha(x).output, mha(x).output)
    # Dropout on the weights of the explicit path too; the returned weights are the pre-dropout ones.
    res = mha(x, need_weights=True)
    torch.testing.assert_close(res.weights.sum(-1), torch.ones(B, HEADS, T))


def test_mha_incremental_cache_equals_full_causal_attention() -> None:
    ours, _ = _pair()
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    full = ours(x, causal=True).output
    cache = KVCache()
    steps = [ours(x[:, :2], causal=True, cache=cache).output]  # a prompt of 2, then one token at a time
    for t in range(2, T):
        steps.append(ours(x[:, t : t + 1], causal=True, cache=cache).output)
    assert cache.length == T
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-12)

    # A static (cross-attention) cache projects the memory once and reuses it.
    mem = torch.randn(B, S, DIM, dtype=torch.float64)
    static = KVCache(static=True)
    first = ours(x[:, :1], mem, cache=static).output
    keys = static.key
    again = ours(x[:, 1:2], mem, cache=static).output
    assert static.key is keys and static.length == S
    torch.testing.assert_close(torch.cat([first, again], 1), ours(x[:, :2], mem).output, rtol=0, atol=1e-12)


def test_mha_fully_masked_query_gives_bias_not_nan() -> None:
    ours, _ = _pair()
    x = torch.randn(1, 3, DIM, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[0] = True  # torch convention: query 0 may attend to nothing
    for need_weights in (False, True):
        out = ours(x, attn_mask=mask, need_weights=need_weights).output
        torch.testing.assert_close(out[0, 0], ours.out_proj.bias)
        (g,) = torch.autograd.grad(out.sum(), x)
        assert torch.isfinite(g).all()


def test_mha_rejects_bad_shapes_and_masks() -> None:
    mha = MultiHeadAttention(DIM, HEADS)
    x = torch.randn(B, T, DIM)
    mem = torch.randn(B, S, DIM)
    with pytest.raises(
        ShapeError,
        match=r"query must be a floating tensor .* D = 16; got float32 tensor of shape \(3, 5, 8\)",
    ):
        mha(torch.randn(B, T, 8))
    with pytest.raises(ShapeError, match="must share B"):
        mha(x, torch.randn(B + 1, S, DIM))
    with pytest.raises(
        ShapeError, match=r"key_padding_mask must be a bool tensor of shape \(3, 7\).*float32"
    ):
        mha(x, mem, key_padding_mask=torch.zeros(B, S))
    with pytest.raises(ShapeError, match=r"key_padding_mask .* got bool tensor of shape \(3, 5\)"):
        mha(x, mem, key_padding_mask=torch.zeros(B, T, dtype=torch.bool))
    with pytest.raises(ShapeError, match="attn_mask"):
        mha(x, mem, attn_mask=torch.zeros(T, T, dtype=torch.bool))
    with pytest.raises(ShapeError, match="attn_mask must be bool or float32"):
        mha(x, attn_mask=torch.zeros(T, T, dtype=torch.float64))
    with pytest.raises(ConfigError, match="multiple of heads"):
        MultiHeadAttention(10, 3)


# ---------------------------------------------------------------------------------------------------
# AdditiveAttention: the lecture's five steps
# ---------------------------------------------------------------------------------------------------


def test_additive_attention_follows_the_five_steps() -> None:
    torch.manual_seed(0)
    att = AdditiveAttention(6, 4).double()
    h = torch.randn(2, 5, 6, dtype=torch.float64)
    res = att(h)
    W, q = att.proj.weight.detach(), att.query.detach()
    for b in range(2):
        e = [float(q @ torch.tanh(W @ h[b, t])) for t in range(5)]  # steps 1-3
        a = torch.softmax(torch.tensor(e, dtype=torch.float64), 0)  # step 4
        context = sum(a[t] * h[b, t] for t in range(5))  # step 5
        torch.testing.assert_close(res.weights[b], a)
        torch.testing.assert_close(res.context[b], context)


def test_additive_attention_padding_gets_zero_weight_and_no_gradient() -> None:
    torch.manual_seed(0)
    att = AdditiveAttention(6, 4)
    real = torch.randn(1, 3, 6)
    padded = torch.cat([real, 100 * torch.randn(1, 4, 6)], dim=1).requires_grad_(True)
    mask = torch.tensor([[True] * 3 + [False] * 4])
    res = att(padded, mask)
    assert torch.equal(res.weights[0, 3:], torch.zeros(4))
    torch.testing.assert_close(res.context, att(real).context, rtol=0, atol=1e-6)
    res.context.sum().backward()
    assert torch.equal(padded.grad[0, 3:], torch.zeros(4, 6))
    assert att.query.grad is not None and att.proj.weight.grad.abs().sum() > 0
    empty = att(real, torch.zeros(1, 3, dtype=torch.bool))
    assert torch.equal(empty.context, torch.zeros(1, 6)) and torch.equal(empty.weights, torch.zeros(1, 3))


def test_additive_attention_rejects_bad_masks() -> None:
    att = AdditiveAttention(6, 4)
    h = torch.randn(2, 5, 6)
    with pytest.raises(
        ShapeError, match=r"mask must be a bool tensor of shape \(2, 5\) \(True = real token\)"
    ):
        att(h, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ShapeError, match="mask"):
        att(h, torch.ones(2, 5))
    with pytest.raises(ShapeError, match="h must be"):
        att(torch.randn(2, 5, 7))
