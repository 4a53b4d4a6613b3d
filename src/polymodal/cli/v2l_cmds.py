"""CLI for vision to language and back: ``polymodal caption [train]`` and ``polymodal generate``.

``polymodal caption train --out DIR`` trains a captioner on OpenMoji; ``polymodal caption --model DIR
IMAGE...`` captions images; ``polymodal generate --model DIR "a red heart" --out grid.png`` draws images.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("train")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="model folder to write")
@click.option("--epochs", default=60, show_default=True, type=click.IntRange(min=1),
              help="60 was best of 15/30/60 on val CIDEr-D (docs/vision-language.md)")
@click.option("--dim", default=192, show_default=True, type=click.IntRange(min=8))
@click.option("--depth", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--image-size", default=224, show_default=True, type=click.IntRange(min=32))
@click.option("--label-smoothing", default=0.1, show_default=True, type=float)
@click.option("--seed", default=0, show_default=True, type=int)
def caption_train(out: str, epochs: int, dim: int, depth: int, image_size: int, label_smoothing: float, seed: int) -> None:
    """Train a captioner on the OpenMoji train split (frozen EfficientNet grid, transformer decoder)."""
    from polymodal.caption import CaptionTrainConfig, extract_grids, train_captioner
    from polymodal.data.openmoji import load_openmoji
    from polymodal.models.io import save

    records = load_openmoji("train")
    grids = extract_grids([r.image for r in records], image_size=image_size)
    cfg = CaptionTrainConfig(epochs=epochs, label_smoothing=label_smoothing, seed=seed,
                             model={"dim": dim, "depth": depth, "image_size": image_size})
    result = train_captioner(grids, [r.text or "" for r in records], cfg)
    save(result.model, out, extra={"history": result.history})
    click.echo(f"loss {result.history[0]['loss']:.3f} -> {result.history[-1]['loss']:.3f}; wrote {out}")


@click.command("caption", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": True})
@click.option("--model", "model_dir", type=click.Path(file_okay=False), help="captioner folder")
@click.option("--beam", default=1, show_default=True, type=click.IntRange(min=1),
              help="beam size (1 = greedy, best on val CIDEr-D for trained models)")
@click.option("--json", "as_json", is_flag=True, help="print JSON lines")
@click.argument("images", nargs=-1, type=click.UNPROCESSED)
def caption(model_dir: str | None, beam: int, as_json: bool, images: tuple[str, ...]) -> None:
    """Caption IMAGE files with a trained captioner; `polymodal caption train --out DIR` trains one."""
    if images and images[0] == "train":
        caption_train.main(list(images[1:]), prog_name="polymodal caption train", standalone_mode=False)
        return
    if model_dir is None or not images:
        raise click.UsageError("need --model DIR and at least one IMAGE (or: polymodal caption train --out DIR)")
    from polymodal.caption import Captioner, beam_search, extract_grids
    from polymodal.data.images import load_image
    from polymodal.models.io import load

    model = load(model_dir, Captioner, what="polymodal caption")
    pil = [load_image(Path(p)) for p in images]
    grids = extract_grids(pil, image_size=model.config.image_size)
    out = beam_search(model, grids, beam_size=beam, no_repeat_ngram_size=2)
    for path, text, score in zip(images, out.texts, out.scores, strict=True):
        click.echo(json.dumps({"image": path, "caption": text, "score": score}) if as_json else f"{path}\t{text}")


@click.command("generate")
@click.argument("prompts", nargs=-1, required=True)
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), help="generator folder")
@click.option("--out", default="grid.png", show_default=True, type=click.Path(dir_okay=False), help="PNG grid")
@click.option("--num", default=4, show_default=True, type=click.IntRange(min=1), help="images per prompt")
@click.option("--guidance", default=2.0, show_default=True, type=float, help="classifier-free guidance weight")
@click.option("--steps", default=20, show_default=True, type=click.IntRange(min=1), help="Euler steps")
@click.option("--seed", default=0, show_default=True, type=int)
def generate(prompts: tuple[str, ...], model_dir: str, out: str, num: int, guidance: float, steps: int, seed: int) -> None:
    """Draw NUM images per PROMPT with a text-to-image model; one row per prompt in --out."""
    import torch
    from PIL import Image

    from polymodal.generate import FlowUNet, sample_images, to_pil
    from polymodal.models.io import load
    from polymodal.towers.minilm import MiniLMTextTower

    model = load(model_dir, FlowUNet, what="polymodal generate")
    cond = None
    if model.config.conditional:
        cond = MiniLMTextTower.pretrained().encode(list(prompts), normalize=True).repeat_interleave(num, 0)
    gen = torch.Generator().manual_seed(seed)
    images = to_pil(sample_images(model, cond, num=num * len(prompts), steps=steps, guidance=guidance, generator=gen))
    s = model.config.image_size + 2
    sheet = Image.new("RGB", (num * s, len(prompts) * s), "white")
    for i, im in enumerate(images):
        sheet.paste(im, ((i % num) * s + 1, (i // num) * s + 1))
    sheet = sheet.resize((sheet.width * 3, sheet.height * 3), Image.Resampling.NEAREST)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    click.echo(f"wrote {out} ({len(prompts)} prompts x {num})")


COMMANDS = [caption, generate]
