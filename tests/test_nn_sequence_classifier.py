"""The RNN + attention sequence classifier: padding invariance, learning a toy task, input checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from polymodal.errors import ConfigError, DataError, ShapeError
from polymodal.nn import RNNAttentionClassifier

VOCAB, TARGET = 20, 7


def _pad_to(
    seqs: list[torch.Tensor], length: int, *, fill: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token sequences; ``fill=None`` pads with random tokens to show padding is never read."""
    g = torch.Generator().manual_seed(99)
    x = (
        torch.randint(1, VOCAB, (len(seqs), length), generator=g)
        if fill is None
        else torch.full((len(seqs), length), fill)
    )
    mask = torch.zeros(len(seqs), length, dtype=torch.bool)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = s
        mask[i, : len(s)] = True
    return x, mask


@pytest.mark.parametrize("rnn", ["gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_padding_does_not_change_the_result(rnn: str, bidirectional: bool) -> None:
    torch.manual_seed(0)
    model = RNNAttentionClassifier(
        vocab_size=VOCAB, hidden=12, num_classes=3, rnn=rnn, bidirectional=bidirectional
    ).eval()
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(1, VOCAB, (n,), generator=g) for n in (5, 2, 7)]
    short = model(*_pad_to(seqs, 7, fill=0))
    long = model(*_pad_to(seqs, 15))
    torch.testing.assert_close(short.logits, long.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(short.attention, long.attention[:, :7], rtol=0, atol=1e-6)
    assert (long.attention[:, 7:] == 0).all()
    # Each sequence alone, without any padding, gives the same logits.
    alone = torch.cat([model(s[None]).logits for s in seqs])
    torch.testing.assert_close(alone, long.logits, rtol=0, atol=1e-6)


def _toy_batch(g: torch.Generator, n: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random sequences of length 3..12 over tokens 1..19; label 1 iff token 7 occurs (balanced)."""
    labels = torch.randint(0, 2, (n,), generator=g)
    seqs = []
    for label in labels.tolist():
        length = int(torch.randint(3, 13, (1,), generator=g))
        s = torch.randint(1, VOCAB - 1, (length,), generator=g)
        s[s >= TARGET] += 1  # tokens 1..19 without 7
        if label:
            s[torch.randint(0, length, (1,), generator=g)] = TARGET
        seqs.append(s)
    x, mask = _pad_to(seqs, 12, fill=0)
    return x, mask, labels


def test_learns_whether_token_7_is_present() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = RNNAttentionClassifier(vocab_size=VOCAB, hidden=16, num_classes=2, embed_dim=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        x, mask, y = _toy_batch(g)
        loss = F.cross_entropy(model(x, mask).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, mask, y = _toy_batch(torch.Generator().manual_seed(123), n=500)
    with torch.no_grad():
        out = model(x, mask)
    accuracy = (out.logits.argmax(1) == y).float().mean().item()
    assert accuracy > 0.95, accuracy
    # The attention learned to look at the 7: where present, it holds most of the weight.
    has7 = (x == TARGET) & mask
    weight_on_7 = (out.attention * has7).sum(1)[y == 1]
    assert weight_on_7.mean() > 0.5


def test_feature_inputs_and_lstm_backward() -> None:
    torch.manual_seed(0)
    model = RNNAttentionClassifier(input_dim=5, hidden=8, num_classes=4, rnn="lstm", num_layers=2)
    x = torch.randn(3, 6, 5)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3, [True] + [False] * 5])
    out = model(x, mask)
    assert out.logits.shape == (3, 4) and out.attention.shape == (3, 6)
    out.logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_config_and_input_errors() -> None:
    with pytest.raises(ConfigError, match="exactly one of vocab_size"):
        RNNAttentionClassifier(vocab_size=10, input_dim=4, hidden=8, num_classes=2)
    with pytest.raises(ConfigError, match="rnn must be"):
        RNNAttentionClassifier(vocab_size=10, hidden=8, num_classes=2, rnn="transformer")
    with pytest.raises(ConfigError, match="hidden must be positive"):
        RNNAttentionClassifier(vocab_size=10, hidden=0, num_classes=2)
    model = RNNAttentionClassifier(vocab_size=10, hidden=8, num_classes=2)
    x = torch.randint(0, 10, (2, 4))
    with pytest.raises(ShapeError, match="right-padded"):
        model(x, torch.tensor([[True, False, True, False], [True] * 4]))
    with pytest.raises(ShapeError, match="at least one real step"):
        model(x, torch.tensor([[False] * 4, [True] * 4]))
    with pytest.raises(ShapeError, match="int64 token ids"):
        model(x.float())
    with pytest.raises(DataError, match=r"token ids must lie in \[0, 10\)"):
        model(x + 10)
    with pytest.raises(ShapeError, match=r"mask must be a bool tensor of shape \(2, 4\)"):
        model(x, torch.ones(2, 4))
