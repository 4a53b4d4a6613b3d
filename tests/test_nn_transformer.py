"""Transformer layers and stacks: parity with torch.nn.Transformer* (forward and backward), incremental
decoding, attention maps and the converters' checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polymodal.errors import CheckpointError, ConfigError
from polymodal.nn import (
    QuickGELU,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    activation_layer,
    load_torch_decoder,
    load_torch_decoder_layer,
    load_torch_encoder,
    load_torch_encoder_layer,
)

DIM, HEADS, FF, B, T, S = 16, 4, 24, 3, 6, 5
ACTS = {"relu": nn.ReLU, "gelu": nn.GELU}


def _torch_name(name: str) -> str:
    """Our parameter name -> torch's (the converters' mapping, restated independently)."""
    for a, b in (
        ("cross_attn.", "multihead_attn."),
        ("mlp.fc1.", "linear1."),
        ("mlp.fc2.", "linear2."),
        ("in_proj.weight", "in_proj_weight"),
        ("in_proj.bias", "in_proj_bias"),
    ):
        name = name.replace(a, b)
    return name


def _perturb(module: nn.Module) -> None:
    """Make biases and norm weights non-trivial so that a mix-up between them shows."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))


def _inputs(*shapes: tuple[int, ...]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return [torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True) for s in shapes]


def _pad(length: int) -> torch.Tensor:
    pad = torch.zeros(B, length, dtype=torch.bool)
    pad[1, -2:] = True
    return pad


def _assert_same_forward_backward(
    ours: nn.Module, theirs: nn.Module, out: torch.Tensor, ref: torch.Tensor, inputs
) -> None:
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
    grad_out = torch.randn_like(out)
    names = [n for n, _ in ours.named_parameters()]
    theirs_params = dict(theirs.named_parameters())
    assert sorted(_torch_name(n) for n in names) == sorted(theirs_params)  # every parameter is compared
    ours_grads = torch.autograd.grad(out, list(inputs) + list(ours.parameters()), grad_out)
    ref_grads = torch.autograd.grad(
        ref, list(inputs) + [theirs_params[_torch_name(n)] for n in names], grad_out
    )
    labels = [f"input {i}" for i in range(len(inputs))] + names
    for label, a, b in zip(labels, ours_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=f"gradient of {label}")


def _encoder_pair(norm_first: bool, act: str) -> tuple[TransformerEncoderLayer, nn.TransformerEncoderLayer]:
    torch.manual_seed(0)
    theirs = nn.TransformerEncoderLayer(
        DIM, HEADS, FF, dropout=0.0, activation=act, batch_first=True, norm_first=norm_first
    )
    ours = TransformerEncoderLayer(DIM, HEADS, mlp_dim=FF, norm_first=norm_first, act_layer=ACTS[act])
    _perturb(theirs)
    load_torch_encoder_layer(ours, theirs)
    return ours.double().eval(), theirs.double().eval()


def _decoder_pair(norm_first: bool, act: str) -> tuple[TransformerDecoderLayer, nn.TransformerDecoderLayer]:
    torch.manual_seed(0)
    theirs = nn.TransformerDecoderLayer(
        DIM, HEADS, FF, dropout=0.0, activation=act, batch_first=True, norm_first=norm_first
    )
    ours = TransformerDecoderLayer(DIM, HEADS, mlp_dim=FF, norm_first=norm_first, act_layer=ACTS[act])
    _perturb(theirs)
    load_torch_decoder_layer(ours, theirs)
    return ours.double().eval(), theirs.double().eval()


@pytest.mark.parametrize("masks", ["none", "padding", "causal"])
@pytest.mark.parametrize("act", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_layer_matches_torch(norm_first: bool, act: str, masks: str) -> None:
    ours, theirs = _encoder_pair(norm_first, act)
    (x,) = _inputs((B, T, DIM))
    pad = _pad(T) if masks == "padding" else None
    causal = masks == "causal"
    out = ours(x, key_padding_mask=pad, causal=causal)
    torch_mask = nn.Transformer.generate_square_subsequent_mask(T, dtype=torch.float64) if causal else None
    ref = theirs(x, src_mask=torch_mask, src_key_padding_mask=pad, is_causal=causal)
    _assert_same_forward_backward(ours, theirs, out, ref, [x])


@pytest.mark.parametrize("act", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [True, False])
def test_decoder_layer_matches_torch(norm_first: bool, act: str) -> None:
    ours, theirs = _decoder_pair(norm_first, act)
    x, memory = _inputs((B, T, DIM), (B, S, DIM))
    tgt_pad, mem_pad = _pad(T), _pad(S)
    mem_pad[2, -1] = True
    causal_mask = torch.ones(T, T, dtype=torch.bool).triu(1)  # torch: True = not allowed
    out = ours(x, memory, causal=True, key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad)
    ref = theirs(
        x, memory, tgt_mask=causal_mask, tgt_key_padding_mask=tgt_pad, memory_key_padding_mask=mem_pad
    )
    _assert_same_forward_backward(ours, theirs, out, ref, [x, memory])


def test_decoder_layer_memory_mask_matches_torch() -> None:
    ours, theirs = _decoder_pair(True, "gelu")
    x, memory = _inputs((B, T, DIM), (B, S, DIM))
    memory_mask = torch.randn(T, S, dtype=torch.float64)
    out = ours(x, memory, memory_mask=memory_mask)
    ref = theirs(x, memory, memory_mask=memory_mask)
    _assert_same_forward_backward(ours, theirs, out, ref, [x, memory])


@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_stack_matches_torch(norm_first: bool) -> None:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        DIM, HEADS, FF, dropout=0.0, activation="gelu", batch_first=True, norm_first=norm_first
    )
    theirs = nn.TransformerEncoder(layer, num_layers=2, norm=nn.LayerNorm(DIM), enable_nested_tensor=False)
    ours = TransformerEncoder(DIM, HEADS, depth=2, mlp_dim=FF, norm_first=norm_first, final_norm=True)
    _perturb(theirs)
    load_torch_encoder(ours, theirs)
    ours, theirs = ours.double().eval(), theirs.double().eval()
    (x,) = _inputs((B, T, DIM))
    pad = _pad(T)
    _assert_same_forward_backward(
        ours, theirs, ours(x, key_padding_mask=pad), theirs(x, src_key_padding_mask=pad), [x]
    )


@pytest.mark.parametrize("norm_first", [True, False])
def test_decoder_stack_matches_torch(norm_first: bool) -> None:
    torch.manual_seed(0)
    layer = nn.TransformerDecoderLayer(
        DIM, HEADS, FF, dropout=0.0, activation="relu", batch_first=True, norm_first=norm_first
    )
    theirs = nn.TransformerDecoder(layer, num_layers=2, norm=nn.LayerNorm(DIM))
    ours = TransformerDecoder(
        DIM, HEADS, depth=2, mlp_dim=FF, norm_first=norm_first, act_layer=nn.ReLU, final_norm=True
    )
    _perturb(theirs)
    load_torch_decoder(ours, theirs)
    ours, theirs = ours.double().eval(), theirs.double().eval()
    x, memory = _inputs((B, T, DIM), (B, S, DIM))
    mem_pad = _pad(S)
    out = ours(x, memory, causal=True, memory_key_padding_mask=mem_pad)
    ref = theirs(
        x, memory, tgt_mask=nn.Transformer.generate_square_subsequent_mask(T, dtype=torch.float64),
        tgt_is_causal=True, memory_key_padding_mask=mem_pad,
    )  # fmt: skip
    _assert_same_forward_backward(ours, theirs, out, ref, [x, memory])


def test_float32_encoder_layer_parity_within_1e_5() -> None:
    torch.manual_seed(0)
    theirs = nn.TransformerEncoderLayer(DIM, HEADS, FF, dropout=0.0, batch_first=True, norm_first=True).eval()
    ours = TransformerEncoderLayer(DIM, HEADS, mlp_dim=FF, act_layer=nn.ReLU).eval()
    load_torch_encoder_layer(ours, theirs)
    x = torch.randn(B, T, DIM, requires_grad=True)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("norm_first", [True, False])
def test_incremental_decoding_equals_full_causal_decoding(norm_first: bool) -> None:
    torch.manual_seed(0)
    dec = TransformerDecoder(DIM, HEADS, depth=2, norm_first=norm_first).double().eval()
    _perturb(dec)
    x = torch.randn(B, T, DIM, dtype=torch.float64)
    memory = torch.randn(B, S, DIM, dtype=torch.float64)
    mem_pad = _pad(S)
    full = dec(x, memory, causal=True, memory_key_padding_mask=mem_pad)
    cache = dec.new_cache()
    steps = [dec(x[:, :3], memory, causal=True, memory_key_padding_mask=mem_pad, cache=cache)]
    for t in range(3, T):
        assert cache.length == t
        steps.append(dec(x[:, t : t + 1], memory, causal=True, memory_key_padding_mask=mem_pad, cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=1e-12)


def test_causal_encoder_ignores_the_future_and_padding_is_ignored() -> None:
    torch.manual_seed(0)
    enc = TransformerEncoder(DIM, HEADS, depth=2).eval()
    x = torch.randn(1, T, DIM)
    changed = x.clone()
    changed[:, 4:] = torch.randn(1, T - 4, DIM)
    torch.testing.assert_close(enc(x, causal=True)[:, :4], enc(changed, causal=True)[:, :4])
    assert not torch.allclose(enc(x)[:, :4], enc(changed)[:, :4])
    pad = torch.zeros(1, T, dtype=torch.bool)
    pad[:, 4:] = True
    torch.testing.assert_close(enc(x, key_padding_mask=pad)[:, :4], enc(changed, key_padding_mask=pad)[:, :4])
    torch.testing.assert_close(enc(x, key_padding_mask=pad)[:, :4], enc(x[:, :4]))


def test_attention_maps() -> None:
    torch.manual_seed(0)
    enc = TransformerEncoder(DIM, HEADS, depth=3).eval()
    x = torch.randn(B, T, DIM)
    pad = _pad(T)
    maps = enc.attention_maps(x, key_padding_mask=pad)
    assert len(maps) == 3 and all(m.shape == (B, HEADS, T, T) for m in maps)
    torch.testing.assert_close(
        maps[0],
        enc.layers[0].self_attn(enc.layers[0].norm1(x), key_padding_mask=pad, need_weights=True).weights,
    )
    for m in maps:
        torch.testing.assert_close(m.sum(-1), torch.ones(B, HEADS, T))
        assert (m[1, :, :, -2:] == 0).all()  # padded keys get no attention

    dec = TransformerDecoder(DIM, HEADS, depth=1).eval()
    memory = torch.randn(B, S, DIM)
    cross = dec.layers[0].cross_attention_weights(x, memory, causal=True, memory_key_padding_mask=_pad(S))
    assert cross.shape == (B, HEADS, T, S) and (cross[1, ..., -2:] == 0).all()


def test_dropout_acts_in_training_only() -> None:
    layer = TransformerEncoderLayer(DIM, HEADS, dropout=0.3)
    x = torch.randn(B, T, DIM)
    assert layer.self_attn.dropout == 0.3 and layer.mlp.drop.p == 0.3
    assert not torch.allclose(layer(x), layer(x))
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    assert TransformerEncoderLayer(DIM, HEADS, dropout=0.3, attn_dropout=0.0).self_attn.dropout == 0.0


def test_final_norm_defaults_to_norm_first_and_shapes() -> None:
    assert isinstance(TransformerEncoder(DIM, HEADS, 1, norm_first=True).norm, nn.LayerNorm)
    assert isinstance(TransformerEncoder(DIM, HEADS, 1, norm_first=False).norm, nn.Identity)
    assert isinstance(TransformerDecoder(DIM, HEADS, 1, norm_first=False, final_norm=True).norm, nn.LayerNorm)
    assert TransformerEncoderLayer(DIM, HEADS, mlp_ratio=2.0).mlp.fc1.out_features == 2 * DIM
    with pytest.raises(ConfigError, match="depth"):
        TransformerEncoder(DIM, HEADS, 0)
    with pytest.raises(ConfigError, match="dropout"):
        TransformerDecoderLayer(DIM, HEADS, dropout=1.5)


def test_converters_refuse_mismatched_layers() -> None:
    torch_layer = nn.TransformerEncoderLayer(
        DIM, HEADS, FF, activation="gelu", batch_first=True, norm_first=True
    )
    with pytest.raises(CheckpointError, match="norm_first"):
        load_torch_encoder_layer(
            TransformerEncoderLayer(DIM, HEADS, mlp_dim=FF, norm_first=False), torch_layer
        )
    with pytest.raises(CheckpointError, match="activation is GELU in torch, ReLU in ours"):
        load_torch_encoder_layer(
            TransformerEncoderLayer(DIM, HEADS, mlp_dim=FF, act_layer=nn.ReLU), torch_layer
        )
    with pytest.raises(CheckpointError, match=r"linear1.weight differs: ours \(64, 16\), torch \(24, 16\)"):
        load_torch_encoder_layer(TransformerEncoderLayer(DIM, HEADS), torch_layer)
    stack = nn.TransformerEncoder(torch_layer, num_layers=2, enable_nested_tensor=False)
    with pytest.raises(CheckpointError, match="2 layers, ours 1"):
        load_torch_encoder(TransformerEncoder(DIM, HEADS, 1, mlp_dim=FF), stack)
    with pytest.raises(CheckpointError, match="final norm"):
        load_torch_encoder(TransformerEncoder(DIM, HEADS, 2, mlp_dim=FF), stack)


def test_activation_names_and_quick_gelu() -> None:
    x = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(
        activation_layer("gelu_tanh")()(x), torch.nn.functional.gelu(x, approximate="tanh")
    )
    assert isinstance(activation_layer("relu")(), nn.ReLU)
    torch.testing.assert_close(
        QuickGELU()(torch.tensor([1.0])), torch.tensor([1.0 / (1.0 + torch.e**-1.702)])
    )
    with pytest.raises(ConfigError, match="unknown activation 'swish'"):
        activation_layer("swish")
    layer = TransformerEncoderLayer(DIM, HEADS, act_layer=activation_layer("quick_gelu"))
    assert isinstance(layer.mlp.act, QuickGELU)
