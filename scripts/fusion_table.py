"""Train every avdigits model (two unimodal baselines, every fusion) and the shapes VQA models, evaluate
them on the test splits (with each modality missing), run the robustness report, and print the
markdown tables of docs/fusion.md.

    python scripts/fusion_table.py --out runs/fusion [--device cuda] [--only avdigits|vqa] [--skip-robustness]

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

from polymodal.eval.robustness import missing_modality_accuracy, robustness_run
from polymodal.models.build import load_preset
from polymodal.train.classifier_fit import encode_labels, fit_classifier, load_data, save_classifier

AV_MODELS = ("image", "audio", "early", "late", "tensor", "low_rank", "gated", "cross_modal")
VQA_MODELS = ("vqa-cross", "vqa-question", "vqa-image")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def avdigits(out: Path, device: str, epochs: int, names: list[str], robustness: bool) -> list[str]:
    data = load_data("builtin:avdigits")
    test = data.splits["test"]
    rows = []
    for name in names:
        cfg = load_preset(f"fusion-{name}")
        r = fit_classifier(cfg, data, epochs=epochs, device=device, seed=0, log=lambda s, n=name: log(f"{n} {s}"))
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


def vqa(out: Path, device: str, epochs: int, train_size: int) -> list[str]:
    t0 = time.perf_counter()
    data = load_data("builtin:shapes-vqa", vqa_sizes={"train": train_size})
    log(f"shapes-vqa generated in {time.perf_counter() - t0:.0f} s")
    test = data.splits["test"]
    lines = ["| model | test accuracy | val accuracy | train s |", "|---|---|---|---|"]
    for name in VQA_MODELS:
        r = fit_classifier(load_preset(name), data, epochs=epochs, batch_size=128, lr=1e-3, device=device, seed=0,
                           log=lambda s, n=name: log(f"{n} {s}"))  # fmt: skip
        save_classifier(r, out / "vqa" / name, data=data.name, extra={"preset": name})
        labels = encode_labels(test, model_labels=r.model.config.labels, label_names=data.label_names, split="test")
        acc = missing_modality_accuracy(r.model.to(device), test, labels)
        log(f"vqa {name}: {json.dumps(acc)} val {r.val_accuracy:.4f} ({r.seconds:.0f} s)")
        lines.append(f"| {name} | {acc['all']:.3f} | {r.val_accuracy:.3f} | {r.seconds:.0f} |")
        (out / "vqa_table.md").write_text("\n".join(lines) + "\n")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("runs/fusion"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--only", choices=("avdigits", "vqa"), default=None)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--models", nargs="+", choices=AV_MODELS, default=list(AV_MODELS), help="avdigits models to train")
    p.add_argument("--skip-robustness", action="store_true", help="no robustness report (run `polymodal robustness` instead)")
    p.add_argument("--vqa-epochs", type=int, default=40)
    p.add_argument("--vqa-train", type=int, default=10000)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    if a.only in (None, "avdigits"):
        print("\n".join(avdigits(a.out, a.device, a.epochs, a.models, not a.skip_robustness)))
    if a.only in (None, "vqa"):
        print("\n".join(vqa(a.out, a.device, a.vqa_epochs, a.vqa_train)))


if __name__ == "__main__":
    main()
