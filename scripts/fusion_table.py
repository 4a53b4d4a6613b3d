"""Train every avdigits model (two unimodal baselines, every fusion) and the shapes VQA models, evaluate
them on the test splits (with each modality missing), run the robustness report, and print the
markdown tables of docs/fusion.md.

    python scripts/fusion_table.py --out runs/fusion [--device cuda] [--only avdigits|vqa] [--skip-robustness]
        [--threads 1] [--vqa-epochs N] [--vqa-train N]

shapes VQA uses the recipe of ``polymodal fuse train --data builtin:shapes-vqa`` (classifier_fit.RECIPES)
and reports accuracy per question type on validation and test.

The robustness report is the same as ``polymodal robustness --model runs/fusion/avdigits/<name> ... --out
runs/fusion/avdigits/robustness`` on the saved models (``--skip-robustness`` leaves it to that command).

Model selection uses the validation splits only; test accuracy is measured once per saved model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from polymodal.data.shapes import QUESTION_TYPES
from polymodal.eval.robustness import missing_modality_accuracy, robustness_run
from polymodal.models.build import load_preset
from polymodal.train.classifier_fit import (
    RECIPES,
    encode_labels,
    fit_classifier,
    load_data,
    predict,
    prepare,
    save_classifier,
)

AV_MODELS = ("image", "audio", "early", "late", "tensor", "low_rank", "gated", "cross_modal")
VQA_MODELS = ("vqa-cross", "vqa-relation", "vqa-question", "vqa-image")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def avdigits(out: Path, device: str, epochs: int, names: list[str], robustness: bool, seed: int = 0) -> list[str]:
    data = load_data("builtin:avdigits")
    test = data.splits["test"]
    rows = []
    for name in names:
        cfg = load_preset(f"fusion-{name}")
        r = fit_classifier(cfg, data, epochs=epochs, device=device, seed=seed, log=lambda s, n=name: log(f"{n} {s}"))
        save_classifier(r, out / "avdigits" / name, data=data.name, extra={"preset": f"fusion-{name}"})
        labels = encode_labels(test, model_labels=r.model.config.labels, label_names=data.label_names, split="test")
        acc = missing_modality_accuracy(r.model.to(device), test, labels)
        val = r.history[r.best_epoch]
        rows.append((name, acc, val, r.seconds))
        log(f"avdigits {name}: {json.dumps(acc)} val {json.dumps(val)} ({r.seconds:.0f} s)")
    lines = ["| model | both | image only | audio only | val: both / image only / audio only | train s |", "|---|---|---|---|---|---|"]
    for name, acc, val, secs in rows:
        if name in ("image", "audio"):
            both, img, aud = "-", (f"{acc['all']:.3f}" if name == "image" else "-"), (f"{acc['all']:.3f}" if name == "audio" else "-")
            label, vals = f"unimodal {name}", f"{val['val_accuracy']:.3f}"
        else:
            both, img, aud = f"{acc['all']:.3f}", f"{acc['missing:audio']:.3f}", f"{acc['missing:image']:.3f}"
            label = f"{name} fusion"
            vals = f"{val['val_accuracy']:.3f}"
            if "val_accuracy_missing:audio" in val:
                vals += f" / {val['val_accuracy_missing:audio']:.3f} / {val['val_accuracy_missing:image']:.3f}"
        lines.append(f"| {label} | {both} | {img} | {aud} | {vals} | {secs:.0f} |")
        (out / "avdigits_table.md").write_text("\n".join(lines) + "\n")
    if robustness:
        robustness_run([out / "avdigits" / n for n in names], out / "avdigits" / "robustness", data=data.name)
    return lines


def per_type_accuracy(model: torch.nn.Module, records: list, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy over all records and per question type (``extra["question_type"]``)."""
    pred = predict(model, prepare(model.config, records))
    right = pred == labels
    out = {"all": float(right.float().mean())}
    types = [r.extra["question_type"] for r in records]
    for q in QUESTION_TYPES:
        idx = torch.tensor([i for i, t in enumerate(types) if t == q], dtype=torch.int64)
        out[q] = float(right[idx].float().mean()) if len(idx) else float("nan")
    return out


def vqa(out: Path, device: str, epochs: int | None, train_size: int | None, names: list[str], seed: int = 0,
        mix: dict[str, float] | None = None) -> list[str]:
    """Train vqa-cross and the two baselines with the shapes-vqa recipe; one table row per model and split.
    ``mix`` changes the weights of the named question types in the training split's mix."""
    recipe = RECIPES["builtin:shapes-vqa"]
    sizes = {**(recipe.vqa_sizes or {}), **({"train": train_size} if train_size else {})}
    epochs = epochs or recipe.epochs
    t0 = time.perf_counter()
    data = load_data("builtin:shapes-vqa", vqa_sizes=sizes, vqa_train_mix={**(recipe.vqa_train_mix or {}), **(mix or {})})
    log(f"shapes-vqa {({s: len(v) for s, v in data.splits.items()})} generated in {time.perf_counter() - t0:.0f} s")
    head = " | ".join(QUESTION_TYPES)
    lines = [f"| model | split | accuracy | {head} | best epoch | train s |", "|---|---|---|" + "---|" * len(QUESTION_TYPES) + "---|---|"]
    found: dict[str, dict[str, object]] = {}  # model -> split -> per-type accuracy, also written as vqa_results.json
    for name in names:
        r = fit_classifier(load_preset(name), data, epochs=epochs, batch_size=recipe.batch_size, lr=recipe.lr, device=device,
                           seed=seed, log=lambda s, n=name: log(f"{n} {s}"))  # fmt: skip
        save_classifier(r, out / "vqa" / name, data=data.name, extra={"preset": name})
        model = r.model.to(device)
        for split in ("val", "test"):
            records = data.splits[split]
            labels = encode_labels(records, model_labels=model.config.labels, label_names=data.label_names, split=split)
            acc = per_type_accuracy(model, records, labels)
            found.setdefault(name, {})[split] = acc
            log(f"vqa {name} {split}: {json.dumps(acc)} (best epoch {r.best_epoch}, {r.seconds:.0f} s)")
            cells = " | ".join(f"{acc[q]:.3f}" for q in QUESTION_TYPES)
            lines.append(f"| {name} | {split} | {acc['all']:.3f} | {cells} | {r.best_epoch + 1}/{epochs} | {r.seconds:.0f} |")
        (out / f"vqa_table{'' if list(names) == list(VQA_MODELS) else '-' + '-'.join(names)}.md").write_text("\n".join(lines) + "\n")
        found[name].update(best_epoch=r.best_epoch + 1, train_seconds=r.seconds)
        (out / "vqa_results.json").write_text(json.dumps({"seed": seed, "epochs": epochs, "models": found}, indent=1) + "\n")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("runs/fusion"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--only", choices=("avdigits", "vqa"), default=None)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--models", nargs="+", choices=AV_MODELS, default=list(AV_MODELS), help="avdigits models to train")
    p.add_argument("--skip-robustness", action="store_true", help="no robustness report (run `polymodal robustness` instead)")
    p.add_argument("--vqa-epochs", type=int, default=None, help="default: the shapes-vqa recipe's (classifier_fit.RECIPES)")
    p.add_argument("--vqa-train", type=int, default=None, help="training scenes; default: the recipe's")
    p.add_argument("--vqa-models", nargs="+", choices=VQA_MODELS, default=list(VQA_MODELS), help="shapes VQA models to train")
    p.add_argument("--vqa-mix", nargs="+", default=[], metavar="TYPE=WEIGHT",
                   help="training-mix weight of a question type, over the recipe's (e.g. relation_yes_no=3)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (1 for the CPU tables)")
    p.add_argument("--seed", type=int, default=0, help="training seed (audio accuracy on unseen speakers moves 10-20 points with it)")
    a = p.parse_args()
    mix = {}
    for item in a.vqa_mix:
        qtype, _, weight = item.partition("=")
        if qtype not in QUESTION_TYPES or not weight:
            p.error(f"--vqa-mix wants TYPE=WEIGHT with TYPE one of {QUESTION_TYPES}, got {item!r}")
        mix[qtype] = float(weight)
    if a.threads:
        torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    if a.only in (None, "avdigits"):
        print("\n".join(avdigits(a.out, a.device, a.epochs, a.models, not a.skip_robustness, a.seed)))
    if a.only in (None, "vqa"):
        print("\n".join(vqa(a.out, a.device, a.vqa_epochs, a.vqa_train, a.vqa_models, a.seed, mix)))


if __name__ == "__main__":
    main()
