"""Crash a training loop right after its n-th checkpoint, to test that a resume continues it exactly."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from polymodal.train import loop


def crash_after_checkpoints(monkeypatch: pytest.MonkeyPatch, n: int, run: Callable[[], Any]) -> None:
    """Run ``run`` with :meth:`Checkpointer.save` raising ``KeyboardInterrupt`` after its ``n``-th save,
    then move every global random generator, as other work before a resume would."""
    original = loop.Checkpointer.save
    saves = []

    def save_then_crash(self: loop.Checkpointer, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        saves.append(1)
        if len(saves) == n:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(loop.Checkpointer, "save", save_then_crash)
        with pytest.raises(KeyboardInterrupt):
            run()
    random.random(), np.random.rand(), torch.rand(3)


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """Every parameter and buffer bit-identical."""
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
