"""Shared test set-up: one torch thread per test process (the suite runs on 2 shared cores, where tiny
ops with 2 threads spend more time at barriers than computing), and an isolated feature cache."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Tests never read or write the user's ~/.cache/polymodal.
    monkeypatch.setenv("POLYMODAL_CACHE", str(tmp_path_factory.getbasetemp() / "polymodal-cache"))
