"""``polymodal flava pretrain|vqa``: the small FLAVA-style model (docs/flava.md)."""

from __future__ import annotations

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
    stderr_log,
)


@click.group("flava")
def flava() -> None:
    """FLAVA-style multimodal model: pretrain on image-text pairs, fine-tune for VQA."""


@flava.command("pretrain")
@data_option("image-text pairs (its train split)", default="builtin:openmoji")
@out_option("model folder to write")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=2))
@click.option("--lr", default=1e-3, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--image-size", default=32, show_default=True, type=click.IntRange(min=8))
@click.option("--patch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--width", default=96, show_default=True, type=click.IntRange(min=8))
@click.option("--layers", default=2, show_default=True, type=click.IntRange(min=1), help="depth of each encoder")
@click.option("--max-text-length", default=16, show_default=True, type=click.IntRange(min=3),
              help="tokens per caption with <bos>/<eos>; longer captions are cut, and the run says how many (builtin:shapes: 24)")
@seed_option()
@resume_option
@json_option
@quiet_option
def pretrain(data: str, out: str, epochs: int, batch_size: int, lr: float, image_size: int, patch_size: int, width: int,
             layers: int, max_text_length: int, seed: int, resume: bool, as_json: bool, quiet: bool) -> None:
    """Pretrain with MLM, MIM, masked multimodal modelling, image-text matching and the contrastive loss."""
    from polymodal.recipes import flava as recipe

    shape = recipe.FlavaShape(image_size=image_size, patch_size=patch_size, width=width, layers=layers,
                              max_text_length=max_text_length)
    r = recipe.pretrain(data, out, shape=shape, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, resume=resume,
                        log=stderr_log(quiet, as_json))
    if as_json:
        echo_json({"out": str(r.out), "pairs": r.pairs, "seconds": r.seconds, "history": r.history})
        return
    h = r.history
    click.echo(f"loss {h[0]['loss']:.3f} -> {h[-1]['loss']:.3f} on {r.pairs} pairs ({r.seconds:.0f} s); wrote {out}")


@flava.command("vqa")
@model_option("pretrained FLAVA folder (default: train from scratch, the 'VQA alone' baseline)", required=False)
@data_option("VQA scenes", default="builtin:shapes-vqa")
@out_option("model folder to write")
@click.option("--epochs", default=12, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=5e-4, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--train-size", default=4000, show_default=True, type=click.IntRange(min=1), help="training scenes")
@seed_option()
@resume_option
@json_option
@quiet_option
def vqa(model_dir: str | None, data: str, out: str, epochs: int, batch_size: int, lr: float, train_size: int, seed: int,
        resume: bool, as_json: bool, quiet: bool) -> None:
    """Fine-tune a VQA head on [CLS_M] with the whole model; the best validation epoch is kept."""
    from polymodal.recipes import flava as recipe

    r = recipe.vqa(out, model_dir=model_dir, data=data, epochs=epochs, batch_size=batch_size, lr=lr,
                   sizes={"train": train_size}, seed=seed, resume=resume, log=stderr_log(quiet, as_json))
    if as_json:
        echo_json({"out": str(r.out), "best_epoch": r.best_epoch, "val_accuracy": r.val_accuracy,
                   "test_accuracy": r.test_accuracy, "seconds": r.seconds})
        return
    click.echo(f"best epoch {r.best_epoch}: val accuracy {r.val_accuracy:.4f}, test accuracy {r.test_accuracy:.4f} "
               f"({r.seconds:.0f} s); wrote {out}")


COMMANDS = [flava]
