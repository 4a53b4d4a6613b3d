"""Runs of the multimodal (fusion) classifiers: ``polymodal fuse train|eval|robustness``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from polymodal.data.sources import require_source
from polymodal.errors import ConfigError
from polymodal.recipes.common import Log, require_model, say

if TYPE_CHECKING:
    from polymodal.train.classifier_fit import FitResult

CLASSIFIER_DATA = ("avdigits", "avclips", "shapes-vqa")  # the builtins classifier_fit.load_data reads
NEEDS = "a labelled multimodal set"


def _check_data(data: str | None, command: str) -> str | None:
    """``data`` as the classifier loader names it (``builtin:NAME``, or a labelled folder's absolute path, so a
    saved model finds it from anywhere), or one line saying why it cannot be used."""
    if data is None:
        return None
    spec = require_source(data, command=command, needs=NEEDS, kinds=("folder",), builtins=CLASSIFIER_DATA)
    if spec.kind == "folder":
        assert spec.path is not None
        return str(spec.path.resolve())
    if spec.split is not None:
        how = "reads the train and val splits" if command == "fuse train" else "scores the split --split names"
        raise ConfigError(f"{command} {how}; give builtin:{spec.name}, not {data}")
    return f"builtin:{spec.name}"


def train(data: str, out: str, *, fusion: str = "tensor", preset: str | None = None, epochs: int | None = None,
          seed: int = 0, device: str = "cpu", modality_dropout: float | None = None, dropout_scheme: str | None = None,
          aux_loss_weight: float | None = None, select: str = "auto", resume: bool = False,
          log: Log | None = None) -> FitResult:
    """Train a classifier on ``data`` (builtin:avdigits, builtin:avclips, builtin:shapes-vqa or a labelled folder,
    ``label/clip.mp4``) and save it to ``out``; the
    epoch with the best validation score is kept. ``log`` gets one line per epoch; ``out/checkpoint`` is rewritten
    after every epoch and ``resume`` continues from it."""
    from polymodal.train.classifier_fit import train_run

    data = _check_data(data, "fuse train") or data
    say(log, f"training a {preset or fusion} classifier on {data}")
    return train_run(data, out, fusion=fusion, preset=preset, epochs=epochs, seed=seed, device=device,
                     modality_dropout=modality_dropout, dropout_scheme=dropout_scheme,
                     aux_loss_weight=aux_loss_weight, select=select, resume=resume, log=log)


def evaluate(model_dir: str, *, data: str | None = None, split: str = "test") -> dict[str, Any]:
    """Accuracy of a saved classifier with all modalities and with each one missing."""
    from polymodal.eval.robustness import evaluate_run

    require_model(model_dir, command="fuse eval", kinds=("classifier",))
    data = _check_data(data, "fuse eval")
    return evaluate_run(model_dir, data=data, split=split)


def robustness(model_dirs: list[str], out: str, *, data: str | None = None, split: str = "test",
               baseline: str | None = None, log: Log | None = None) -> dict[str, Path]:
    """The missing-modality table, imperfection sweeps, relative and effective robustness and plots of
    saved classifiers, written to ``out``; returns the written files by name."""
    from polymodal.eval.robustness import robustness_run

    for m in [*model_dirs, *([baseline] if baseline else [])]:
        require_model(m, command="robustness", kinds=("classifier",))
    data = _check_data(data, "robustness")
    say(log, f"evaluating {len(model_dirs)} classifier(s) under missing and degraded modalities "
             "(a few minutes on a CPU)")
    return {k: Path(v) for k, v in robustness_run(list(model_dirs), out, data=data, split=split,
                                                  baseline=baseline).items()}
