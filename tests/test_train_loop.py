"""The shared training-loop helper (polymodal.train.loop): parameter groups, schedule, seeding, exact
resume and progress on stderr; and that no trainer keeps a private copy of them."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from polymodal.errors import CheckpointError
from polymodal.train.loop import (
    load_run,
    log,
    param_groups,
    progress_bar,
    save_run,
    seed_everything,
    warmup_cosine,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "polymodal"


class Tiny(nn.Module):
    """Every kind of parameter the groups tell apart, and dropout (the global generator) in the forward."""

    def __init__(self) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(10, 8)
        self.pos = nn.Embedding(4, 8)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(8, 3)
        self.logit_scale = nn.Parameter(torch.tensor(1.0))
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.token_embedding(ids) + self.pos.weight[: ids.shape[1]] + self.cls_token  # (B, T, 8)
        h = self.norm(self.drop(torch.relu(self.proj(h)))).mean(1)  # (B, 8)
        return self.head(h) * self.logit_scale.exp()


def _names(model: nn.Module, group: dict) -> set[str]:
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_groups_decay_weight_matrices_only():
    model = Tiny()
    decay, no_decay = param_groups(model, 0.1, lr=3e-3)
    assert _names(model, decay) == {"proj.weight", "head.weight"}
    assert _names(model, no_decay) == {
        "token_embedding.weight", "pos.weight", "cls_token", "proj.bias", "norm.weight", "norm.bias",
        "head.bias", "logit_scale",
    }  # the frozen layer is in neither
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    assert decay["lr"] == no_decay["lr"] == 3e-3
    assert "lr" not in param_groups(model, 0.1)[0]  # left to the optimiser's default
    # Filtered pairs work too, and a group with nothing in it is left out (AdamW would keep an empty one).
    groups = param_groups([(n, p) for n, p in model.named_parameters() if n.startswith("norm")], 0.1)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.0


def test_warmup_cosine_follows_its_formula():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = warmup_cosine(opt, warmup_steps=4, total_steps=14, min_ratio=0.1)
    lrs = []
    for _ in range(16):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(lrs[:4], [0.5, 1.0, 1.5, 2.0])  # linear warm-up to the peak
    for s in range(4, 16):
        p = min(1.0, (s - 4) / 10)
        assert lrs[s] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))))
    assert lrs[14] == lrs[15] == pytest.approx(0.2)  # the floor after the last step
    # Without warm-up or floor it is torch's cosine annealing (what the captioner and generator used).
    a = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    b = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    ours, theirs = warmup_cosine(a, warmup_steps=0, total_steps=20), torch.optim.lr_scheduler.CosineAnnealingLR(b, 20)
    for _ in range(20):
        assert a.param_groups[0]["lr"] == pytest.approx(b.param_groups[0]["lr"], abs=1e-12)
        a.step(), b.step(), ours.step(), theirs.step()


def test_seed_everything_seeds_python_numpy_and_torch():
    def draw() -> tuple:
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    seed_everything(5)
    first = draw()
    seed_everything(5)
    assert draw() == first
    seed_everything(6)
    assert all(a != b for a, b in zip(draw(), first))


# ---------------------------------------------------------------------------------------------- resume
def _run(steps: tuple[int, int], ckpt: Path | None, *, resume: bool = False) -> tuple[list[float], Tiny]:
    """A tiny loop drawing from every random source: its own generator (batches), torch's global one
    (dropout), NumPy's and Python's (noise on the loss). Runs steps[0] <= step < steps[1] and saves."""
    seed_everything(0)
    model = Tiny()
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-2)
    sched = warmup_cosine(opt, warmup_steps=2, total_steps=8, min_ratio=0.1)
    gen = torch.Generator().manual_seed(1)
    losses: list[float] = []
    if resume:
        assert ckpt is not None
        found = load_run(ckpt, optimizer=opt, scheduler=sched, generators={"batches": gen})
        assert found is not None and found.state["step"] == steps[0]
        model.load_state_dict(found.weights)
        losses = list(found.state["losses"])
    for step in range(steps[0], steps[1]):
        ids = torch.randint(0, 10, (6, 4), generator=gen)
        y = torch.randint(0, 3, (6,), generator=gen)
        loss = nn.functional.cross_entropy(model(ids), y) * (1 + 0.01 * np.random.rand() + 0.01 * random.random())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if ckpt is not None:
            save_run(ckpt, weights=model.state_dict(), optimizer=opt, scheduler=sched,
                     loop={"step": step + 1, "losses": losses}, config={"kind": "tiny"}, generators={"batches": gen})
    return losses, model


def test_a_resumed_run_continues_bit_identically(tmp_path):
    whole, model_a = _run((0, 8), None)
    first, _ = _run((0, 3), tmp_path / "ckpt")  # "crashes" after step 3's checkpoint
    random.random(), np.random.rand(), torch.rand(5)  # other work in between moves every global generator
    resumed, model_b = _run((3, 8), tmp_path / "ckpt", resume=True)
    assert first == whole[:3] and resumed == whole  # exactly, not approximately
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert _run((0, 8), None)[0] == whole  # and the whole run itself is reproducible


def test_load_run_refuses_what_it_cannot_continue(tmp_path):
    model = Tiny()
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-2)
    assert load_run(tmp_path / "none", optimizer=opt, scheduler=None) is None
    _run((0, 1), tmp_path / "ckpt")
    other = torch.optim.AdamW(model.parameters(), lr=1e-2)  # one group, not two: another run's optimiser
    with pytest.raises(CheckpointError, match="optimiser state does not fit"):
        load_run(tmp_path / "ckpt", optimizer=other, scheduler=None)
    with pytest.raises(CheckpointError, match=r"no state for the random generator\(s\) \['shuffle'\]"):
        load_run(tmp_path / "ckpt", optimizer=opt, scheduler=None, generators={"shuffle": torch.Generator()})
    assert not opt.state  # refused before anything was restored

    def refuse(found: Path, state: dict) -> None:
        assert found == tmp_path / "ckpt" and state["step"] == 1
        raise ValueError("other settings")

    with pytest.raises(ValueError, match="other settings"):
        load_run(tmp_path / "ckpt", optimizer=opt, scheduler=None, check=refuse)
    assert not opt.state  # the check runs before anything is restored


# ---------------------------------------------------------------------------------------------- progress
def test_progress_goes_to_stderr_and_is_silenced_by_its_flag(capsys):
    assert list(progress_bar(range(3), desc="epoch 1/1")) == [0, 1, 2]
    log("epoch 1 loss 0.5")
    out, err = capsys.readouterr()
    assert out == "" and "epoch 1/1" in err and "epoch 1 loss 0.5" in err
    assert list(progress_bar(range(3), desc="epoch 1/1", enabled=False)) == [0, 1, 2]
    log("hidden", enabled=False)
    assert capsys.readouterr() == ("", "")


# ---------------------------------------------------------------------------------------------- one copy
TRAINERS = ("train/fit.py", "train/global_batch.py", "train/classifier_fit.py", "caption/train.py",
            "generate/train.py", "flava/pretrain.py", "flava/vqa.py")


def test_every_trainer_uses_the_helper_and_keeps_no_private_copy():
    private = re.compile(r"lr_scheduler\.|def (seed_everything|param_groups|warmup_cosine)\b|from tqdm|print\(|"
                         r"optim\.AdamW\((model|self\.model)\.parameters\(\)")
    for rel in TRAINERS:
        text = (SRC / rel).read_text()
        assert "polymodal.train.loop import" in text, rel
        assert not private.findall(text), (rel, private.findall(text))
    assert not (SRC / "train" / "schedule.py").exists()
    # Anywhere else in the package, an optimiser or a schedule is built only through the helper.
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel not in TRAINERS and rel != "train/loop.py":
            assert not re.search(r"torch\.optim\.|lr_scheduler|\.backward\(", path.read_text()), rel
