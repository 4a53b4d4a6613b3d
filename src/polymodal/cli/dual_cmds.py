"""``polymodal dual train|eval|zeroshot|embed`` (dual encoders: aligner, CLIP), ``demo`` and ``presets``.

The top-level ``train``, ``eval``, ``zeroshot`` and ``embed`` are aliases of the ``dual`` verbs (cli/main.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from polymodal.cli.options import (
    data_option,
    echo_json,
    json_option,
    model_option,
    out_option,
    progress_on,
    quiet_option,
    report_skipped,
    seed_option,
    split_option,
)
from polymodal.recipes.presets import DEMO_DATA, DEMO_MODEL_ARGS, DEMO_TRAIN_ARGS


@click.group("dual")
def dual() -> None:
    """Dual encoders (aligner, CLIP): train, evaluate, zero-shot labels, embeddings."""


def _print_run(r: Any, out: str, as_json: bool) -> None:
    """A training run's result: metrics.json with --json, else the tables, the skipped records and the folder."""
    if as_json:
        import json

        echo_json(json.loads((Path(out) / "metrics.json").read_text()))
        return
    from polymodal.eval.eval_sets import headline
    from polymodal.eval.report import format_metrics_table

    click.echo(format_metrics_table(r.metrics, r.baselines))
    for source, block in r.eval_sets.items():
        click.echo(f"\n{source} ({block['split']} split, {block['size']} items)")
        click.echo(format_metrics_table(*headline(block)))
    if r.bad:
        click.echo(f"\nskipped {len(r.bad)} bad record(s):")
        for b in r.bad[:20]:
            click.echo(f"  {b}")
        if len(r.bad) > 20:
            click.echo(f"  ... and {len(r.bad) - 20} more (see {out}/metrics.json)")
    click.echo(f"\nrun folder: {out}  (report: {out}/report.html)  {r.seconds:.0f} s")


@dual.command("train")
@data_option("image-text pairs", default=DEMO_DATA)
@out_option("run folder to write (a model folder, with metrics and a report)")
@click.option("--preset", default=None, help="model preset name or JSON file (see `polymodal presets`); default: the aligner")
@click.option("--unlock", default=DEMO_MODEL_ARGS["unlock_image"], show_default=True, help="train the last N image-tower blocks")
@click.option("--unlock-text", default=DEMO_MODEL_ARGS["unlock_text"], show_default=True, help="train the last N text-tower layers")
@click.option("--epochs", default=DEMO_TRAIN_ARGS["epochs"], show_default=True)
@click.option("--batch-size", default=DEMO_TRAIN_ARGS["batch_size"], show_default=True)
@click.option("--lr", default=DEMO_TRAIN_ARGS["lr"], show_default=True)
@click.option("--views", default=DEMO_TRAIN_ARGS["image_views"], show_default=True, help="augmented views per training image")
@click.option("--image-size", default=DEMO_MODEL_ARGS["image_size"], show_default=True)
@seed_option()
@click.option("--accum-steps", default=1, show_default=True,
              help="micro-batches per process per step (less memory; the contrastive batch stays exact)")
@click.option("--local-loss/--full-loss", default=True, show_default=True,
              help="under torchrun: each process builds only its own logit rows (memory / world size)")
@click.option("--refit/--no-refit", default=DEMO_TRAIN_ARGS["refit"], show_default=True,
              help="after early stopping, retrain on train+val for the best epoch count and keep that model")
@click.option("--transfer/--no-transfer", default=True, show_default=True,
              help="mix in the ImageNet transfer for images far from the training data (locked image tower)")
@click.option("--resume", is_flag=True, help="continue from OUT/checkpoint (any number of processes)")
@click.option("--strict", is_flag=True, help="stop at the first bad record instead of skipping it")
@click.option("--no-cache", is_flag=True, help="do not read or write the feature cache")
@json_option
@quiet_option
def train(data, out, preset, unlock, unlock_text, epochs, batch_size, lr, views, image_size, seed, accum_steps,
          local_loss, refit, transfer, resume, strict, no_cache, as_json, quiet):
    """Train an aligner (CLIP-style dual encoder on the pretrained towers) or a preset model.

    Runs as is on one process, or under torchrun on several (--batch-size is then the global batch):
    torchrun --nproc-per-node 2 -m polymodal dual train --out runs/x
    """
    from polymodal.recipes import dual as recipe

    r = recipe.train(
        data, out, preset=preset,
        model_args={"unlock_image": unlock, "unlock_text": unlock_text, "image_size": image_size},
        train_args={"epochs": epochs, "batch_size": batch_size, "lr": lr, "image_views": views, "seed": seed,
                    "accum_steps": accum_steps, "local_loss": local_loss, "refit": refit},
        transfer=transfer, resume=resume, strict=strict, cache=not no_cache, progress=progress_on(quiet, as_json),
    )  # fmt: skip
    if r is not None:
        _print_run(r, out, as_json)


@click.command()
@out_option("run folder to write", default="runs/demo")
@click.option("--resume", is_flag=True, help="continue from OUT's checkpoint")
@seed_option()
@json_option
@quiet_option
def demo(out, resume, seed, as_json, quiet):
    """The main job: train the default model on the embedded emoji (OpenMoji, with the Twemoji and Noto
    drawings of its training emoji), evaluate once on OpenMoji's test split and on the photographs and
    other drawing styles, write a report."""
    from polymodal.recipes import dual as recipe

    r = recipe.demo(out, resume=resume, seed=seed, progress=progress_on(quiet, as_json))
    if r is not None:
        _print_run(r, out, as_json)


@dual.command("eval")
@model_option("image-text model folder")
@data_option("image-text pairs", default=DEMO_DATA)
@split_option("test", choices=("train", "val", "test", "all"),
              help="which rows to score; a manifest's 'split' column assigns them, else a hash of the image path")
@json_option
@quiet_option
def eval_cmd(model_dir, data, split, as_json, quiet):
    """Evaluate a model: retrieval R@k, zero-shot per label kind, linear probe (with train/val)."""
    from polymodal.eval.report import format_metrics_table
    from polymodal.recipes import dual as recipe

    ev = recipe.evaluate(model_dir, data, split, progress=progress_on(quiet, as_json))
    if ev.note:
        click.echo(f"note: {ev.note}", err=True)
    if as_json:
        echo_json(ev.to_dict())
        return
    # Which rows were scored, out of how many: a manifest without a split column is split by a hash.
    click.echo(f"{data}: scored {ev.size} pairs of {recipe.rows_of(split)}"
               + ("" if ev.sizes is None else f" ({ev.sizes.describe()}; --split all scores every row)"))
    click.echo(format_metrics_table(ev.metrics, ev.baselines))
    report_skipped(ev.bad, "bad record(s)")


STRICT_IMAGES = click.option("--strict", is_flag=True, help="stop at the first unreadable image instead of skipping it")


@dual.command("zeroshot")
@model_option("image-text model folder")
@click.option("--labels", required=True, help='comma-separated label texts, e.g. "cat,dog"')
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--support/--no-support", default=True, show_default=True,
              help="mix each label with the images of its nearest training captions (the model's support set)")
@STRICT_IMAGES
@json_option
def zeroshot(model_dir, labels, images, support, strict, as_json):
    """Zero-shot labels for IMAGES from label text; an unreadable image is skipped and named on stderr."""
    from polymodal.recipes import dual as recipe

    names = [s.strip() for s in labels.split(",") if s.strip()]
    z = recipe.zeroshot(model_dir, names, list(images), support=support, strict=strict)
    if as_json:
        echo_json(z.to_list())
    else:
        for p, r in z.rows:
            click.echo(f"{p}: " + ", ".join(f"{lb} {s:.3f}" for lb, s in r[:5]))
    report_skipped(z.bad)


@dual.command("embed")
@model_option("image-text model folder")
@click.option("--images", "images_mode", is_flag=True, help="embed the image files (or folders) given as arguments")
@click.argument("images", nargs=-1, type=click.Path())
@click.option("--texts", type=click.Path(exists=True, dir_okay=False), help="a file with one text per line")
@out_option("output .npy, (N, D) float32", folder=False)
@STRICT_IMAGES
@quiet_option
def embed(model_dir, images_mode, images, texts, out, strict, quiet):
    """Embed images or texts: an (N, D) float32 array of L2-normalised rows in input order.

    polymodal dual embed --model DIR --images a.png b.png photos/ --out img.npy
    polymodal dual embed --model DIR --texts captions.txt --out txt.npy

    Beside OUT, OUT.rows.json lists the input of each row (an image's path, or captions.txt:LINE) and the
    images skipped as unreadable. Under torchrun each process embeds a contiguous share and rank 0 writes
    the rows in input order.
    """
    if images_mode and not images:
        raise click.UsageError("--images needs at least one image file or folder")
    if images and not images_mode:
        raise click.UsageError("image paths given without --images")
    if bool(images) == bool(texts):
        raise click.UsageError("give exactly one of --images or --texts")
    from polymodal.recipes import dual as recipe

    e = recipe.embed(model_dir, out, images=list(images) or None, texts=texts, strict=strict,
                     progress=progress_on(quiet))
    if e is None:
        return
    click.echo(f"wrote {e.npy}: {e.shape[0]} x {e.shape[1]} float32 (rows: {e.rows})")
    report_skipped(e.bad)


@click.command()
def presets():
    """List the model presets."""
    from polymodal.recipes.dual import model_presets

    for name, path in model_presets():
        click.echo(f"{name:24s} {path}")


COMMANDS = [dual, demo, presets]
# Top-level aliases kept from before the noun groups: name -> the group verb they run.
ALIASES = {"train": (dual, train), "eval": (dual, eval_cmd), "zeroshot": (dual, zeroshot), "embed": (dual, embed)}
