"""Positional encodings: the lecture's formula, checked with plain Python math, and a learned table."""

from __future__ import annotations

import math

import pytest
import torch

from polymodal.errors import ConfigError, ShapeError
from polymodal.nn import LearnedPositionalEmbedding, SinusoidalPositionalEncoding, sinusoidal_table


def _lecture_pe(pos: int, i: int, d: int) -> float:
    """PE(pos, i) exactly as written on the lecture slide."""
    if i % 2 == 0:
        return math.sin(pos / 10000 ** (i / d))
    return math.cos(pos / 10000 ** ((i - 1) / d))


@pytest.mark.parametrize("dim", [8, 7, 64])
def test_table_matches_the_lecture_formula(dim: int) -> None:
    max_len = 60
    expected = torch.tensor([[_lecture_pe(p, i, dim) for i in range(dim)] for p in range(max_len)])
    table = sinusoidal_table(max_len, dim)
    assert table.shape == (max_len, dim) and table.dtype == torch.float32
    torch.testing.assert_close(table, expected, rtol=0, atol=1e-6)


def test_golden_values() -> None:
    table = sinusoidal_table(3, 4)
    # pos 1: sin(1), cos(1), sin(1/100), cos(1/100)
    torch.testing.assert_close(
        table[1], torch.tensor([0.8414709848, 0.5403023059, 0.0099998333, 0.9999500004]), rtol=0, atol=1e-7
    )
    assert torch.equal(table[0], torch.tensor([0.0, 1.0, 0.0, 1.0]))


def test_a_fixed_offset_is_a_rotation_of_each_sin_cos_pair() -> None:
    # Vaswani et al. chose sinusoids because PE(pos + k) is a linear function of PE(pos): each
    # (sin, cos) pair at frequency w rotates by the angle k·w, whatever pos is.
    dim, k = 16, 5
    table = sinusoidal_table(100, dim).double()
    freqs = 1.0 / 10000 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    for pos in (0, 17, 60):
        sin, cos = table[pos, 0::2], table[pos, 1::2]
        a = k * freqs
        torch.testing.assert_close(
            table[pos + k, 0::2], sin * torch.cos(a) + cos * torch.sin(a), rtol=0, atol=1e-6
        )
        torch.testing.assert_close(
            table[pos + k, 1::2], cos * torch.cos(a) - sin * torch.sin(a), rtol=0, atol=1e-6
        )
    # Hence the dot product of two encodings depends only on their distance.
    dots = [float(table[p] @ table[p + k]) for p in (0, 20, 40)]
    assert max(dots) - min(dots) < 1e-5


def test_sinusoidal_module_adds_the_table_with_offset() -> None:
    pe = SinusoidalPositionalEncoding(8, max_len=20)
    x = torch.randn(2, 5, 8)
    torch.testing.assert_close(pe(x), x + sinusoidal_table(20, 8)[:5])
    torch.testing.assert_close(pe(x, offset=7), x + sinusoidal_table(20, 8)[7:12])
    assert pe(x.double()).dtype == torch.float64
    assert "table" not in pe.state_dict()  # recomputed, not stored in checkpoints
    assert list(pe.parameters()) == []


def test_sinusoidal_module_rejects_bad_input() -> None:
    pe = SinusoidalPositionalEncoding(8, max_len=10)
    with pytest.raises(ShapeError, match=r"positions 8 \.\. 12 do not fit max_len=10"):
        pe(torch.randn(1, 5, 8), offset=8)
    with pytest.raises(ShapeError, match="D = 8"):
        pe(torch.randn(1, 5, 6))
    with pytest.raises(ConfigError):
        SinusoidalPositionalEncoding(0, max_len=10)


def test_learned_embedding_adds_trainable_rows() -> None:
    torch.manual_seed(0)
    pe = LearnedPositionalEmbedding(8, max_len=12)
    assert pe.weight.abs().max() <= 0.04 + 1e-7  # truncated at 2 std
    x = torch.randn(2, 4, 8)
    out = pe(x, offset=3)
    torch.testing.assert_close(out, x + pe.weight[3:7])
    out.sum().backward()
    used = torch.zeros(12, dtype=torch.bool)
    used[3:7] = True
    assert (pe.weight.grad[used] == 2.0).all() and (pe.weight.grad[~used] == 0).all()
    with pytest.raises(ShapeError, match="max_len=12"):
        pe(torch.randn(1, 13, 8))
