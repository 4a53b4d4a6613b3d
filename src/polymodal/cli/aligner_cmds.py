"""CLI commands of the aligner: train, eval, demo, zeroshot, embed."""

from __future__ import annotations

import json
from pathlib import Path

import click

from polymodal.cli.presets import DEMO_MODEL, DEMO_TRAIN


def _print_table(metrics: dict, baselines: dict) -> None:
    from polymodal.eval.report import format_metrics_table

    click.echo(format_metrics_table(metrics, baselines))


def _run(data, out, model_cfg, train_cfg, *, resume, strict, cache, as_json) -> None:
    from polymodal.train.aligner_run import train_aligner
    from polymodal.train.ddp import distributed_session, is_main

    # Under torchrun: one process group for the run; rank 0 alone prints and writes the run folder.
    with distributed_session():
        r = train_aligner(data, out, model_config=model_cfg, train_config=train_cfg, resume=resume, strict=strict,
                          cache_dir="default" if cache else None, progress=not as_json)
        main_process = is_main()
    if not main_process:
        return
    if as_json:
        click.echo(json.dumps(json.loads((Path(out) / "metrics.json").read_text()), indent=2))
        return
    _print_table(r.metrics, r.baselines)
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
@click.option("--resume", is_flag=True, help="continue from OUT/checkpoint (any number of processes)")
@click.option("--strict", is_flag=True, help="stop at the first bad record instead of skipping it")
@click.option("--no-cache", is_flag=True, help="do not read or write the feature cache")
@click.option("--json", "as_json", is_flag=True, help="print metrics.json instead of a table")
def train(data, out, preset, unlock, unlock_text, epochs, batch_size, lr, views, image_size, seed, accum_steps, local_loss,
          refit, resume, strict, no_cache, as_json):
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
    _run(data, out, model_cfg, train_cfg, resume=resume, strict=strict, cache=not no_cache, as_json=as_json)


@click.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--resume", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def demo(out, resume, as_json):
    """The main job: train on the embedded OpenMoji data, evaluate on its test split, write a report."""
    _run("builtin:openmoji", out, DEMO_MODEL, DEMO_TRAIN, resume=resume, strict=False, cache=True, as_json=as_json)


@click.command("eval")
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--data", default="builtin:openmoji", show_default=True)
@click.option("--split", default="test", show_default=True, type=click.Choice(["train", "val", "test"]))
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(model_dir, data, split, as_json):
    """Evaluate a model: retrieval R@k, zero-shot per label kind, linear probe (with train/val)."""
    from polymodal.data.pairs import load_pairs
    from polymodal.eval.aligner_eval import evaluate_aligner
    from polymodal.models.io import load
    from polymodal.train.checkpoint import read_folder_config
    from polymodal.train.feature_cache import FeatureCache, default_cache_dir

    model = load(model_dir)
    trained = read_folder_config(Path(model_dir)).get("train", {})
    if split != "test" and trained.get("refit"):
        click.echo(f"note: {model_dir} was refit on the train and val splits; its {split} figures are not held out",
                   err=True)
    cache = FeatureCache(default_cache_dir())
    test = load_pairs(data, split)
    train_ps = load_pairs(data, "train") if split == "test" else None
    val_ps = load_pairs(data, "val") if split == "test" else None
    ev = evaluate_aligner(model, test, cache=cache, train=train_ps, val=val_ps,
                          support=getattr(model, "support", None), progress=not as_json)
    if as_json:
        click.echo(json.dumps({"split": split, "size": len(test), "metrics": ev.metrics, "baselines": ev.baselines,
                               "bad_records": [b.to_dict() for b in test.bad]}, indent=2))
    else:
        _print_table(ev.metrics, ev.baselines)


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--labels", required=True, help='comma-separated label texts, e.g. "cat,dog"')
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--support/--no-support", default=True, show_default=True,
              help="mix each label with the images of its nearest training captions (the model's support set)")
@click.option("--json", "as_json", is_flag=True)
def zeroshot(model_dir, labels, images, support, as_json):
    """Zero-shot labels for images from label text."""
    from polymodal.data.images import load_image
    from polymodal.models.io import load

    names = [s.strip() for s in labels.split(",") if s.strip()]
    model = load(model_dir)
    pil = [load_image(p) for p in images]
    results = model.zeroshot(pil, names, support=support)
    if as_json:
        click.echo(json.dumps([{"image": p, "labels": [{"label": lb, "score": s} for lb, s in r]}
                               for p, r in zip(images, results)], indent=2))
        return
    for p, r in zip(images, results):
        click.echo(f"{p}: " + ", ".join(f"{lb} {s:.3f}" for lb, s in r[:5]))


@click.command()
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--images", "images_mode", is_flag=True, help="embed the image files (or folders) given as arguments")
@click.argument("images", nargs=-1, type=click.Path())
@click.option("--texts", type=click.Path(exists=True, dir_okay=False), help="a file with one text per line")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="output .npy, (N, D) float32")
def embed(model_dir, images_mode, images, texts, out):
    """Embed images or texts: an (N, D) float32 array of L2-normalised rows in input order.

    polymodal embed --model DIR --images a.png b.png photos/ --out img.npy
    polymodal embed --model DIR --texts captions.txt --out txt.npy

    Under torchrun each process embeds a contiguous share and rank 0 writes the rows in input order.
    """
    if images_mode and not images:
        raise click.UsageError("--images needs at least one image file or folder")
    if images and not images_mode:
        raise click.UsageError("image paths given without --images")
    from polymodal.embed import image_paths
    from polymodal.models.io import load

    if bool(images) == bool(texts):
        raise click.UsageError("give exactly one of --images or --texts")
    from polymodal.train.ddp import distributed_session, is_main, rank_slices

    with distributed_session() as env:
        model = load(model_dir)
        items: list = Path(texts).read_text(encoding="utf-8").splitlines() if texts else image_paths(images)
        share = items[rank_slices(len(items), env.world_size)[env.rank]]
        arr = _embed_share(model, share, texts=bool(texts), progress=is_main())
        main_process = is_main()
    if not main_process:
        return
    import numpy as np

    np.save(out, arr)
    click.echo(f"wrote {out}: {arr.shape[0]} x {arr.shape[1]} float32")


def _embed_share(model, share: list, *, texts: bool, progress: bool):
    """Embed this process's share; under torchrun, rank 0 gets every share concatenated in rank order."""
    import numpy as np

    from polymodal.embed import embed_images, embed_texts
    from polymodal.train.ddp import gather_to_main

    arr = embed_texts(model, share, progress=progress) if texts else embed_images(model, share, progress=progress)
    parts = gather_to_main(arr)
    return None if parts is None else np.concatenate(list(map(np.asarray, parts))).astype(np.float32)


@click.command()
def presets():
    """List the model presets."""
    from polymodal.models.build import PRESET_DIR, preset_names

    for name in preset_names():
        click.echo(f"{name:24s} {PRESET_DIR / (name + '.json')}")


COMMANDS = [train, demo, eval_cmd, zeroshot, embed, presets]
