"""``polymodal fuse train|eval`` and ``polymodal robustness``: multimodal classifiers and their robustness."""

from __future__ import annotations

import json
from pathlib import Path

import click

DATA_HELP = "builtin:avdigits or builtin:shapes-vqa"


@click.group("fuse")
def fuse() -> None:
    """Train and evaluate multimodal (fusion) classifiers."""


@fuse.command("train")
@click.option("--data", "data", required=True, help=DATA_HELP)
@click.option("--fusion", default="tensor", show_default=True,
              help="early, late, tensor, low_rank, gated, cross_modal; or image/audio/question for a unimodal baseline")  # fmt: skip
@click.option("--preset", default=None, help="a preset name or JSON file instead of the one --fusion picks")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="model folder to write")
@click.option("--epochs", default=None, type=click.IntRange(min=1), help="default: the data's recipe (avdigits 15, shapes-vqa see docs/fusion.md)")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--modality-dropout", default=None, type=click.FloatRange(0, 1, max_open=True), help="override the preset's")
@click.option("--dropout-scheme", default=None, type=click.Choice(["independent", "one"]),
              help="override the preset's: drop each modality independently, or exactly one with the probability")  # fmt: skip
@click.option("--aux-loss-weight", default=None, type=click.FloatRange(min=0), help="override the preset's auxiliary unimodal loss weight")
@click.option("--select", default="auto", show_default=True, type=click.Choice(["auto", "all", "missing"]),
              help="validation score that keeps the epoch: accuracy with all modalities, or its mean with each one missing (auto: missing with modality dropout)")  # fmt: skip
@click.option("--device", default="cpu", show_default=True)
def train_cmd(data: str, fusion: str, preset: str | None, out: str, epochs: int | None, seed: int, modality_dropout: float | None,
              dropout_scheme: str | None, aux_loss_weight: float | None, select: str, device: str) -> None:  # fmt: skip
    """Train a classifier; the epoch with the best validation score is kept."""
    from polymodal.train.classifier_fit import train_run

    r = train_run(data, out, fusion=fusion, preset=preset, epochs=epochs, seed=seed, device=device,
                  modality_dropout=modality_dropout, dropout_scheme=dropout_scheme, aux_loss_weight=aux_loss_weight,
                  select=select, log=lambda s: click.echo(s, err=True))  # fmt: skip
    click.echo(f"saved {out}: best epoch {r.best_epoch} (by {r.select}), val accuracy {r.val_accuracy:.4f} ({r.seconds:.0f} s)")


@fuse.command("eval")
@click.option("--model", "model", required=True, type=click.Path(file_okay=False), help="model folder")
@click.option("--data", default=None, help="default: the data the model was trained on")
@click.option("--split", default="test", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def eval_cmd(model: str, data: str | None, split: str, as_json: bool) -> None:
    """Accuracy with all modalities and with each one missing."""
    from polymodal.eval.robustness import evaluate_run

    r = evaluate_run(model, data=data, split=split)
    if as_json:
        click.echo(json.dumps(r, indent=2))
        return
    for k, v in r["accuracy"].items():
        click.echo(f"{k:16s} {v:.4f}")


@click.command("robustness")
@click.option("--model", "models", required=True, multiple=True, type=click.Path(file_okay=False), help="model folder (repeat)")
@click.option("--data", default=None, help="default: the first model's training data")
@click.option("--split", default="test", show_default=True)
@click.option("--baseline", default=None, help="model folder of the late-fusion baseline (default: the late-fusion model given)")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="folder for robustness.md/json and plots")
def robustness_cmd(models: tuple[str, ...], data: str | None, split: str, baseline: str | None, out: str) -> None:
    """Missing-modality table, imperfection sweeps, relative and effective robustness, plots."""
    from polymodal.eval.robustness import robustness_run

    paths = robustness_run(list(models), out, data=data, split=split, baseline=baseline)
    click.echo(Path(paths["table"]).read_text())
    click.echo(f"wrote {len(paths)} files to {out}")


COMMANDS = [fuse, robustness_cmd]
