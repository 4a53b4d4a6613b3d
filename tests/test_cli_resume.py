"""Every training command keeps OUT/checkpoint as it trains, and ``--resume`` after a Ctrl-C finishes the run
exactly as if it had not stopped: the saved model is bit-identical to an uninterrupted run's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from _resume_helpers import assert_same_state
from polymodal.cli.main import main
from polymodal.models.io import load
from polymodal.recipes import flava as flava_recipe
from polymodal.train import classifier_fit, loop


def _pairs_csv(folder: Path) -> str:
    """Eight coloured squares and circles with captions, all in the train split."""
    folder.mkdir()
    rows = ["image,text,split"]
    for i, (name, colour) in enumerate([("red", (200, 0, 0)), ("blue", (0, 0, 200)), ("green", (0, 160, 0)),
                                        ("yellow", (220, 200, 0))] * 2):
        im = Image.new("RGB", (32, 32), "white")
        im.paste(colour, (6, 6, 26, 26))
        im.save(folder / f"{i}.png")
        rows.append(f"{i}.png,a {name} {'square' if i < 4 else 'patch'},train")
    (folder / "pairs.csv").write_text("\n".join(rows) + "\n")
    return str(folder / "pairs.csv")


def _fuse(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from test_classifier import _tiny_data

    monkeypatch.setattr(classifier_fit, "load_data", lambda spec, splits=("train", "val", "test"), **_: _tiny_data())
    return ["fuse", "train", "--data", "builtin:avdigits", "--fusion", "gated", "--epochs", "3"]


def _generate(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    # a checkpoint every 50 steps: the crash comes after step 50, the run ends at 60
    return ["generate", "train", "--data", _pairs_csv(tmp / "data"), "--steps", "60", "--batch-size", "2",
            "--channels", "8"]


def _caption(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return ["caption", "train", "--data", _pairs_csv(tmp / "data"), "--epochs", "3", "--dim", "16", "--depth", "1",
            "--image-size", "32"]


def _flava_pretrain(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setitem(flava_recipe.VQA_SIZES, "train", 20)  # the questions only add words to the vocabulary
    return ["flava", "pretrain", "--data", _pairs_csv(tmp / "data"), "--epochs", "3", "--batch-size", "4",
            "--width", "16", "--layers", "1"]


def _flava_vqa(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setattr(flava_recipe, "VQA_SIZES", {"train": 24, "val": 8, "test": 8})
    return ["flava", "vqa", "--epochs", "3", "--batch-size", "8", "--train-size", "24"]


COMMANDS: dict[str, Callable[[Path, pytest.MonkeyPatch], list[str]]] = {
    "fuse train": _fuse,
    "generate train": _generate,
    "caption train": _caption,
    "flava pretrain": _flava_pretrain,
    "flava vqa": _flava_vqa,
}


def _run(monkeypatch: pytest.MonkeyPatch, argv: list[str], *, interrupt: bool = False) -> tuple[int, int]:
    """``main(argv)``, with Ctrl-C pressed right after the first checkpoint is written if ``interrupt``:
    (exit code, checkpoints written)."""
    original, saves = loop.Checkpointer.save, []

    def save(self: loop.Checkpointer, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        saves.append(1)
        if interrupt:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(loop.Checkpointer, "save", save)
        return main(argv), len(saves)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_ctrl_c_then_resume_gives_the_uninterrupted_model(command: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*COMMANDS[command](tmp_path, monkeypatch), "--seed", "1", "--quiet"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    code, saves = _run(monkeypatch, [*argv, "--out", str(whole)])
    assert code == 0 and saves >= 2
    assert (whole / "checkpoint" / "train_state.pt").is_file()

    assert _run(monkeypatch, [*argv, "--out", str(cut)], interrupt=True) == (130, 1)
    assert "the same command with --resume continues it" in capsys.readouterr().err
    assert not (cut / "config.json").exists()  # no model yet: only the checkpoint
    torch.rand(3)  # other work between the crash and the resume moves the global generator
    assert _run(monkeypatch, [*argv, "--out", str(cut), "--resume"]) == (0, saves - 1)  # continued, not redone
    assert_same_state(load(cut), load(whole))


@pytest.mark.parametrize("command", list(COMMANDS))
def test_resume_without_a_checkpoint_is_a_clear_error(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    argv = COMMANDS[command](tmp_path, monkeypatch)
    assert main([*argv, "--out", str(tmp_path / "new"), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "checkpoint" in err and "Traceback" not in err


def test_ctrl_c_message_says_resume_only_for_commands_that_can() -> None:
    from polymodal.cli.main import _interrupted

    for argv in (["train", "--out", "x"], ["demo"], ["dual", "train"], ["generate", "train"], ["fuse", "train"]):
        assert "--resume continues it" in _interrupted(argv), argv
    for argv in (["index", "build", "--out", "x"], ["embed"], ["generate", "--model", "m", "a red heart"], []):
        assert _interrupted(argv) == "interrupted", argv
