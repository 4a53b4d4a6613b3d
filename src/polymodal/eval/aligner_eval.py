"""Evaluate an aligner on a PairSet with CLIP_benchmark's definitions, next to its baselines.

Metrics: image→text and text→image Recall@1/5/10; zero-shot classification from label text with template
ensembling (top-1, top-5, mean per-class recall) for each label kind; a linear probe on frozen image
embeddings. Baselines: majority class and chance, and the same model with untrained heads (the raw towers
with no training), so a reader sees what training bought.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from polymodal.data.pairs import PairSet
from polymodal.eval.baselines import classification_baselines, retrieval_baselines
from polymodal.eval.linear_probe import linear_probe
from polymodal.eval.retrieval import retrieval_metrics
from polymodal.eval.zeroshot import (
    ClassificationMetrics,
    SubclassClassifier,
    build_subclass_classifier,
    classification_metrics,
    subclass_classify,
    zeroshot_classify,
)
from polymodal.models.prompts import EMOJI_TEMPLATES
from polymodal.models.protocol import DualEncoder
from polymodal.models.support import SupportSet
from polymodal.train.feature_cache import FeatureCache
from polymodal.train.trunk_features import (
    collate_text_trunks,
    embed_pairs,
    image_trunk_features,
    text_trunk_features,
)

LabelText = Callable[[str, str], str]  # (label kind, class name) -> label text
Subclasses = Callable[[str, str], list[str]]  # (label kind, class name) -> subclass label texts


def default_label_text(kind: str, name: str) -> str:
    from polymodal.data.openmoji_labels import group_text, subgroup_text

    if kind == "group":
        return group_text(name)
    if kind == "subgroup":
        return subgroup_text(name)
    return name.replace("-", " ").replace("_", " ")


def default_subclasses(kind: str, name: str) -> list[str]:
    from polymodal.data.openmoji_labels import subclass_texts

    return subclass_texts(kind, name)


@dataclass
class AlignerEvaluation:
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]  # baseline name -> metric -> value
    confusion: dict[str, tuple[list[str], np.ndarray]] = field(default_factory=dict)  # kind -> (classes, cm)
    image_emb: Tensor | None = None
    text_emb: Tensor | None = None


@torch.no_grad()
def _raw_image_features(model: Any, pairs: PairSet, cache: FeatureCache) -> Tensor:
    trunk = image_trunk_features(model, pairs.images, view=0, cache=cache, progress=False)
    return torch.cat([model.image_top(trunk[i : i + 256]) for i in range(0, len(trunk), 256)])


def _cached_text_encoder(model: DualEncoder, cache: FeatureCache) -> Callable[[list[str]], Tensor]:
    """``encode_text`` through the feature cache: the frozen text trunk runs once per distinct prompt,
    shared by the trained model, its untrained baseline (same trunk) and later evaluations."""

    def encode(texts: list[str]) -> Tensor:
        trunks = text_trunk_features(model, texts, cache=cache, progress=False)
        return torch.cat([model.text_features(collate_text_trunks(trunks[i : i + 512]))
                          for i in range(0, len(trunks), 512)])

    return encode


def _zeroshot_scores(img: Tensor, classifier: SubclassClassifier, model: DualEncoder) -> Tensor:
    """Class scores: the members' summed softmax at the model's temperature, or plain cosine when every
    class has one member (the flat prompt-ensemble classifier, whose ranking needs no temperature)."""
    if len(classifier.owner) > classifier.num_classes:
        return subclass_classify(img, classifier, logit_scale=_temperature_scale(model))
    return zeroshot_classify(img, classifier.weights)


def _prefixed(cm: ClassificationMetrics, prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in cm.to_dict().items()
            if isinstance(v, (int, float)) and k not in ("num_classes", "num_samples")}


def _temperature_scale(model: DualEncoder) -> float:
    """``exp(logit_scale)`` clamped as in training: the temperature the model's similarities were fit at."""
    return float(model.logit_scale.detach().clamp(max=model.config.max_logit_scale).exp())


@torch.no_grad()
def evaluate_aligner(
    model: DualEncoder,
    test: PairSet,
    *,
    cache: FeatureCache,
    train: PairSet | None = None,
    val: PairSet | None = None,
    untrained: DualEncoder | None = None,
    label_text: LabelText = default_label_text,
    subclasses: Subclasses = default_subclasses,
    templates: tuple[str, ...] = EMOJI_TEMPLATES,
    probe: bool = True,
    probe_cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0),
    support: SupportSet | None = None,
    progress: bool = False,
) -> AlignerEvaluation:
    """All metrics of ``model`` on ``test``; ``train``/``val`` feed the probe and the majority baseline.

    Zero-shot classes with subclasses (``subclasses(kind, name)``, e.g. an OpenMoji group's subgroups)
    are scored by :func:`~polymodal.eval.zeroshot.subclass_classify` at the model's own temperature;
    classes without are scored by their prompt ensemble alone.

    With a ``support`` set (the training pairs' embeddings), retrieval and zero-shot are measured a second
    time with support-mixed embeddings (:class:`~polymodal.models.support.SupportSet`) under keys
    prefixed ``support/``; the plain keys keep CLIP_benchmark's definitions.

    Zero-shot chooses among the classes seen in ``test`` and ``train``, and every class ``test.classes``
    lists (a set without a training split, such as the photographs, names all its labels there).
    """
    img, txt = embed_pairs(model, test, cache=cache, progress=progress)
    owner = torch.arange(len(test))
    metrics: dict[str, float] = dict(retrieval_metrics(img, txt, owner))
    if support is not None:
        both = retrieval_metrics(support.augment_image(img), support.augment_text(txt), owner)
        metrics.update({f"support/{k}": v for k, v in both.items()})
    baselines: dict[str, dict[str, float]] = {}
    for name, vals in retrieval_baselines(owner, len(test)).items():
        baselines.setdefault(name, {}).update(vals)
    confusion: dict[str, tuple[list[str], np.ndarray]] = {}

    encode = _cached_text_encoder(model, cache)
    probe_kind = next(iter(test.labels), None)  # one probe, on the first (coarsest) label kind
    for kind, labels in test.labels.items():
        seen = set(labels) | set(train.labels.get(kind, []) if train else [])
        classes = sorted(seen | set(test.classes.get(kind, [])))
        index = {c: i for i, c in enumerate(classes)}
        y = torch.tensor([index[c] for c in labels])
        texts = [label_text(kind, c) for c in classes]
        if len(set(texts)) != len(texts):  # two classes with the same text: keep them apart by name
            texts = [f"{t} ({c})" if texts.count(t) > 1 else t for t, c in zip(texts, classes)]
        members = [[t, *subclasses(kind, c)] for t, c in zip(texts, classes, strict=True)]
        sub = build_subclass_classifier(encode, members, list(templates))
        scores = _zeroshot_scores(img, sub, model)
        cm = classification_metrics(scores, y)
        metrics.update(_prefixed(cm, f"zeroshot_{kind}/"))
        confusion[kind] = (classes, cm.confusion)
        if support is not None:
            mixed = SubclassClassifier(support.augment_text(sub.weights.T).T, sub.owner, sub.num_classes)
            metrics.update(_prefixed(classification_metrics(_zeroshot_scores(img, mixed, model), y),
                                     f"support/zeroshot_{kind}/"))
        ytrain = [index[c] for c in train.labels[kind]] if train and kind in train.labels else y.tolist()
        for name, vals in classification_baselines(ytrain, y, len(classes), prefix=f"zeroshot_{kind}/").items():
            baselines.setdefault(name, {}).update(vals)

        if probe and kind == probe_kind and train is not None and val is not None and kind in train.labels:
            tr_y = [index[c] for c in train.labels[kind]]
            va_y = [index.get(c, -1) for c in val.labels[kind]]
            keep = [i for i, c in enumerate(va_y) if c >= 0]
            tr_x, _ = embed_pairs(model, train, cache=cache)
            va_x, _ = embed_pairs(model, val, cache=cache)
            res = linear_probe(tr_x, tr_y, va_x[keep], [va_y[i] for i in keep], img, y, Cs=probe_cs)
            metrics[f"probe_{kind}/accuracy"] = res.accuracy
            metrics[f"probe_{kind}/mean_per_class_recall"] = res.mean_per_class_recall
            if hasattr(model, "image_top"):  # towers with a frozen trunk: probe their raw features too
                raw = linear_probe(_raw_image_features(model, train, cache), tr_y,
                                   _raw_image_features(model, val, cache)[keep], [va_y[i] for i in keep],
                                   _raw_image_features(model, test, cache), y, Cs=probe_cs)
                baselines.setdefault("raw towers", {}).update({
                    f"probe_{kind}/accuracy": raw.accuracy,
                    f"probe_{kind}/mean_per_class_recall": raw.mean_per_class_recall,
                })
            maj = classification_baselines(tr_y, y, len(classes))["majority"]
            baselines.setdefault("majority", {})[f"probe_{kind}/accuracy"] = maj["top1"]

    if untrained is not None:
        base = evaluate_aligner(untrained, test, cache=cache, label_text=label_text, templates=templates,
                                probe=False)
        baselines.setdefault("raw towers", {}).update(
            {k: v for k, v in base.metrics.items() if not k.startswith("probe_")}
        )
    return AlignerEvaluation(metrics, baselines, confusion, img, txt)


def summary(metrics: dict[str, Any]) -> dict[str, float]:
    """The headline numbers."""
    keys = ["text_retrieval_recall@1", "image_retrieval_recall@1", "zeroshot_group/top1", "zeroshot_subgroup/top1"]
    return {k: metrics[k] for k in keys if k in metrics}
