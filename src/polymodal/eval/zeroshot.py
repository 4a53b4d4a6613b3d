"""Zero-shot classification from a joint embedding space, defined as in CLIP_benchmark (LAION).

A class is represented by the text tower's embedding of prompts that name it. With several prompts
(templates) per class, CLIP (Radford et al., 2021, sec. 3.1.4) averages their L2-normalised embeddings
and re-normalises the mean ("prompt ensembling"); an image is assigned the class of highest cosine
similarity. Metrics are top-k accuracy and mean per-class recall (balanced accuracy), the latter being
what CLIP_benchmark reports for imbalanced test sets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from polymodal.errors import ConfigError, ShapeError
from polymodal.eval._inputs import as_labels, as_matrix
from polymodal.models.prompts import _class_prompts, _ensemble_columns


def zeroshot_classify(
    image_emb: torch.Tensor | np.ndarray, classifier: torch.Tensor | np.ndarray, *, logit_scale: float = 100.0
) -> torch.Tensor:
    """Score every image against every class: scaled cosine similarity.

    Args:
        image_emb: Image embeddings, shape (N, D); L2-normalised here.
        classifier: The output of :func:`build_zeroshot_classifier`, shape (D, C).
        logit_scale: Multiplier of the cosine similarities (CLIP's learned temperature ends near 100);
            it does not change rankings or accuracies, only softmax probabilities.

    Returns:
        Logits, shape (N, C).
    """
    x = F.normalize(as_matrix(image_emb, name="image_emb"), dim=-1)  # (N, D)
    w = as_matrix(classifier, name="classifier")  # (D, C)
    if x.shape[1] != w.shape[0]:
        raise ShapeError(
            f"classifier: expected shape ({x.shape[1]}, C) to match image_emb dim, got {tuple(w.shape)}"
        )
    return logit_scale * (x @ w)  # (N, C)


@dataclass(frozen=True)
class SubclassClassifier:
    """A zero-shot classifier whose classes are each represented by several member texts.

    ``weights[:, m]`` is the prompt-ensemble embedding of member ``m`` and ``owner[m]`` the class it
    belongs to; a class's members are its own label text and its subclasses (see
    :func:`build_subclass_classifier`).
    """

    weights: torch.Tensor  # (D, M) columns L2-normalised
    owner: torch.Tensor  # (M,) int64 class index of each member
    num_classes: int


@torch.no_grad()
def build_subclass_classifier(
    encode_text: Callable[[list[str]], torch.Tensor],
    members: Sequence[Sequence[str]],
    templates: Sequence[str],
) -> SubclassClassifier:
    """Zero-shot classifier over classes described by their subclasses (CHiLS, Novack et al., 2023).

    A coarse class name such as "objects" says little about what its images show; its subclasses
    ("clothing", "musical instrument", ...) say much more. Each class ``c`` is given member texts
    (``members[c]``: typically its own label text first, then its subclasses' texts); every member gets
    its own prompt ensemble, and :func:`subclass_classify` scores a class by the probability mass of its
    members. A class with one member behaves as the flat classifier of :func:`build_zeroshot_classifier`.

    Args:
        encode_text: Maps a list of texts to their embeddings, shape (len(texts), D).
        members: Per class, in label order, its non-empty list of member texts.
        templates: Prompts with a ``{c}`` placeholder, filled with every member text.

    Returns:
        A :class:`SubclassClassifier`.
    """
    if not members:
        raise ConfigError("members: expected at least one class")
    empty = [i for i, m in enumerate(members) if not m]
    if empty:
        raise ConfigError(f"members: class(es) {empty[:5]} have no member text")
    pairs = [(c, text) for c, texts in enumerate(members) for text in dict.fromkeys(texts)]  # (class, member text)
    weights = _ensemble_columns(encode_text, _class_prompts([text for _, text in pairs], templates))  # (D, M)
    owner = torch.tensor([c for c, _ in pairs], dtype=torch.int64)
    return SubclassClassifier(weights, owner, len(members))


def subclass_classify(
    image_emb: torch.Tensor | np.ndarray, classifier: SubclassClassifier, *, logit_scale: float
) -> torch.Tensor:
    """Class log-probabilities: ``log sum_{m in c} softmax_m(logit_scale * cos(x, w_m))``.

    Summing the members' softmax probabilities (rather than taking the best member) keeps a class that
    many subclasses moderately match ahead of one that a single subclass matches by chance.

    Args:
        image_emb: Image embeddings, shape (N, D); L2-normalised here.
        classifier: The output of :func:`build_subclass_classifier`.
        logit_scale: The model's own ``exp(logit_scale)``, the temperature it was trained at; unlike in
            :func:`zeroshot_classify`, it changes the ranking, so it is taken from the model, not tuned.

    Returns:
        Log-probabilities, shape (N, C).
    """
    probs = zeroshot_classify(image_emb, classifier.weights, logit_scale=logit_scale).softmax(dim=1)  # (N, M)
    per_class = torch.zeros(probs.shape[0], classifier.num_classes, dtype=probs.dtype)
    per_class.index_add_(1, classifier.owner, probs)  # (N, C)
    return per_class.clamp_min(torch.finfo(probs.dtype).tiny).log()


@dataclass
class ClassificationMetrics:
    """Accuracy figures of a classifier on one test set.

    ``top5`` (and any ``topk[k]``) uses ``min(k, C)`` guesses, so with fewer than 5 classes it is 1.0.
    The confusion matrix has true classes in rows and predicted (top-1) classes in columns.
    """

    top1: float
    top5: float
    mean_per_class_recall: float  # mean over classes present in targets of (correct / support)
    num_samples: int
    num_classes: int
    confusion_matrix: np.ndarray  # (C, C) int64, rows true, columns predicted
    topk: dict[int, float] = field(default_factory=dict)  # every requested k -> top-k accuracy

    @property
    def confusion(self) -> np.ndarray:
        """The confusion matrix (C, C); short name for ``confusion_matrix``."""
        return self.confusion_matrix

    def to_dict(self) -> dict[str, Any]:
        """Scalar metrics as a flat dict (``top1``, ``top5``, ``top{k}``, ``mean_per_class_recall``, counts).

        The confusion matrix is left out: it is an array, not a number for a metrics table.
        """
        out: dict[str, Any] = {"top1": self.top1, "top5": self.top5}
        for k, v in sorted(self.topk.items()):
            out.setdefault(f"top{k}", v)
        out["mean_per_class_recall"] = self.mean_per_class_recall
        out["num_samples"] = self.num_samples
        out["num_classes"] = self.num_classes
        return out


def classification_metrics(
    logits: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    *,
    topk: Sequence[int] = (1, 5),
) -> ClassificationMetrics:
    """Top-k accuracy, mean per-class recall and confusion matrix from class scores.

    Args:
        logits: Class scores, shape (N, C); higher is more likely.
        targets: True class indices in ``[0, C)``, shape (N,).
        topk: The k of top-k accuracy to report; ``1`` and ``5`` are always computed, and each k is
            clipped to C.

    Returns:
        A :class:`ClassificationMetrics`.
    """
    scores = as_matrix(logits, name="logits")  # (N, C)
    n, c = scores.shape
    if n == 0 or c == 0:
        raise ShapeError(f"logits: expected at least one sample and one class, got shape {(n, c)}")
    y = as_labels(targets, name="targets", length=n, num_classes=c)
    if any(int(k) < 1 for k in topk):
        raise ConfigError(f"topk: every k must be >= 1, got {tuple(topk)}")
    ks = sorted({1, 5, *(int(k) for k in topk)})

    # Ranked predictions once, with the largest k; prefixes give the smaller k.
    ranked = scores.topk(min(max(ks), c), dim=1).indices  # (N, kmax)
    hit = ranked == y[:, None]  # (N, kmax)
    acc = {k: hit[:, : min(k, c)].any(dim=1).float().mean().item() for k in ks}

    pred = ranked[:, 0]
    counts = torch.zeros(c * c, dtype=torch.int64)
    counts.index_add_(0, y * c + pred, torch.ones(n, dtype=torch.int64))
    cm = counts.view(c, c).numpy()  # (C true, C predicted)
    support = cm.sum(axis=1)
    present = support > 0
    # Balanced accuracy (sklearn.metrics.balanced_accuracy_score): classes absent from targets have no
    # recall and are left out of the mean, as in CLIP_benchmark.
    mpcr = float((np.diag(cm)[present] / support[present]).mean())
    return ClassificationMetrics(
        top1=acc[1],
        top5=acc[5],
        mean_per_class_recall=mpcr,
        num_samples=n,
        num_classes=c,
        confusion_matrix=cm,
        topk={k: acc[k] for k in sorted({int(k) for k in topk})},
    )
