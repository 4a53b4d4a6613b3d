"""The Audio Spectrogram Transformer: shapes, padding invariance, gradients and a tiny learning check."""

from __future__ import annotations

import pytest
import torch

from polymodal.errors import ConfigError, ShapeError
from polymodal.towers.audio_transformer import ASTConfig, AudioSpectrogramTransformer

TINY = ASTConfig(n_mels=16, patch_freq=8, patch_time=8, stride_freq=8, stride_time=4, dim=32, depth=2, heads=4,
                 max_frames=256)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_does_not_change_a_clip(pooling):
    torch.manual_seed(0)
    model = AudioSpectrogramTransformer(ASTConfig(**{**TINY.__dict__, "pooling": pooling})).eval()
    short = torch.randn(1, 16, 40)
    padded = torch.cat([short, torch.randn(1, 16, 24) * 50], dim=2)  # junk after the end
    batch = torch.cat([padded, torch.randn(1, 16, 64)])
    with torch.no_grad():
        alone = model(short)
        inside = model(batch, torch.tensor([40, 64]))
    torch.testing.assert_close(inside[0], alone[0], atol=1e-5, rtol=1e-5)
    assert inside.shape == (2, 32)


def test_every_parameter_gets_a_gradient_and_it_learns():
    torch.manual_seed(0)
    model = AudioSpectrogramTransformer(TINY)
    # Two classes told apart by which mel band carries energy.
    x = torch.randn(32, 16, 48) * 0.1
    y = torch.arange(32) % 2
    x[y == 0, :8] += 1.0
    x[y == 1, 8:] += 1.0
    head = torch.nn.Linear(32, 2)
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=3e-3)
    first = None
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(head(model(x)), y)
        opt.zero_grad()
        loss.backward()
        if first is None:
            first = loss.item()
            # max_frames covers more time columns than these clips use; only those rows stay unused.
            unused = {"time_pos"}
            assert all(p.grad is not None for n, p in model.named_parameters() if n not in unused)
        opt.step()
    assert loss.item() < 0.1 * first


def test_bad_shapes_and_configs_are_named():
    model = AudioSpectrogramTransformer(TINY)
    with pytest.raises(ShapeError, match="features"):
        model(torch.randn(2, 15, 40))
    with pytest.raises(ShapeError, match="shorter than one patch"):
        model(torch.randn(2, 16, 4))
    with pytest.raises(ShapeError, match="lengths"):
        model(torch.randn(2, 16, 40), torch.tensor([40]))
    with pytest.raises(ConfigError, match="heads"):
        ASTConfig(dim=30, heads=4)
