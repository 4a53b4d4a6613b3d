"""``polymodal fuse train|eval|robustness``: multimodal (fusion) classifiers and their robustness.

The top-level ``robustness`` is an alias of ``fuse robustness``.
"""

from __future__ import annotations

from pathlib import Path

import click

from polymodal.cli.options import (
    data_option,
    echo_json,
    json_option,
    model_option,
    out_option,
    quiet_option,
    resume_option,
    seed_option,
    split_option,
    stderr_log,
)


@click.group("fuse")
def fuse() -> None:
    """Multimodal (fusion) classifiers: train, evaluate, robustness to missing modalities."""


@fuse.command("train")
@data_option("a labelled multimodal set: builtin:avdigits, builtin:avclips, builtin:shapes-vqa, or a folder of "
             "LABEL/clip.mp4 (or train/, val/, test/ folders of them)", required=True)
@click.option("--fusion", default="tensor", show_default=True,
              help="early, late, tensor, low_rank, gated, cross_modal (shapes-vqa: cross_modal, relation; avclips: gated, late, early); or image/video/audio/question for a unimodal baseline")  # fmt: skip
@click.option("--preset", default=None, help="a preset name or JSON file instead of the one --fusion picks")
@out_option("model folder to write")
@click.option("--epochs", default=None, type=click.IntRange(min=1), help="default: the data's recipe (avdigits 15, avclips 10, shapes-vqa see docs/fusion.md, a folder 15)")
@seed_option()
@click.option("--modality-dropout", default=None, type=click.FloatRange(0, 1, max_open=True), help="override the preset's")
@click.option("--dropout-scheme", default=None, type=click.Choice(["independent", "one"]),
              help="override the preset's: drop each modality independently, or exactly one with the probability")  # fmt: skip
@click.option("--aux-loss-weight", default=None, type=click.FloatRange(min=0), help="override the preset's auxiliary unimodal loss weight")
@click.option("--select", default="auto", show_default=True, type=click.Choice(["auto", "all", "missing"]),
              help="validation score that keeps the epoch: accuracy with all modalities, or its mean with each one missing (auto: missing with modality dropout)")  # fmt: skip
@click.option("--device", default="cpu", show_default=True)
@resume_option
@quiet_option
def train_cmd(data: str, fusion: str, preset: str | None, out: str, epochs: int | None, seed: int, modality_dropout: float | None,
              dropout_scheme: str | None, aux_loss_weight: float | None, select: str, device: str, resume: bool,
              quiet: bool) -> None:  # fmt: skip
    """Train a classifier; the epoch with the best validation score is kept."""
    from polymodal.recipes import fuse as recipe

    r = recipe.train(data, out, fusion=fusion, preset=preset, epochs=epochs, seed=seed, device=device,
                     modality_dropout=modality_dropout, dropout_scheme=dropout_scheme, aux_loss_weight=aux_loss_weight,
                     select=select, resume=resume, log=stderr_log(quiet))  # fmt: skip
    click.echo(f"saved {out}: best epoch {r.best_epoch} (by {r.select}), val accuracy {r.val_accuracy:.4f} ({r.seconds:.0f} s)")
    if r.skipped:
        first = r.skipped[0]
        click.echo(f"skipped {len(r.skipped)} file(s) that could not be read, first {first.source}: {first.problem}", err=True)


@fuse.command("eval")
@model_option("classifier folder")
@data_option("a labelled multimodal set; default: the data the model was trained on")
@split_option("test")
@json_option
def eval_cmd(model_dir: str, data: str | None, split: str, as_json: bool) -> None:
    """Accuracy with all modalities and with each one missing."""
    from polymodal.recipes import fuse as recipe

    r = recipe.evaluate(model_dir, data=data, split=split)
    if as_json:
        echo_json(r)
        return
    for k, v in r["accuracy"].items():
        click.echo(f"{k:16s} {v:.4f}")


@fuse.command("robustness")
@model_option("classifier folder (repeat)", multiple=True)
@data_option("a labelled multimodal set; default: the first model's training data")
@split_option("test")
@click.option("--baseline", default=None, type=click.Path(exists=True, file_okay=False),
              help="model folder of the late-fusion baseline (default: the late-fusion model given)")
@out_option("folder for robustness.md/json and plots")
@quiet_option
def robustness_cmd(models: tuple[str, ...], data: str | None, split: str, baseline: str | None, out: str,
                   quiet: bool) -> None:
    """Missing-modality table, imperfection sweeps, relative and effective robustness, plots."""
    from polymodal.recipes import fuse as recipe

    paths = recipe.robustness(list(models), out, data=data, split=split, baseline=baseline, log=stderr_log(quiet))
    click.echo(Path(paths["table"]).read_text())
    click.echo(f"wrote {len(paths)} files to {out}")


COMMANDS = [fuse]
ALIASES = {"robustness": (fuse, robustness_cmd)}
