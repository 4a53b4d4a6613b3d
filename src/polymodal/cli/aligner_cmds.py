"""CLI commands of the aligner: train, eval, demo, zeroshot, embed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, cast

import click

from polymodal.cli.presets import (
    DEMO_ALSO_TRAIN_ON,
    DEMO_DATA,
    DEMO_EVAL_SETS,
    DEMO_MODEL,
    DEMO_TRAIN,
    DEMO_TRANSFER,
)

if TYPE_CHECKING:
    from polymodal.models.protocol import DualEncoder


def _print_table(metrics: dict, baselines: dict) -> None:
    from polymodal.eval.report import format_metrics_table

    click.echo(format_metrics_table(metrics, baselines))


def _run(data, out, model_cfg, train_cfg, *, resume, strict, cache, as_json, **recipe) -> None:
    from polymodal.core.distributed import distributed_session, is_main
    from polymodal.recipes.aligner import train_aligner

    # Under torchrun: one process group for the run; rank 0 alone prints and writes the run folder.
    with distributed_session():
        r = train_aligner(data, out, model_config=model_cfg, train_config=train_cfg, resume=resume, strict=strict,
                          cache_dir="default" if cache else None, progress=not as_json, **recipe)
        main_process = is_main()
    if not main_process:
        return
    if as_json:
        click.echo(json.dumps(json.loads((Path(out) / "metrics.json").read_text()), indent=2))
        return
    _print_table(r.metrics, r.baselines)
    from polymodal.eval.eval_sets import headline

    for source, block in r.eval_sets.items():
        click.echo(f"\n{source} ({block['split']} split, {block['size']} items)")
        _print_table(*headline(block))
    if r.bad:
        click.echo(f"\nskipped {len(r.bad)} bad record(s):")
        for b in r.bad[:20]:
            click.echo(f"  {b}")
        if len(r.bad) > 20:
            click.echo(f"  ... and {len(r.bad) - 20} more (see {out}/metrics.json)")
    click.echo(f"\nrun folder: {out}  (report: {out}/report.html)  {r.seconds:.0f} s")


@click.command()
@click.option("--data", default="builtin:openmoji", show_default=True, help="builtin:openmoji or a .csv/.jsonl/.parquet manifest")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="run folder to write")
@click.option("--preset", default=None, help="model preset name or JSON file (see `polymodal presets`); default: the aligner")
@click.option("--unlock", default=DEMO_MODEL.unlock_image, show_default=True, help="train the last N image-tower blocks")
@click.option("--unlock-text", default=DEMO_MODEL.unlock_text, show_default=True, help="train the last N text-tower layers")
@click.option("--epochs", default=DEMO_TRAIN.epochs, show_default=True)
@click.option("--batch-size", default=DEMO_TRAIN.batch_size, show_default=True)
@click.option("--lr", default=DEMO_TRAIN.lr, show_default=True)
@click.option("--views", default=DEMO_TRAIN.image_views, show_default=True, help="augmented views per training image")
@click.option("--image-size", default=DEMO_MODEL.image_size, show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--accum-steps", default=1, show_default=True,
              help="micro-batches per process per step (less memory; the contrastive batch stays exact)")
@click.option("--local-loss/--full-loss", default=True, show_default=True,
              help="under torchrun: each process builds only its own logit rows (memory / world size)")
@click.option("--refit/--no-refit", default=DEMO_TRAIN.refit, show_default=True,
              help="after early stopping, retrain on train+val for the best epoch count and keep that model")
@click.option("--transfer/--no-transfer", default=True, show_default=True,
              help="mix in the ImageNet transfer for images far from the training data (locked image tower)")
@click.option("--resume", is_flag=True, help="continue from OUT/checkpoint (any number of processes)")
@click.option("--strict", is_flag=True, help="stop at the first bad record instead of skipping it")
@click.option("--no-cache", is_flag=True, help="do not read or write the feature cache")
@click.option("--json", "as_json", is_flag=True, help="print metrics.json instead of a table")
def train(data, out, preset, unlock, unlock_text, epochs, batch_size, lr, views, image_size, seed, accum_steps, local_loss,
          refit, transfer, resume, strict, no_cache, as_json):
    """Train an aligner (CLIP-style dual encoder on the pretrained towers) or a preset model.

    Runs as is on one process, or under torchrun on several (--batch-size is then the global batch):
    torchrun --nproc-per-node 2 -m polymodal train --out runs/x
    """
    from dataclasses import replace

    from polymodal.models.build import load_preset

    if preset:
        model_cfg = load_preset(preset)
    else:
        model_cfg = replace(DEMO_MODEL, unlock_image=unlock, unlock_text=unlock_text, image_size=image_size)
    train_cfg = replace(DEMO_TRAIN, epochs=epochs, batch_size=batch_size, lr=lr, image_views=views, seed=seed,
                        accum_steps=accum_steps, local_loss=local_loss, refit=refit)
    use_transfer = transfer and not preset and unlock == 0
    _run(data, out, model_cfg, train_cfg, resume=resume, strict=strict, cache=not no_cache, as_json=as_json,
         transfer=DEMO_TRANSFER if use_transfer else None)


@click.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--resume", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def demo(out, resume, as_json):
    """The main job: train the default model on the embedded emoji (OpenMoji, with the Twemoji and Noto
    drawings of its training emoji), evaluate once on OpenMoji's test split and on the photographs and
    other drawing styles, write a report."""
    _run(DEMO_DATA, out, DEMO_MODEL, DEMO_TRAIN, resume=resume, strict=False, cache=True, as_json=as_json,
         also_train_on=DEMO_ALSO_TRAIN_ON, transfer=DEMO_TRANSFER, eval_sets=DEMO_EVAL_SETS)


@click.command("eval")
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--data", default="builtin:openmoji", show_default=True)
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test", "all"]),
              help="which rows to score; a manifest's 'split' column assigns them, else a hash of the image path")
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(model_dir, data, split, as_json):
    """Evaluate a model: retrieval R@k, zero-shot per label kind, linear probe (with train/val)."""
    from polymodal.core.checkpoint import read_folder_config
    from polymodal.data.pairs import load_pairs
    from polymodal.eval.aligner_eval import evaluate_aligner
    from polymodal.models.io import load
    from polymodal.train.feature_cache import FeatureCache, default_cache_dir

    model = load(model_dir)
    refit = bool(read_folder_config(Path(model_dir)).get("train", {}).get("refit"))
    if split in ("train", "all") or (split == "val" and refit):
        trained_on = "the train and val splits" if refit else "the train split"
        click.echo(f"note: {model_dir} was trained on {trained_on}; its figures on {_rows(split)} are not held out",
                   err=True)
    sizes = _split_sizes(data)
    cache = FeatureCache(default_cache_dir())
    test = load_pairs(data, None if split == "all" else split)
    train_ps = load_pairs(data, "train") if split == "test" else None
    val_ps = load_pairs(data, "val") if split == "test" else None
    if train_ps is not None and len(train_ps) == 0:  # an evaluation-only set (photos): no probe, no majority
        train_ps = val_ps = None
    ev = evaluate_aligner(cast("DualEncoder", model), test, cache=cache, train=train_ps, val=val_ps,
                          support=getattr(model, "support", None), progress=not as_json)
    if as_json:
        click.echo(json.dumps({"split": split, "size": len(test), "metrics": ev.metrics, "baselines": ev.baselines,
                               "split_sizes": None if sizes is None else sizes.sizes,
                               "split_by": None if sizes is None else ("column" if sizes.by_column else "hash"),
                               "bad_records": [b.to_dict() for b in test.bad]}, indent=2))
        return
    # Which rows were scored, out of how many: a manifest without a split column is split by a hash.
    click.echo(f"{data}: scored {len(test)} pairs of {_rows(split)}"
               + ("" if sizes is None else f" ({sizes.describe()}; --split all scores every row)"))
    _print_table(ev.metrics, ev.baselines)
    _report_skipped(test.bad, "bad record(s)")


def _rows(split: str) -> str:
    return "every row" if split == "all" else f"the {split} split"


def _split_sizes(data: str):
    """A manifest's rows per split and what assigned them (None for a built-in set)."""
    from polymodal.data.pairs import split_sizes

    return None if data.startswith("builtin:") else split_sizes(data)


def _report_skipped(bad: list, what: str = "unreadable image(s)") -> None:
    """Skipped inputs on stderr, as `index build` reports them (stdout stays the result)."""
    if bad:
        click.echo(f"skipped {len(bad)} {what}:", err=True)
        for b in bad[:20]:
            click.echo(f"  {b}", err=True)
        if len(bad) > 20:
            click.echo(f"  ... and {len(bad) - 20} more", err=True)


STRICT_IMAGES = click.option("--strict", is_flag=True, help="stop at the first unreadable image instead of skipping it")


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--labels", required=True, help='comma-separated label texts, e.g. "cat,dog"')
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--support/--no-support", default=True, show_default=True,
              help="mix each label with the images of its nearest training captions (the model's support set)")
@STRICT_IMAGES
@click.option("--json", "as_json", is_flag=True)
def zeroshot(model_dir, labels, images, support, strict, as_json):
    """Zero-shot labels for images from label text; an unreadable image is skipped and named on stderr."""
    from polymodal.data.images import load_images
    from polymodal.errors import DataError
    from polymodal.models.io import load

    names = [s.strip() for s in labels.split(",") if s.strip()]
    loaded = load_images(images, strict=strict)
    if not loaded.images:
        raise DataError(images[0] if len(images) == 1 else None,
                        "no readable image: " + "; ".join(str(b) for b in loaded.bad[:3]))
    model = load(model_dir)
    results = model.zeroshot(loaded.images, names, support=support)
    kept = [images[i] for i in loaded.kept]
    if as_json:
        click.echo(json.dumps([{"image": p, "labels": [{"label": lb, "score": s} for lb, s in r]}
                               for p, r in zip(kept, results)], indent=2))
    else:
        for p, r in zip(kept, results):
            click.echo(f"{p}: " + ", ".join(f"{lb} {s:.3f}" for lb, s in r[:5]))
    _report_skipped(loaded.bad)


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--images", "images_mode", is_flag=True, help="embed the image files (or folders) given as arguments")
@click.argument("images", nargs=-1, type=click.Path())
@click.option("--texts", type=click.Path(exists=True, dir_okay=False), help="a file with one text per line")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="output .npy, (N, D) float32")
@STRICT_IMAGES
def embed(model_dir, images_mode, images, texts, out, strict):
    """Embed images or texts: an (N, D) float32 array of L2-normalised rows in input order.

    polymodal embed --model DIR --images a.png b.png photos/ --out img.npy
    polymodal embed --model DIR --texts captions.txt --out txt.npy

    Beside OUT, OUT.rows.json lists the input of each row (an image's path, or captions.txt:LINE) and the
    images skipped as unreadable. Under torchrun each process embeds a contiguous share and rank 0 writes
    the rows in input order.
    """
    if images_mode and not images:
        raise click.UsageError("--images needs at least one image file or folder")
    if images and not images_mode:
        raise click.UsageError("image paths given without --images")
    from polymodal.embed import image_paths, save_embeddings
    from polymodal.models.io import load

    if bool(images) == bool(texts):
        raise click.UsageError("give exactly one of --images or --texts")
    from polymodal.core.distributed import distributed_session, is_main, rank_slices

    npy = _output_file(out)  # before any work: a run must not end in "no such folder"
    with distributed_session() as env:
        model = load(model_dir)
        items: list = _text_lines(Path(texts)) if texts else image_paths(images)
        share = items[rank_slices(len(items), env.world_size)[env.rank]]
        emb = _embed_share(model, share, texts=bool(texts), progress=is_main(), strict=strict)
        main_process = is_main()
    if not main_process or emb is None:
        return
    rows = save_embeddings(npy, emb)
    click.echo(f"wrote {npy}: {emb.vectors.shape[0]} x {emb.vectors.shape[1]} float32 (rows: {rows})")
    _report_skipped(emb.bad)


def _output_file(out: str) -> Path:
    """The .npy that ``np.save`` will write for ``out``, its folder created and checked writable."""
    import os

    from polymodal.errors import DataError

    npy = Path(out if out.endswith(".npy") else out + ".npy")  # np.save adds the suffix itself
    try:
        npy.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(npy.parent, f"cannot create the output folder ({e.strerror or e})") from None
    if not os.access(npy.parent, os.W_OK):
        raise DataError(npy.parent, "the output folder is not writable")
    return npy


def _text_lines(path: Path) -> list[tuple[str, str]]:
    """(``"<file>:<line>"``, text) per line of a texts file."""
    return [(f"{path}:{n}", t) for n, t in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)]


def _embed_share(model, share: list, *, texts: bool, progress: bool, strict: bool):
    """Embed this process's share; under torchrun, rank 0 gets every share's rows in rank order (others: None)."""
    import numpy as np

    from polymodal.core.distributed import gather_to_main
    from polymodal.embed import Embeddings, embed_images, embed_texts

    if texts:
        emb = Embeddings(embed_texts(model, [t for _, t in share], progress=progress), [r for r, _ in share])
    else:
        emb = embed_images(model, share, progress=progress, strict=strict)
    gathered = gather_to_main(emb)
    if gathered is None:
        return None
    parts = [p for p in gathered if isinstance(p, Embeddings)]
    return Embeddings(np.concatenate([np.asarray(p.vectors) for p in parts]).astype(np.float32),
                      [r for p in parts for r in p.rows], [b for p in parts for b in p.bad])


@click.command()
def presets():
    """List the model presets."""
    from polymodal.models.build import PRESET_DIR, preset_names

    for name in preset_names():
        click.echo(f"{name:24s} {PRESET_DIR / (name + '.json')}")


COMMANDS = [train, demo, eval_cmd, zeroshot, embed, presets]
