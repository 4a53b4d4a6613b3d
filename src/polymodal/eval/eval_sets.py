"""One model on several evaluation sets, each beside its baselines: how far the embedding generalises.

The main job's test split says how well the model knows OpenMoji. These sets say how it does elsewhere:
the same emoji drawn by Twemoji and Noto (test-split emoji only, never trained on in any style) and real
photographs with everyday labels (``builtin:photos``, never trained on). Each set gets the metrics of
:func:`~polymodal.eval.aligner_eval.evaluate_aligner` (retrieval where captions name the items, zero-shot
per label kind), the standard error of each top-1 and R@1 figure, and the same metrics for reference
models (the ImageNet transfer alone, an aligner trained on OpenMoji only, ...) next to chance and the
majority class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from polymodal.data.pairs import load_pairs
from polymodal.eval.aligner_eval import evaluate_aligner
from polymodal.models.protocol import DualEncoder
from polymodal.train.feature_cache import FeatureCache

HEADLINE_SUFFIXES = ("top1", "recall@1")  # the figures that get a standard error


def standard_errors(metrics: Mapping[str, float], n: int) -> dict[str, float]:
    """Binomial standard error sqrt(p (1 - p) / n) of every top-1 accuracy and Recall@1 in ``metrics``."""
    return {f"{k}_se": math.sqrt(max(v * (1 - v), 0.0) / n) for k, v in metrics.items()
            if n > 0 and k.endswith(HEADLINE_SUFFIXES) and not k.endswith("_se")}


def evaluate_sets(
    model: DualEncoder,
    sources: Sequence[str],
    *,
    cache: FeatureCache,
    references: Mapping[str, DualEncoder] | None = None,
    split: str = "test",
) -> dict[str, dict[str, Any]]:
    """``{source: {"split", "size", "metrics", "baselines"}}`` for each evaluation set's ``split``.

    Args:
        model: The model evaluated.
        sources: Pair sources (``builtin:photos``, a manifest, ...).
        cache: Feature cache shared with training.
        references: Named reference models, each evaluated the same way into ``baselines[name]``.
        split: The split read from each source.
    """
    out: dict[str, dict[str, Any]] = {}
    for source in sources:
        pairs = load_pairs(source, split)
        # The training split (if the set has one) gives the class list and the majority class, as in the
        # main evaluation, so a set's block agrees with the main table where both score the same split.
        train = load_pairs(source, "train") if split != "train" else None
        train = train if train is not None and len(train) else None
        ev = evaluate_aligner(model, pairs, cache=cache, train=train, probe=False)
        metrics = {**ev.metrics, **standard_errors(ev.metrics, len(pairs))}
        baselines = dict(ev.baselines)
        for name, ref in (references or {}).items():
            baselines[name] = evaluate_aligner(ref, pairs, cache=cache, train=train, probe=False).metrics
        out[source] = {"split": split, "size": len(pairs), "metrics": metrics, "baselines": baselines}
    return out


def headline(block: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """One evaluation block's headline figures (top-1 and R@1, each followed by its standard error) and
    the same figures of its baselines: what the terminal and the report show."""
    metrics: dict[str, float] = {}
    for k, v in block["metrics"].items():
        if k.endswith(HEADLINE_SUFFIXES) and not k.startswith("support/"):
            metrics[k] = v
            if f"{k}_se" in block["metrics"]:
                metrics[f"{k}_se"] = block["metrics"][f"{k}_se"]
    baselines = {name: {k: v for k, v in b.items() if k in metrics} for name, b in block["baselines"].items()}
    return metrics, {name: b for name, b in baselines.items() if b}
