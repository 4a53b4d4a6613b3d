"""Copy weights from ``torch.nn`` transformer modules into the ``polymodal.nn`` ones.

Used by the parity tests, and by anyone with a model trained on ``torch.nn.Transformer*`` layers. Our
layers keep torch's parameter names where they exist; the differences are the MLP (``linear1``/``linear2``
→ ``mlp.fc1``/``mlp.fc2``) and the decoder's cross-attention (``multihead_attn`` → ``cross_attn``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import nn

from polymodal.errors import CheckpointError
from polymodal.nn.attention import load_torch_mha_state
from polymodal.nn.transformer import (
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)


def _copy_module(ours: nn.Module, theirs: nn.Module, name: str) -> None:
    """Copy ``weight`` and ``bias`` of a Linear or LayerNorm, checking that the shapes agree."""
    for attr in ("weight", "bias"):
        dst, src = getattr(ours, attr, None), getattr(theirs, attr, None)
        if dst is None and src is None:
            continue
        if dst is None or src is None or dst.shape != src.shape:
            shapes = [None if t is None else tuple(t.shape) for t in (dst, src)]
            raise CheckpointError(
                f"torch converter: {name}.{attr} differs: ours {shapes[0]}, torch {shapes[1]}"
            )
        dst.data.copy_(src.data)


def _check_layer(
    ours: TransformerEncoderLayer | TransformerDecoderLayer, theirs: nn.Module, name: str
) -> None:
    if ours.norm_first != theirs.norm_first:
        raise CheckpointError(
            f"torch converter: {name} norm_first={theirs.norm_first} in torch, {ours.norm_first} in ours"
        )
    act = theirs.activation  # F.relu / F.gelu when torch was given a name, else a module
    expected: type | None = {F.relu: nn.ReLU, F.gelu: nn.GELU}.get(act)  # type: ignore[call-overload]
    if expected is None and isinstance(act, nn.Module):
        expected = type(act)
    if expected is not None and type(ours.mlp.act) is not expected:
        raise CheckpointError(
            f"torch converter: {name} activation is {expected.__name__} in torch, {type(ours.mlp.act).__name__} in ours"
        )


def load_torch_encoder_layer(ours: TransformerEncoderLayer, theirs: nn.TransformerEncoderLayer) -> None:
    """Copy the weights of a ``torch.nn.TransformerEncoderLayer`` into ``ours`` (same width, heads,
    feed-forward width, ``norm_first`` and activation).

    Args:
        ours: Destination layer.
        theirs: Source layer.
    """
    _check_layer(ours, theirs, "encoder layer")
    load_torch_mha_state(ours.self_attn, theirs.self_attn)
    _copy_module(ours.mlp.fc1, theirs.linear1, "linear1")
    _copy_module(ours.mlp.fc2, theirs.linear2, "linear2")
    _copy_module(ours.norm1, theirs.norm1, "norm1")
    _copy_module(ours.norm2, theirs.norm2, "norm2")


def load_torch_decoder_layer(ours: TransformerDecoderLayer, theirs: nn.TransformerDecoderLayer) -> None:
    """Copy the weights of a ``torch.nn.TransformerDecoderLayer`` (``multihead_attn`` is our ``cross_attn``).

    Args:
        ours: Destination layer.
        theirs: Source layer.
    """
    _check_layer(ours, theirs, "decoder layer")
    load_torch_mha_state(ours.self_attn, theirs.self_attn)
    load_torch_mha_state(ours.cross_attn, theirs.multihead_attn)
    _copy_module(ours.mlp.fc1, theirs.linear1, "linear1")
    _copy_module(ours.mlp.fc2, theirs.linear2, "linear2")
    for i in (1, 2, 3):
        _copy_module(getattr(ours, f"norm{i}"), getattr(theirs, f"norm{i}"), f"norm{i}")


def _load_stack(
    ours: TransformerEncoder | TransformerDecoder,
    theirs: nn.TransformerEncoder | nn.TransformerDecoder,
    load_layer: Callable[[Any, Any], None],
) -> None:
    if len(ours.layers) != len(theirs.layers):
        raise CheckpointError(
            f"torch converter: torch stack has {len(theirs.layers)} layers, ours {len(ours.layers)}"
        )
    for mine, other in zip(ours.layers, theirs.layers, strict=True):
        load_layer(mine, other)
    if (theirs.norm is None) != isinstance(ours.norm, nn.Identity):
        raise CheckpointError("torch converter: one stack has a final norm and the other has none")
    if theirs.norm is not None:
        _copy_module(ours.norm, theirs.norm, "norm")


def load_torch_encoder(ours: TransformerEncoder, theirs: nn.TransformerEncoder) -> None:
    """Copy a ``torch.nn.TransformerEncoder`` (layers and optional final ``norm``) into ``ours``.

    Args:
        ours: Destination stack.
        theirs: Source stack.
    """
    _load_stack(ours, theirs, load_torch_encoder_layer)


def load_torch_decoder(ours: TransformerDecoder, theirs: nn.TransformerDecoder) -> None:
    """Copy a ``torch.nn.TransformerDecoder`` (layers and optional final ``norm``) into ``ours``.

    Args:
        ours: Destination stack.
        theirs: Source stack.
    """
    _load_stack(ours, theirs, load_torch_decoder_layer)
