"""Ablation of the FLAVA-style objectives (the numbers of docs/flava.md).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/vision_language/flava_ablation.py --out runs/flava-ablation

Pretrains the small FLAVA-style model (:mod:`polymodal.flava`) on OpenMoji train (32 px images; captions from
:mod:`polymodal.data.captions`: annotation, framed annotation and annotation + tags, never the group or
subgroup names) with all five objectives, then with each one removed in turn (weight 0): six runs. Per run:

* zero-shot OpenMoji group top-1 on the test split, from the unimodal contrastive embeddings and the group
  label texts of :mod:`polymodal.data.openmoji_labels` in the emoji templates (validation top-1 is logged
  per pretraining epoch);
* image-text matching accuracy of the ITM head (:func:`polymodal.flava.evaluate_itm`) on the validation and
  test pairs (each image with its plain annotation caption), once with hard negatives mined from the
  contrastive similarities within batches of 64 and once with random negatives (runs without the
  contrastive loss mine "hard" negatives from untrained projections, so read their hard column with care);
* shapes VQA: a head on [CLS_M], the whole model fine-tuned on generated training scenes, the epoch of best
  validation accuracy kept, accuracy on held-out test scenes (``--skip-vqa`` leaves it out).

``--pairs builtin:shapes`` pretrains on generated scenes and their captions instead ("a red circle left of a
blue square", 16,000 training scenes, :data:`polymodal.data.pairs.SHAPES_PAIR_SIZES`) and measures ITM on
held-out scenes; zero-shot (OpenMoji groups) is then left out. There ITM can be learnt as a rule (which
shapes, colours and places the caption names), where on OpenMoji's 1,500 training emoji it is memorised.

Plus the same architecture trained on VQA alone (random initialisation, same fine-tuning recipe). All sizes
and epochs are flags; the defaults were chosen to finish in about 30-40 minutes on one core, and every
choice looks at validation splits only. Results go to ``OUT/results.json`` (rewritten after every run, so
a killed run keeps what finished) and ``OUT/table.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import torch

import polymodal
from polymodal.data.openmoji import OPENMOJI_GROUPS
from polymodal.data.openmoji_labels import group_text
from polymodal.data.pairs import load_pairs
from polymodal.data.shapes import ANSWERS, ShapesConfig, load_shapes
from polymodal.flava import (
    FlavaConfig,
    FlavaForVqa,
    FlavaModel,
    PretrainConfig,
    VqaConfig,
    build_vocabulary,
    evaluate_itm,
    evaluate_vqa,
    finetune_vqa,
    pixels,
    pretrain,
    tokenize,
    vqa_tensors,
    zeroshot_classify_images,
)
from polymodal.models.prompts import EMOJI_TEMPLATES

PAIRS: tuple[str, ...] = ("builtin:openmoji", "builtin:shapes")
RUNS: dict[str, dict[str, float]] = {
    "all": {},
    "no-mlm": {"mlm": 0.0},
    "no-mim": {"mim": 0.0},
    "no-mmm": {"mmm": 0.0},
    "no-itm": {"itm": 0.0},
    "no-contrastive": {"contrastive": 0.0},
    "vqa-alone": {},  # no pretraining at all
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/flava-ablation"))
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {list(RUNS)}")
    p.add_argument("--pairs", choices=PAIRS, default="builtin:openmoji", help="image-text pairs to pretrain on and measure ITM on")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--patch-size", type=int, default=8)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=2, help="depth of each of the three encoders")
    p.add_argument("--max-text-length", type=int, default=16)
    p.add_argument("--pretrain-epochs", type=int, default=10)
    p.add_argument("--pretrain-batch", type=int, default=64)
    p.add_argument("--pretrain-lr", type=float, default=1e-3)
    p.add_argument("--vqa-train", type=int, default=4000)
    p.add_argument("--vqa-val", type=int, default=500)
    p.add_argument("--vqa-test", type=int, default=1000)
    p.add_argument("--vqa-epochs", type=int, default=12)
    p.add_argument("--vqa-batch", type=int, default=64)
    p.add_argument("--vqa-lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-vqa", action="store_true", help="pretraining metrics only (zero-shot and ITM)")
    p.add_argument(
        "--aggregate", type=Path, nargs="+", metavar="OUT",
        help="instead of training: mean ± standard error over the results.json of these output folders (seeds)",
    )  # fmt: skip
    p.add_argument("--save-models", action="store_true", help="write every pretrained and VQA model folder")
    return p.parse_args()


METRICS: tuple[str, ...] = (
    "zeroshot_test_top1", "zeroshot_val_top1", "itm_test_hard", "itm_test_random", "itm_val_hard",
    "itm_val_random", "vqa_test_acc",
)  # fmt: skip


def aggregate(outs: list[Path]) -> str:
    """A markdown table of mean ± standard error (``s / sqrt(n)``) per run and metric over the folders."""
    rows: dict[str, dict[str, list[float]]] = {}
    for out in outs:
        for name, row in json.loads((out / "results.json").read_text())["runs"].items():
            for key in METRICS:
                if row.get(key) is not None:
                    rows.setdefault(name, {}).setdefault(key, []).append(float(row[key]))
    lines = ["| run | seeds | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for name, metrics in rows.items():
        cells = []
        for key in METRICS:
            v = torch.tensor(metrics.get(key, []), dtype=torch.float64)
            se = float(v.std() / len(v) ** 0.5) if len(v) > 1 else float("nan")
            cells.append("-" if len(v) == 0 else f"{float(v.mean()):.3f} ± {se:.3f}")
        lines.append(f"| {name} | {max(len(m) for m in metrics.values())} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.aggregate:
        print(aggregate(args.aggregate))
        return
    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        raise SystemExit(f"unknown runs {unknown}; choose from {list(RUNS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    # ---- data
    pairs = {split: load_pairs(args.pairs, split) for split in ("train", "val", "test")}
    emoji = args.pairs == "builtin:openmoji"  # zero-shot group accuracy is OpenMoji's
    pair_pixels = {split: pixels(ps.images, size=args.image_size) for split, ps in pairs.items()}
    groups = {
        split: torch.tensor([OPENMOJI_GROUPS.index(g) for g in ps.labels["group"]])
        for split, ps in pairs.items() if emoji
    }  # fmt: skip
    shapes_cfg = ShapesConfig(image_size=args.image_size)
    vqa_records = {
        split: load_shapes(split, n=n, seed=args.seed, kind="vqa", config=shapes_cfg)
        for split, n in (("train", args.vqa_train), ("val", args.vqa_val), ("test", args.vqa_test))
    }
    # One vocabulary for every text the model trains on: the train captions and shapes train questions.
    # Label texts are not added: their words the captions never use read as <unk> (zero-shot is honest).
    tokenizer = build_vocabulary(
        [c for caps in pairs["train"].captions for c in caps] + [str(r.text) for r in vqa_records["train"]]
    )
    model_cfg = FlavaConfig(
        vocab_size=tokenizer.vocab_size, max_text_length=args.max_text_length, image_size=args.image_size,
        patch_size=args.patch_size, width=args.width, heads=args.heads, image_layers=args.layers,
        text_layers=args.layers, multimodal_layers=args.layers, embed_dim=64,
    )  # fmt: skip
    vqa = {
        split: vqa_tensors(recs, tokenizer, image_size=args.image_size, max_length=args.max_text_length)
        for split, recs in vqa_records.items()
    }
    prompts = {g: [t.replace("{c}", group_text(g)) for t in EMOJI_TEMPLATES] for g in OPENMOJI_GROUPS}
    setup: dict[str, Any] = {
        "pairs": args.pairs,
        "openmoji" if emoji else "shapes": {s: len(ps) for s, ps in pairs.items()},
        "vqa": {s: len(t) for s, t in vqa.items()},
        "vocab_size": tokenizer.vocab_size,
    }
    if emoji:
        unk = sorted({w for g in OPENMOJI_GROUPS for w in tokenizer.tokens(group_text(g)) if w not in tokenizer.stoi})
        test_counts = torch.bincount(groups["test"], minlength=len(OPENMOJI_GROUPS))
        setup["label_words_unknown_to_vocab"] = unk
        setup["zeroshot_majority_test_top1"] = float(test_counts.max()) / float(test_counts.sum())
        setup["zeroshot_chance"] = 1.0 / len(OPENMOJI_GROUPS)
    setup |= {
        "model": model_cfg.to_dict(),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "data_seconds": time.perf_counter() - start,
    }
    print(json.dumps(setup, indent=1), flush=True)

    def zeroshot(model: FlavaModel, split: str) -> float | None:
        if not emoji:
            return None
        metrics = zeroshot_classify_images(
            model,
            tokenizer,
            pair_pixels[split],
            groups[split],
            classnames=list(OPENMOJI_GROUPS),
            prompts=prompts,
        )
        return metrics.top1

    # ITM pairs: every held-out image with its plain annotation (the first caption variant).
    itm_tokens = {
        split: tokenize(tokenizer, [caps[0] for caps in pairs[split].captions], max_length=args.max_text_length)
        for split in ("val", "test")
    }

    def itm(model: FlavaModel, split: str) -> dict[str, float]:
        t = itm_tokens[split]
        return {
            f"itm_{split}_{neg}": evaluate_itm(
                model, pair_pixels[split], t.input_ids, t.attention_mask, negatives=neg, seed=args.seed
            ).accuracy
            for neg in ("hard", "random")
        }

    def log_epoch(run: str, epoch: int, model: FlavaModel) -> dict[str, float]:
        if emoji:
            val_top1 = zeroshot(model, "val")
            print(f"[{run}] pretrain epoch {epoch}: val zero-shot top-1 {val_top1:.3f}", flush=True)
            return {"val_zeroshot_top1": val_top1}
        hard = itm(model, "val")["itm_val_hard"]
        print(f"[{run}] pretrain epoch {epoch}: val ITM (hard negatives) {hard:.3f}", flush=True)
        return {"val_itm_hard": hard}

    vqa_cfg = VqaConfig(epochs=args.vqa_epochs, batch_size=args.vqa_batch, lr=args.vqa_lr, seed=args.seed)
    results: dict[str, Any] = {"setup": setup, "runs": {}}
    for name in names:
        t0, cpu0 = time.perf_counter(), time.process_time()
        torch.manual_seed(args.seed)
        flava = FlavaModel(model_cfg, tokenizer=tokenizer)
        row: dict[str, Any] = {}
        if name != "vqa-alone":
            pcfg = PretrainConfig(
                epochs=args.pretrain_epochs, batch_size=args.pretrain_batch, lr=args.pretrain_lr, seed=args.seed,
                **RUNS[name],
            )  # fmt: skip
            pre = pretrain(
                flava, pair_pixels["train"], pairs["train"].captions, tokenizer, pcfg,
                on_epoch=lambda epoch, m=flava, run=name: log_epoch(run, epoch, m),
            )  # fmt: skip
            for h in pre.history:
                print(f"[{name}] pretrain " + " ".join(f"{k}={v:.4g}" for k, v in h.items()), flush=True)
            row["pretrain_history"] = pre.history
            row["pretrain_seconds"] = pre.seconds
            row["weights"] = pcfg.weights
            row["zeroshot_val_top1"] = zeroshot(flava, "val")
            row["zeroshot_test_top1"] = zeroshot(flava, "test")
            row.update(itm(flava, "val"))
            row.update(itm(flava, "test"))
            print(f"[{name}] ITM " + " ".join(f"{k}={v:.3f}" for k, v in row.items() if k.startswith("itm_")))
            if args.save_models:
                polymodal.save(flava, args.out / name / "pretrained", extra={"weights": pcfg.weights})
        if args.skip_vqa:
            row["seconds"] = time.perf_counter() - t0
            row["cpu_seconds"] = time.process_time() - cpu0
            results["runs"][name] = row
            (args.out / "results.json").write_text(json.dumps(results, indent=1))
            continue
        vqa_model = FlavaForVqa(copy.deepcopy(flava), answers=ANSWERS)
        torch.manual_seed(args.seed + 1)  # the head's initialisation, the same for every run
        vqa_model.head.apply(lambda m: m.reset_parameters() if hasattr(m, "reset_parameters") else None)
        fit = finetune_vqa(vqa_model, vqa["train"], vqa["val"], vqa_cfg)
        for h in fit.history:
            print(f"[{name}] vqa " + " ".join(f"{k}={v:.4g}" for k, v in h.items()), flush=True)
        row["vqa_history"] = fit.history
        row["vqa_best_epoch"] = fit.best_epoch
        row["vqa_val_acc"] = fit.best_val_acc
        row["vqa_test_acc"] = evaluate_vqa(vqa_model, vqa["test"])
        row["vqa_seconds"] = fit.seconds
        row["seconds"] = time.perf_counter() - t0
        row["cpu_seconds"] = time.process_time() - cpu0
        if args.save_models:
            polymodal.save(vqa_model, args.out / name / "vqa")
        results["runs"][name] = row
        results["total_seconds"] = time.perf_counter() - start
        results["total_cpu_seconds"] = time.process_time()
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        zs = row.get("zeroshot_test_top1")
        print(
            f"== {name}: zero-shot test top-1 {'-' if zs is None else f'{zs:.3f}'}, VQA test {row['vqa_test_acc']:.3f} "
            f"(val {row['vqa_val_acc']:.3f}, epoch {fit.best_epoch}), {row['seconds']:.0f} s",
            flush=True,
        )

    lines = [
        "| run | zero-shot group top-1 (test) | zero-shot top-1 (val) | ITM test hard / random | ITM val hard / random "
        "| VQA test acc | VQA val acc (best epoch) | wall s | CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(row: dict[str, Any], key: str) -> str:
        return "-" if row.get(key) is None else f"{row[key]:.3f}"

    for name, row in results["runs"].items():
        vqa_val = "-" if "vqa_val_acc" not in row else f"{row['vqa_val_acc']:.3f} ({row['vqa_best_epoch']})"
        lines.append(
            f"| {name} | {fmt(row, 'zeroshot_test_top1')} | {fmt(row, 'zeroshot_val_top1')} | "
            f"{fmt(row, 'itm_test_hard')} / {fmt(row, 'itm_test_random')} | "
            f"{fmt(row, 'itm_val_hard')} / {fmt(row, 'itm_val_random')} | {fmt(row, 'vqa_test_acc')} | {vqa_val} | "
            f"{row['seconds']:.0f} | {row['cpu_seconds']:.0f} |"
        )
    lines.append(
        f"\nTotal wall time {time.perf_counter() - start:.0f} s, CPU time {time.process_time():.0f} s "
        f"(threads {args.threads})."
    )
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
