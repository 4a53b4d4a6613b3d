"""Baselines that every metric must beat to mean anything.

* Majority class: always predict the classes most frequent in the TRAIN split; scored on the test labels.
  On an imbalanced set this can beat chance by far, so it is the honest floor for accuracy.
* Chance: a uniformly random ranking of the C classes (top-k accuracy ``min(k, C) / C``) or of the
  retrieval candidates.
* Untrained (raw) towers are a baseline too, but they need a model: the trainer computes the same metrics
  with the untrained model and passes them to the report next to these.

The ``*_baselines`` helpers return ``{baseline name: {metric name: value}}`` with the metric names of
:func:`~polymodal.eval.zeroshot.classification_metrics` and
:func:`~polymodal.eval.retrieval.retrieval_metrics`, ready for :func:`~polymodal.eval.report.write_report`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from polymodal.errors import ConfigError, ShapeError
from polymodal.eval._inputs import as_labels
from polymodal.eval.retrieval import DEFAULT_KS


def _majority_order(train_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class indices from most to least frequent in train; ties go to the smaller index."""
    counts = np.bincount(train_labels, minlength=num_classes)
    return np.argsort(-counts, kind="stable")


def majority_class_accuracy(
    train_labels: torch.Tensor | np.ndarray | Sequence[int],
    test_labels: torch.Tensor | np.ndarray | Sequence[int],
    *,
    k: int = 1,
) -> float:
    """Top-k accuracy on the test labels of always guessing the k most frequent train classes.

    Args:
        train_labels: Class indices of the training split, shape (N_train,), at least one.
        test_labels: Class indices of the test split, shape (N_test,), at least one.
        k: Number of guesses (ties in train frequency go to the smaller class index).
    """
    train = as_labels(train_labels, name="train_labels").numpy()
    test = as_labels(test_labels, name="test_labels").numpy()
    if train.size == 0 or test.size == 0:
        raise ShapeError("train_labels/test_labels: need at least one label each")
    if k < 1:
        raise ConfigError(f"k: must be >= 1, got {k}")
    num_classes = int(max(train.max(), test.max())) + 1
    guesses = _majority_order(train, num_classes)[:k]
    return float(np.isin(test, guesses).mean())


def chance_topk_accuracy(num_classes: int, k: int = 1) -> float:
    """Expected top-k accuracy of a uniformly random ranking of ``num_classes`` classes: min(k, C) / C.

    Args:
        num_classes: C, the number of classes.
        k: Number of guesses.
    """
    if num_classes < 1 or k < 1:
        raise ConfigError(f"num_classes and k must be >= 1, got num_classes={num_classes}, k={k}")
    return min(k, num_classes) / num_classes


def chance_retrieval_recall(k: int, num_candidates: int, *, num_positives: int = 1) -> float:
    """Expected recall@k of a uniformly random ranking: P(at least one positive in the top k).

    With one positive this is ``k / N``; with ``p`` positives among ``N`` candidates it is the
    hypergeometric ``1 - C(N - p, k) / C(N, k)``.

    Args:
        k: Number of retrieved candidates (clipped to ``num_candidates``).
        num_candidates: N, the number of candidates ranked.
        num_positives: p, how many of them count as correct.
    """
    if num_candidates < 1 or k < 1 or not 1 <= num_positives <= num_candidates:
        raise ConfigError(
            f"need k >= 1 and 1 <= num_positives <= num_candidates, got k={k}, "
            f"num_candidates={num_candidates}, num_positives={num_positives}"
        )
    k = min(k, num_candidates)
    if num_positives == 1:
        return k / num_candidates
    # C(N - p, k) / C(N, k) = prod_{i<k} (N - p - i) / (N - i): floats, no huge integers for big N.
    miss = 1.0
    for i in range(k):
        miss *= max(num_candidates - num_positives - i, 0) / (num_candidates - i)
    return 1.0 - miss


def classification_baselines(
    train_labels: torch.Tensor | np.ndarray | Sequence[int],
    test_labels: torch.Tensor | np.ndarray | Sequence[int],
    num_classes: int,
    *,
    topk: Sequence[int] = (1, 5),
    prefix: str = "",
) -> dict[str, dict[str, float]]:
    """Majority-class and chance values of ``top{k}`` and ``mean_per_class_recall``.

    Args:
        train_labels: Class indices of the training split, in ``[0, num_classes)``.
        test_labels: Class indices of the test split, in ``[0, num_classes)``.
        num_classes: C.
        topk: The k of top-k accuracy, as given to ``classification_metrics``.
        prefix: Put before every metric name (e.g. ``"zeroshot/"``) to match the run's metric keys.

    Returns:
        ``{"majority": {...}, "chance": {...}}``.
    """
    train = as_labels(train_labels, name="train_labels", num_classes=num_classes).numpy()
    test = as_labels(test_labels, name="test_labels", num_classes=num_classes).numpy()
    if train.size == 0 or test.size == 0:
        raise ShapeError("train_labels/test_labels: need at least one label each")
    ks = sorted({1, 5, *(int(k) for k in topk)})
    order = _majority_order(train, num_classes)
    majority = {f"{prefix}top{k}": float(np.isin(test, order[:k]).mean()) for k in ks}
    # A constant prediction m recalls all of class m and nothing else: 1 / (#classes in test) if m occurs.
    present = np.unique(test)
    majority[f"{prefix}mean_per_class_recall"] = float(order[0] in present) / present.size
    chance = {f"{prefix}top{k}": chance_topk_accuracy(num_classes, k) for k in ks}
    chance[f"{prefix}mean_per_class_recall"] = 1.0 / num_classes
    return {"majority": majority, "chance": chance}


def retrieval_baselines(
    text_to_image: torch.Tensor | np.ndarray | Sequence[int],
    num_images: int,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    prefix: str = "",
) -> dict[str, dict[str, float]]:
    """Chance values of the metrics of ``retrieval_metrics`` for the same evaluation set.

    Text -> image has one positive among N images: ``k / N``. Image -> text has, for image i, ``t_i``
    positives among M texts; the chance recall is averaged over images.

    Args:
        text_to_image: For each text, the index of its image, shape (M,).
        num_images: N.
        ks: The k of recall@k.
        prefix: Put before every metric name to match the run's metric keys.

    Returns:
        ``{"chance": {...}}``.
    """
    owner = as_labels(text_to_image, name="text_to_image", num_classes=num_images)
    if owner.numel() == 0:
        raise ShapeError("text_to_image: expected at least one text")
    texts_per_image = torch.bincount(owner, minlength=num_images).tolist()
    if min(texts_per_image) == 0:
        raise ShapeError("text_to_image: some images have no text")
    m = owner.numel()
    # Images with the same number of texts have the same chance recall: average over the distinct counts.
    counts, images_with = np.unique(texts_per_image, return_counts=True)
    chance: dict[str, float] = {}
    for k in ks:
        per_count = [chance_retrieval_recall(int(k), m, num_positives=int(t)) for t in counts]
        chance[f"{prefix}image_retrieval_recall@{k}"] = chance_retrieval_recall(int(k), num_images)
        chance[f"{prefix}text_retrieval_recall@{k}"] = float(np.dot(per_count, images_with) / num_images)
    return {"chance": chance}
