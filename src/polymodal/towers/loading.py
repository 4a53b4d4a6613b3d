"""Strict checkpoint loading shared by the pretrained towers.

``nn.Module.load_state_dict(strict=True)`` already refuses missing and unexpected keys, but it raises a
``RuntimeError`` listing every key of a model, and a wrong shape surfaces as a size-mismatch traceback.
Towers load third-party files, so a file from another model must read as one clear ``CheckpointError``
that names the file and the first few offending keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from polymodal.errors import CheckpointError

_SHOW = 5  # keys listed per problem; a checkpoint from another model can differ in hundreds


def _listed(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def load_state_dict_strict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str | Path
) -> None:
    """Load ``state_dict`` into ``module`` requiring identical key sets and shapes.

    Args:
        module: The module to fill in place.
        state_dict: Tensors by parameter/buffer name, as saved by the reference implementation.
        source: The file the tensors came from, named in the error message.

    Raises:
        CheckpointError: If keys are missing or unexpected, or a tensor has the wrong shape.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    wrong = [
        f"{k} {tuple(state_dict[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if wrong:
        problems.append(f"shape mismatch: {_listed(wrong)}")
    if problems:
        raise CheckpointError(
            f"{source}: not a checkpoint of {type(module).__name__}; " + "; ".join(problems)
        )
    module.load_state_dict(state_dict, strict=True)
