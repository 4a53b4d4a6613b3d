"""``polymodal caption train|run``: image captioning (``polymodal caption --model DIR IMAGE...`` runs ``run``)."""

from __future__ import annotations

import click

from polymodal.cli.options import (
    DefaultVerbGroup,
    data_option,
    echo_json,
    json_option,
    model_option,
    out_option,
    progress_on,
    quiet_option,
    resume_option,
    seed_option,
    stderr_log,
)


@click.group("caption", cls=DefaultVerbGroup, default_verb="run")
def caption() -> None:
    """Image captioning: train a captioner, caption images (the default verb)."""


@caption.command("train")
@data_option("image-text pairs (its train split)", default="builtin:openmoji")
@out_option("model folder to write")
@click.option("--epochs", default=60, show_default=True, type=click.IntRange(min=1),
              help="60 was best of 15/30/60 on val CIDEr-D (docs/vision-language.md)")
@click.option("--dim", default=192, show_default=True, type=click.IntRange(min=8))
@click.option("--depth", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--image-size", default=224, show_default=True, type=click.IntRange(min=32))
@click.option("--label-smoothing", default=0.1, show_default=True, type=float)
@seed_option()
@resume_option
@quiet_option
def train(data: str, out: str, epochs: int, dim: int, depth: int, image_size: int, label_smoothing: float, seed: int,
          resume: bool, quiet: bool) -> None:
    """Train a captioner (frozen EfficientNet grid, transformer decoder)."""
    from polymodal.recipes import caption as recipe

    r = recipe.train(data, out, epochs=epochs, dim=dim, depth=depth, image_size=image_size,
                     label_smoothing=label_smoothing, seed=seed, resume=resume, progress=progress_on(quiet),
                     log=stderr_log(quiet))
    click.echo(f"loss {r.history[0]['loss']:.3f} -> {r.history[-1]['loss']:.3f} on {r.pairs} pairs; wrote {out}")


@caption.command("run")
@model_option("captioner folder")
@click.option("--beam", default=1, show_default=True, type=click.IntRange(min=1),
              help="beam size (1 = greedy, best on val CIDEr-D for trained models)")
@json_option
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def run(model_dir: str, beam: int, as_json: bool, images: tuple[str, ...]) -> None:
    """Caption IMAGES with a trained captioner."""
    from polymodal.recipes import caption as recipe

    rows = recipe.run(model_dir, list(images), beam=beam)
    if as_json:
        echo_json([{"image": c.image, "caption": c.caption, "score": c.score} for c in rows])
        return
    for c in rows:
        click.echo(f"{c.image}\t{c.caption}")


COMMANDS = [caption]
