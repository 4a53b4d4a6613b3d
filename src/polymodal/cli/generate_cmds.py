"""``polymodal generate train|run``: text-to-image (``polymodal generate --model DIR PROMPT...`` runs ``run``)."""

from __future__ import annotations

import click

from polymodal.cli.options import (
    DefaultVerbGroup,
    data_option,
    echo_json,
    json_option,
    model_option,
    out_option,
    quiet_option,
    resume_option,
    seed_option,
    stderr_log,
)


@click.group("generate", cls=DefaultVerbGroup, default_verb="run")
def generate() -> None:
    """Text-to-image: train the 32x32 flow model, draw images from prompts (the default verb)."""


@generate.command("train")
@data_option("image-text pairs (its train split)", default="builtin:openmoji")
@out_option("model folder to write")
@click.option("--steps", default=500, show_default=True, type=click.IntRange(min=1), help="optimiser steps")
@click.option("--batch-size", default=48, show_default=True, type=click.IntRange(min=1))
@click.option("--channels", default=32, show_default=True, type=click.IntRange(min=8), help="U-Net base width")
@click.option("--lr", default=2e-3, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--conditional/--unconditional", default=True, show_default=True,
              help="condition on the MiniLM embedding of each caption, or learn the images alone (a baseline)")
@click.option("--recolour/--no-recolour", default=False, show_default=True,
              help="add recoloured copies of single-colour pairs ('red apple' -> 'blue apple'), never producing a "
                   "validation or test caption")
@seed_option()
@resume_option
@json_option
@quiet_option
def train(data: str, out: str, steps: int, batch_size: int, channels: int, lr: float, conditional: bool, recolour: bool,
          seed: int, resume: bool, as_json: bool, quiet: bool) -> None:
    """Train the text-to-image flow model (classifier-free guidance) on 32x32 images."""
    from polymodal.recipes import generate as recipe

    r = recipe.train(data, out, steps=steps, batch_size=batch_size, channels=channels, lr=lr, conditional=conditional,
                     recolour=recolour, seed=seed, resume=resume, log=stderr_log(quiet, as_json))
    if as_json:
        echo_json({"out": str(r.out), "pairs": r.pairs, "conditional": r.conditional, "history": r.history})
        return
    h = r.history
    click.echo(f"loss {h[0]['loss']:.3f} -> {h[-1]['loss']:.3f} on {r.pairs} images; wrote {out}")


@generate.command("run")
@click.argument("prompts", nargs=-1, required=True)
@model_option("generator folder")
@out_option("PNG grid to write, one row per prompt", default="grid.png", folder=False)
@click.option("--num", default=4, show_default=True, type=click.IntRange(min=1), help="images per prompt")
@click.option("--guidance", default=2.0, show_default=True, type=float, help="classifier-free guidance weight")
@click.option("--steps", default=20, show_default=True, type=click.IntRange(min=1), help="Euler steps")
@seed_option()
def run(prompts: tuple[str, ...], model_dir: str, out: str, num: int, guidance: float, steps: int, seed: int) -> None:
    """Draw NUM images per PROMPT with a text-to-image model; one row per prompt in --out."""
    from polymodal.recipes import generate as recipe

    g = recipe.run(model_dir, list(prompts), out, num=num, guidance=guidance, steps=steps, seed=seed)
    click.echo(f"wrote {g.out} ({g.prompts} prompts x {g.per_prompt})")


COMMANDS = [generate]
