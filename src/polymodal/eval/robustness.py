"""Robustness of multimodal classifiers: imperfect and missing modalities (MultiBench; Liang et al. 2021,
"MultiBench: Multiscale Benchmarks for Multimodal Representation Learning", sec. 3 and appendix).

- Imperfections per modality, each with a level in [0, 1] (0 = clean, 1 = the worst this module
  applies): image gaussian noise, salt-and-pepper, blur, occlusion; audio white noise at falling SNR,
  dropout of chunks; text typos and word drops. They act on raw tensors/texts before featurising.
- Relative robustness: the area under the accuracy-vs-level curve over [0, 1] (trapezoid rule), so a
  model that keeps its accuracy scores its clean accuracy.
- Effective robustness: the same area after shifting the baseline's curve to the model's clean accuracy,
  ``AUC(f) - AUC(g + f(0) - g(0))``, against a late-fusion run the user trained (MultiBench compares with
  late fusion too, but from a hard-coded table; here the baseline is always a run on the same data).
- Missing modality: accuracy with every example's modality ``m`` marked absent.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from polymodal.data.record import Record
from polymodal.errors import ConfigError
from polymodal.models.classifier import MultimodalClassifier
from polymodal.models.classifier_inputs import RawInputs, featurize, raw_inputs
from polymodal.models.io import load
from polymodal.train.classifier_fit import accuracy, encode_labels, load_data

__all__ = [
    "IMPERFECTIONS",
    "RobustnessCurve",
    "RobustnessReport",
    "default_baseline",
    "effective_robustness",
    "missing_modality_accuracy",
    "relative_robustness",
    "robustness_report",
    "sweep",
]

LEVELS: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


# ---------------------------------------------------------------- imperfections (level in [0, 1])


def image_gaussian_noise(x: Tensor, level: float, g: torch.Generator) -> Tensor:
    """Add N(0, (level)^2) noise to [0, 1] pixels (std 1 at level 1: the digit is nearly buried)."""
    return (x + level * torch.randn(x.shape, generator=g)).clamp(0, 1)


def image_salt_pepper(x: Tensor, level: float, g: torch.Generator) -> Tensor:
    """Set a fraction ``0.5 * level`` of pixels to 0 or 1 (half each)."""
    u = torch.rand(x.shape, generator=g)
    p = 0.5 * level
    x = x.clone()
    x[u < p / 2] = 0.0
    x[(u >= p / 2) & (u < p)] = 1.0
    return x


def image_blur(x: Tensor, level: float, g: torch.Generator) -> Tensor:
    """Gaussian blur with sigma ``3 * level`` pixels (separable, zero padded)."""
    sigma = 3.0 * level
    if sigma <= 0:
        return x
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    kx = k.view(1, 1, 1, -1).repeat(c, 1, 1, 1)  # (C, 1, 1, K)
    ky = k.view(1, 1, -1, 1).repeat(c, 1, 1, 1)  # (C, 1, K, 1)
    x = torch.nn.functional.conv2d(x, kx, padding=(0, radius), groups=c)
    return torch.nn.functional.conv2d(x, ky, padding=(radius, 0), groups=c)


def image_occlusion(x: Tensor, level: float, g: torch.Generator) -> Tensor:
    """Black out a random square covering a fraction ``level`` of each image."""
    n, _, h, w = x.shape
    side = int(round((level**0.5) * min(h, w)))
    if side <= 0:
        return x
    x = x.clone()
    for i in range(n):
        top = int(torch.randint(0, h - side + 1, (1,), generator=g))
        left = int(torch.randint(0, w - side + 1, (1,), generator=g))
        x[i, :, top : top + side, left : left + side] = 0.0
    return x


def audio_white_noise(x: Tensor, level: float, g: torch.Generator) -> Tensor:
    """White noise at SNR ``40 - 50 * level`` dB relative to each clip's power (40 dB clean-ish, -10 dB at 1)."""
    if level <= 0:
        return x
    snr_db = 40.0 - 50.0 * level
    power = x.pow(2).mean(dim=-1, keepdim=True).clamp_min(1e-10)  # (N, 1)
    noise_power = power / (10.0 ** (snr_db / 10.0))
    return x + noise_power.sqrt() * torch.randn(x.shape, generator=g)


def audio_dropout(x: Tensor, level: float, g: torch.Generator) -> Tensor:
    """Zero a fraction ``level`` of 20 ms chunks of each clip (lost packets)."""
    if level <= 0:
        return x
    n, s = x.shape
    chunk = 160  # 20 ms at 8 kHz
    chunks = (s + chunk - 1) // chunk
    keep = (torch.rand(n, chunks, generator=g) >= level).to(x.dtype)
    return x * keep.repeat_interleave(chunk, dim=1)[:, :s]


def _rng(g: torch.Generator) -> random.Random:
    return random.Random(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))


def text_typos(texts: list[str], level: float, g: torch.Generator) -> list[str]:
    """Each letter is, with probability ``0.5 * level``, swapped with its neighbour, dropped or replaced."""
    rng, p = _rng(g), 0.5 * level
    out = []
    for t in texts:
        chars = list(t)
        i = 0
        while i < len(chars):
            if chars[i].isalpha() and rng.random() < p:
                op = rng.randrange(3)
                if op == 0 and i + 1 < len(chars):
                    chars[i], chars[i + 1] = chars[i + 1], chars[i]
                    i += 1
                elif op == 1:
                    del chars[i]
                    continue
                else:
                    chars[i] = rng.choice("abcdefghijklmnopqrstuvwxyz")
            i += 1
        out.append("".join(chars))
    return out


def text_word_drop(texts: list[str], level: float, g: torch.Generator) -> list[str]:
    """Drop each word with probability ``level``."""
    rng = _rng(g)
    return [" ".join(w for w in t.split() if rng.random() >= level) for t in texts]


TensorImperfection = Callable[[Tensor, float, torch.Generator], Tensor]
# modality -> name -> function; an explicit table
IMPERFECTIONS: dict[str, dict[str, Callable[..., Any]]] = {
    "image": {"gaussian_noise": image_gaussian_noise, "salt_pepper": image_salt_pepper, "blur": image_blur, "occlusion": image_occlusion},
    "audio": {"white_noise": audio_white_noise, "dropout": audio_dropout},
    "text": {"typos": text_typos, "word_drop": text_word_drop},
}


def corrupt(raw: RawInputs, modality: str, name: str, level: float, *, seed: int = 0) -> RawInputs:
    """A copy of ``raw`` with one imperfection applied to one modality."""
    if modality not in IMPERFECTIONS or name not in IMPERFECTIONS[modality]:
        known = {m: sorted(v) for m, v in IMPERFECTIONS.items()}
        raise ConfigError(f"unknown imperfection {modality}:{name}; known: {known}")
    if not 0.0 <= level <= 1.0:
        raise ConfigError(f"imperfection level must be in [0, 1], got {level}")
    g = torch.Generator().manual_seed(seed)
    out = copy.copy(raw)
    fn = IMPERFECTIONS[modality][name]
    if modality == "text":
        if raw.texts is None:
            raise ConfigError("these inputs hold no text")
        out.texts = fn(list(raw.texts), level, g)
    else:
        if modality not in raw.values:
            raise ConfigError(f"these inputs hold no {modality}")
        out.values = dict(raw.values)
        out.values[modality] = fn(raw.values[modality], level, g)
    return out


# ---------------------------------------------------------------- metrics


def relative_robustness(levels: Sequence[float], accuracies: Sequence[float]) -> float:
    """Area under accuracy vs level, divided by the level range (so it is an accuracy)."""
    lv, acc = np.asarray(levels, dtype=float), np.asarray(accuracies, dtype=float)
    if lv.shape != acc.shape or lv.size < 2 or np.any(np.diff(lv) <= 0):
        raise ConfigError("relative_robustness needs >= 2 increasing levels and one accuracy per level")
    return float(np.trapezoid(acc, lv) / (lv[-1] - lv[0]))


def effective_robustness(levels: Sequence[float], accuracies: Sequence[float], baseline: Sequence[float]) -> float:
    """Relative robustness beyond the baseline's, with the baseline shifted to the model's clean accuracy.

    ``AUC(f - (g + f(0) - g(0)))``: positive means the model loses accuracy more slowly than the baseline.
    """
    f, b = np.asarray(accuracies, dtype=float), np.asarray(baseline, dtype=float)
    if f.shape != b.shape:
        raise ConfigError("effective_robustness: the model's and the baseline's curves need the same levels")
    return relative_robustness(levels, f - (b + f[0] - b[0]))


# ---------------------------------------------------------------- evaluation


@dataclass
class RobustnessCurve:
    """Accuracy of one model under one imperfection at each level."""

    modality: str
    imperfection: str
    levels: list[float]
    accuracies: list[float]
    relative: float
    effective: float | None = None


@dataclass
class RobustnessReport:
    """A model's clean and missing-modality accuracy and its robustness curves."""

    model: str
    fusion: str
    accuracy: dict[str, float]
    curves: list[RobustnessCurve] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "fusion": self.fusion,
            "accuracy": self.accuracy,
            "curves": [c.__dict__ for c in self.curves],
        }


def _accuracy(model: MultimodalClassifier, raw: RawInputs, labels: Tensor, drop: str | None = None) -> float:
    inputs = featurize(model.config, raw)
    if drop is not None:
        inputs = inputs.without(drop)
    return accuracy(model, inputs, labels)


def missing_modality_accuracy(model: MultimodalClassifier, records: Sequence[Record], labels: Tensor) -> dict[str, float]:
    """``{"all": acc, "missing:m": acc with m absent in every example, ...}`` (only for >= 2 modalities)."""
    raw = raw_inputs(model.config, records)
    out = {"all": _accuracy(model, raw, labels)}
    if len(model.modalities) > 1:
        for m in model.modalities:
            out[f"missing:{m}"] = _accuracy(model, raw, labels, drop=m)
    return out


def sweep(
    model: MultimodalClassifier,
    records: Sequence[Record],
    labels: Tensor,
    *,
    levels: Sequence[float] = LEVELS,
    seed: int = 0,
) -> list[RobustnessCurve]:
    """Every imperfection of every modality the model reads, at every level."""
    raw = raw_inputs(model.config, records)
    curves = []
    for m in model.modalities:
        for name in IMPERFECTIONS.get(m, {}):
            accs = [_accuracy(model, corrupt(raw, m, name, lv, seed=seed), labels) for lv in levels]
            curves.append(RobustnessCurve(m, name, list(levels), accs, relative_robustness(levels, accs)))
    return curves


def default_baseline(models: dict[str, MultimodalClassifier]) -> str | None:
    """The name of the one multimodal late-fusion model among ``models``, or ``None`` if not exactly one."""
    late = [n for n, m in models.items() if m.config.fusion.kind == "late" and len(m.modalities) > 1]
    return late[0] if len(late) == 1 else None


def robustness_report(
    models: dict[str, MultimodalClassifier],
    records: Sequence[Record],
    labels: dict[str, Tensor],
    *,
    baseline: str | None = None,
    levels: Sequence[float] = LEVELS,
    seed: int = 0,
) -> list[RobustnessReport]:
    """Missing-modality accuracy and imperfection sweeps of several models on the same records.

    Args:
        models: name -> model.
        records: the evaluation records.
        labels: name -> label indices in that model's label order.
        baseline: the name of the late-fusion run to compute effective robustness against; ``None``
            picks the model whose fusion is "late" if there is exactly one, else no effective robustness.
        levels: imperfection levels.
        seed: the noise seed (the same noise for every model).
    """
    if baseline is None:
        baseline = default_baseline(models)
    elif baseline not in models:
        raise ConfigError(f"baseline {baseline!r} is not one of the models {list(models)}")
    reports = []
    for name, model in models.items():
        reports.append(
            RobustnessReport(
                name,
                model.config.fusion.kind if len(model.modalities) > 1 else f"unimodal:{model.modalities[0]}",
                missing_modality_accuracy(model, records, labels[name]),
                sweep(model, records, labels[name], levels=levels, seed=seed),
            )
        )
    if baseline is not None:
        base = {(c.modality, c.imperfection): c for c in next(r for r in reports if r.model == baseline).curves}
        for r in reports:
            for c in r.curves:
                b = base.get((c.modality, c.imperfection))
                if b is not None:
                    c.effective = effective_robustness(c.levels, c.accuracies, b.accuracies)
    return reports


# ---------------------------------------------------------------- outputs


def write_report(reports: Sequence[RobustnessReport], out: str | Path, *, baseline: str | None = None) -> dict[str, Path]:
    """Write ``robustness.json``, ``robustness.md`` (tables), one accuracy-vs-level plot per modality and
    imperfection (every model on it) and ``robustness_missing.png`` (accuracy with each modality missing,
    per model). Returns the written paths by name.

    Args:
        reports: from :func:`robustness_report`.
        out: folder to write to.
        baseline: the name of the effective-robustness baseline, for the text.
    """
    import json

    from polymodal.eval.plots import _figure, _save

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    (out / "robustness.json").write_text(json.dumps([r.to_dict() for r in reports], indent=2) + "\n")
    paths["json"] = out / "robustness.json"
    keys = sorted({k for r in reports for k in r.accuracy}, key=lambda k: (k != "all", k))
    lines = ["## Accuracy with a modality missing", "", "| model | fusion | " + " | ".join(keys) + " |",
             "|---|---|" + "---|" * len(keys)]  # fmt: skip
    for r in reports:
        cells = [f"{r.accuracy[k]:.3f}" if k in r.accuracy else "-" for k in keys]
        lines.append(f"| {r.model} | {r.fusion} | " + " | ".join(cells) + " |")
    pairs = sorted({(c.modality, c.imperfection) for r in reports for c in r.curves})
    against = f"against {baseline!r}" if baseline else "no late-fusion baseline given"
    # the compact matrix: relative robustness (effective robustness in brackets) per model and imperfection
    lines += ["", f"## Relative robustness (effective robustness, {against})", "",
              "| model | " + " | ".join(f"{m}: {i}" for m, i in pairs) + " |", "|---|" + "---|" * len(pairs)]  # fmt: skip
    for r in reports:
        by = {(c.modality, c.imperfection): c for c in r.curves}
        cells = []
        for pair in pairs:
            c = by.get(pair)
            cells.append("-" if c is None else f"{c.relative:.3f}" + ("" if c.effective is None else f" ({c.effective:+.3f})"))
        lines.append(f"| {r.model} | " + " | ".join(cells) + " |")
    lines += ["", "## Every curve", "",
              "| model | modality | imperfection | clean | worst | relative | effective |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in reports:
        for c in r.curves:
            eff = "-" if c.effective is None else f"{c.effective:+.3f}"
            lines.append(f"| {r.model} | {c.modality} | {c.imperfection} | {c.accuracies[0]:.3f} | {c.accuracies[-1]:.3f} | {c.relative:.3f} | {eff} |")
    (out / "robustness.md").write_text("\n".join(lines) + "\n")
    paths["table"] = out / "robustness.md"
    for modality, imp in pairs:
        fig = _figure(4.5, 3.2)
        ax = fig.add_subplot()
        for r in reports:
            for c in r.curves:
                if (c.modality, c.imperfection) == (modality, imp):
                    ax.plot(c.levels, c.accuracies, marker="o", label=f"{r.model} ({c.relative:.2f})")
        ax.set_xlabel(f"{modality} {imp} level")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.set_title(f"{modality}: {imp}")
        ax.legend(fontsize=7)
        paths[f"{modality}:{imp}"] = _save(fig, out / f"robustness_{modality}_{imp}.png")
    # grouped bars: per model, accuracy with everything and with each modality missing
    fig = _figure(max(4.5, 0.7 * len(reports) + 1.5), 3.2)
    ax = fig.add_subplot()
    width = 0.8 / len(keys)
    for j, k in enumerate(keys):
        xs = [i + (j - (len(keys) - 1) / 2) * width for i in range(len(reports))]
        ax.bar(xs, [r.accuracy.get(k, float("nan")) for r in reports], width, label=k)
    ax.set_xticks(range(len(reports)), [r.model for r in reports], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("accuracy with a modality missing")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: bars reach the top
    paths["missing"] = _save(fig, out / "robustness_missing.png")
    return paths


def robustness_run(
    model_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    data: str | None = None,
    split: str = "test",
    baseline: str | Path | None = None,
    levels: Sequence[float] = LEVELS,
) -> dict[str, Path]:
    """Load saved classifiers, evaluate them on one split, write the report (see :func:`write_report`).

    Models are named by their folder name; ``baseline`` is one of ``model_dirs`` (or added to them).
    """
    dirs = [Path(p) for p in model_dirs]
    if baseline is not None and Path(baseline) not in dirs:
        dirs.append(Path(baseline))
    names = [p.name for p in dirs]
    if len(set(names)) != len(names):
        raise ConfigError(f"model folders must have distinct names, got {names}")
    models, datas = {}, []
    for p in dirs:
        model = load(p, MultimodalClassifier, what="robustness")
        models[p.name] = model
        datas.append(model.extra.get("data"))
    data = data or datas[0]
    if not data:
        raise ConfigError("the models name no data; pass --data")
    d = load_data(data, splits=(split,), config=next(iter(models.values())).config)
    records = d.splits[split]
    labels = {n: encode_labels(records, model_labels=m.config.labels, label_names=d.label_names, split=split) for n, m in models.items()}
    base_name = None if baseline is None else Path(baseline).name
    reports = robustness_report(models, records, labels, baseline=base_name, levels=levels)
    if base_name is None:
        base_name = default_baseline(models)  # the one robustness_report picked
    return write_report(reports, out, baseline=base_name)


def evaluate_run(path: str | Path, *, data: str | None = None, split: str = "test") -> dict[str, Any]:
    """``{"accuracy": {"all": A, "missing:image": B, ...}, "data", "split", "n", "skipped"}`` of a saved classifier
    (``skipped``: the files of a folder that could not be read, each with its problem)."""
    model = load(path, MultimodalClassifier, what="fuse eval")
    data = data or model.extra.get("data")
    if not data:
        raise ConfigError(f"{path}: config.json names no data; pass --data")
    d = load_data(data, splits=(split,), config=model.config)
    records = d.splits[split]
    labels = encode_labels(records, model_labels=model.config.labels, label_names=d.label_names, split=split)
    return {"accuracy": missing_modality_accuracy(model, records, labels), "data": data, "split": split, "n": len(records),
            "skipped": [b.to_dict() for b in d.skipped]}
