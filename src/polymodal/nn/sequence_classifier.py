"""A recurrent encoder with attention pooling as a sequence classifier.

The lecture's attention slide starts from "the encoder output values (from the RNN)"; this is that
model end to end: embed the tokens (or take feature vectors), run a GRU or LSTM, pool its outputs with
:class:`~polymodal.nn.additive_attention.AdditiveAttention` and classify the context vector
(Yang et al. 2016, word level). Sequences are packed, so padding never enters the recurrence and the
result does not depend on how much padding a batch carries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from polymodal.errors import ConfigError, DataError, ShapeError
from polymodal.nn._checks import check_bool_mask, check_features, describe
from polymodal.nn.additive_attention import AdditiveAttention


@dataclass
class RNNClassifierConfig:
    """Hyper-parameters of :class:`RNNAttentionClassifier`; exactly one of ``vocab_size``/``input_dim``."""

    num_classes: int
    hidden: int  # RNN state width per direction
    vocab_size: int | None = None  # inputs are token ids (B, T), embedded first
    input_dim: int | None = None  # inputs are feature vectors (B, T, input_dim)
    embed_dim: int | None = None  # token embedding width; defaults to hidden
    rnn: str = "gru"  # "gru" or "lstm"
    bidirectional: bool = True
    num_layers: int = 1
    attn_dim: int | None = None  # width of u_t in the attention; defaults to hidden
    dropout: float = 0.0  # on the pooled context, before the classifier
    padding_idx: int = 0  # embedding row kept at zero for the padding token

    def __post_init__(self) -> None:
        if (self.vocab_size is None) == (self.input_dim is None):
            raise ConfigError(
                "RNNClassifierConfig: give exactly one of vocab_size (token ids) or input_dim (features)"
            )
        if self.rnn not in ("gru", "lstm"):
            raise ConfigError(f"RNNClassifierConfig: rnn must be 'gru' or 'lstm'; got {self.rnn!r}")
        sizes = {
            "num_classes": self.num_classes,
            "hidden": self.hidden,
            "num_layers": self.num_layers,
            "vocab_size": self.vocab_size,
            "input_dim": self.input_dim,
            "embed_dim": self.embed_dim,
            "attn_dim": self.attn_dim,
        }
        for name, value in sizes.items():
            if value is not None and value <= 0:
                raise ConfigError(f"RNNClassifierConfig: {name} must be positive; got {value}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"RNNClassifierConfig: dropout must be in [0, 1); got {self.dropout}")
        if self.vocab_size is not None and not 0 <= self.padding_idx < self.vocab_size:
            raise ConfigError(
                f"RNNClassifierConfig: padding_idx {self.padding_idx} outside vocab of {self.vocab_size}"
            )


@dataclass
class SequenceClassifierOutput:
    """Class scores and the attention that pooled the sequence.

    Attributes:
        logits: ``(B, num_classes)``.
        attention: ``(B, T)`` attention weights over time steps, 0 at padding.
    """

    logits: Tensor
    attention: Tensor


class RNNAttentionClassifier(nn.Module):
    """GRU/LSTM encoder + the lecture's attention pooling + a linear classifier.

    Args:
        num_classes: Number of output classes.
        hidden: RNN state width per direction.
        vocab_size: Number of token ids, for token inputs ``(B, T)``; or give ``input_dim``.
        input_dim: Feature width, for vector inputs ``(B, T, input_dim)``; or give ``vocab_size``.
        embed_dim: Token embedding width (defaults to ``hidden``).
        rnn: ``"gru"`` or ``"lstm"``.
        bidirectional: Run the RNN both ways and concatenate the states.
        num_layers: Stacked RNN layers.
        attn_dim: Width of ``u_t`` in the attention (defaults to ``hidden``).
        dropout: Dropout on the pooled context.
        padding_idx: Token id of padding (its embedding stays zero).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        hidden: int,
        vocab_size: int | None = None,
        input_dim: int | None = None,
        embed_dim: int | None = None,
        rnn: str = "gru",
        bidirectional: bool = True,
        num_layers: int = 1,
        attn_dim: int | None = None,
        dropout: float = 0.0,
        padding_idx: int = 0,
    ) -> None:
        super().__init__()
        cfg = RNNClassifierConfig(
            num_classes=num_classes,
            hidden=hidden,
            vocab_size=vocab_size,
            input_dim=input_dim,
            embed_dim=embed_dim,
            rnn=rnn,
            bidirectional=bidirectional,
            num_layers=num_layers,
            attn_dim=attn_dim,
            dropout=dropout,
            padding_idx=padding_idx,
        )
        self.config = cfg
        if cfg.vocab_size is not None:
            width = cfg.embed_dim or cfg.hidden
            self.embed: nn.Module = nn.Embedding(cfg.vocab_size, width, padding_idx=cfg.padding_idx)
        else:
            width = int(cfg.input_dim)  # type: ignore[arg-type]
            self.embed = nn.Identity()
        rnn_cls = nn.GRU if cfg.rnn == "gru" else nn.LSTM
        self.rnn = rnn_cls(
            width, cfg.hidden, num_layers=cfg.num_layers, batch_first=True, bidirectional=cfg.bidirectional
        )
        out_dim = cfg.hidden * (2 if cfg.bidirectional else 1)
        self.attention = AdditiveAttention(out_dim, cfg.attn_dim or cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(out_dim, cfg.num_classes)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> SequenceClassifierOutput:
        """Classify each sequence of the batch.

        Args:
            x: Token ids ``(B, T)`` (int64) or features ``(B, T, input_dim)``.
            mask: Bool ``(B, T)``, ``True`` = real step; real steps must come first (right padding).
                ``None`` means every step is real.

        Returns:
            :class:`SequenceClassifierOutput` with ``logits`` ``(B, C)`` and ``attention`` ``(B, T)``.
        """
        owner = "RNNAttentionClassifier"
        cfg = self.config
        if cfg.vocab_size is not None:
            if x.ndim != 2 or x.dtype != torch.long:
                raise ShapeError(f"{owner}: x must be int64 token ids of shape (B, T); got {describe(x)}")
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= cfg.vocab_size):
                raise DataError(
                    None,
                    f"{owner}: token ids must lie in [0, {cfg.vocab_size}); got {int(x.min())}..{int(x.max())}",
                )
        else:
            check_features(owner, "x", x, dim=int(cfg.input_dim))  # type: ignore[arg-type]
        batch, steps = x.shape[0], x.shape[1]
        if mask is None:
            mask = torch.ones(batch, steps, dtype=torch.bool, device=x.device)
        check_bool_mask(owner, "mask", mask, shape=(batch, steps), meaning="True = real step")
        lengths = mask.sum(dim=1)  # (B,)
        if not torch.equal(mask, torch.arange(steps, device=mask.device) < lengths[:, None]):
            raise ShapeError(f"{owner}: mask must be right-padded (all True steps before any False step)")
        if bool((lengths == 0).any()):
            raise ShapeError(
                f"{owner}: every sequence needs at least one real step; mask has an all-False row"
            )

        emb = self.embed(x)  # (B, T, E)
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        h, _ = pad_packed_sequence(out, batch_first=True, total_length=steps)  # (B, T, H·dirs), 0 at padding
        pooled = self.attention(h, mask)
        return SequenceClassifierOutput(logits=self.head(self.drop(pooled.context)), attention=pooled.weights)
