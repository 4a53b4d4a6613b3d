"""Linear probe: how linearly separable the classes are in a frozen embedding space.

Follows the CLIP paper's protocol (Radford et al., 2021, appendix A.3): L2-regularised logistic
regression (scikit-learn, L-BFGS) on frozen features, with the inverse regularisation strength ``C``
chosen by accuracy on a held-out VALIDATION split. The chosen model is then refit and scored exactly once
on the test split, so the test labels never influence any choice. Reported like CLIP_benchmark: top-1
accuracy and mean per-class recall (balanced accuracy).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from threadpoolctl import threadpool_limits

from polymodal.errors import ConfigError, ShapeError
from polymodal.eval._inputs import as_labels, as_matrix

DEFAULT_CS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)  # log-spaced sweep


@dataclass
class ProbeResult:
    """The outcome of :func:`linear_probe`: test scores of the refit model and how C was chosen."""

    accuracy: float  # top-1 on the test split
    mean_per_class_recall: float  # balanced accuracy on the test split
    chosen_C: float  # inverse L2 strength with the best validation accuracy
    val_accuracy: dict[float, float] = field(default_factory=dict)  # every C tried -> validation accuracy
    refit_on: str = "train+val"  # the data the final model was fit on

    def to_dict(self) -> dict[str, Any]:
        """Scalars for a metrics table, prefixed ``probe_``."""
        return {
            "probe_accuracy": self.accuracy,
            "probe_mean_per_class_recall": self.mean_per_class_recall,
            "probe_C": self.chosen_C,
        }


def _fit(x: np.ndarray, y: np.ndarray, *, C: float, max_iter: int, seed: int) -> LogisticRegression:
    model = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    # One BLAS thread: each L-BFGS step is a few small matrix products, and with another process busy on
    # a core, BLAS threads waiting on each other made the demo's probes 25x slower (19.7 s against 0.8 s).
    with warnings.catch_warnings(), threadpool_limits(limits=1):
        # Weakly regularised fits on separable data may stop at max_iter; the sweep still ranks them.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return model


def _features(x: Any, *, name: str, normalize: bool) -> np.ndarray:
    t = as_matrix(x, name=name)
    if normalize:
        t = torch.nn.functional.normalize(t, dim=-1)
    return t.numpy().astype(np.float64)


def linear_probe(
    train_x: torch.Tensor | np.ndarray,
    train_y: torch.Tensor | np.ndarray | Sequence[int],
    val_x: torch.Tensor | np.ndarray,
    val_y: torch.Tensor | np.ndarray | Sequence[int],
    test_x: torch.Tensor | np.ndarray,
    test_y: torch.Tensor | np.ndarray | Sequence[int],
    *,
    Cs: Sequence[float] = DEFAULT_CS,
    refit_on: Literal["train", "train+val"] = "train+val",
    normalize: bool = True,
    max_iter: int = 1000,
    seed: int = 0,
) -> ProbeResult:
    """Fit logistic-regression probes, choose C on validation, refit, and score once on test.

    Ties in validation accuracy go to the smaller C (the stronger regularisation).

    Args:
        train_x: Training features, shape (N_train, D).
        train_y: Training labels (non-negative ints), shape (N_train,); at least two classes.
        val_x: Validation features, shape (N_val, D), used only to choose C.
        val_y: Validation labels, shape (N_val,).
        test_x: Test features, shape (N_test, D), scored once with the chosen C.
        test_y: Test labels, shape (N_test,).
        Cs: Inverse L2 regularisation strengths to try.
        refit_on: Fit the final model on ``"train+val"`` (default: more data, same C) or ``"train"`` only.
        normalize: L2-normalise features first, as embeddings are compared by cosine similarity.
        max_iter: L-BFGS iterations per fit.
        seed: Random state of the solver.

    Returns:
        A :class:`ProbeResult`.
    """
    if not Cs or any(float(c) <= 0 for c in Cs):
        raise ConfigError(f"Cs: expected positive values, got {tuple(Cs)}")
    if refit_on not in ("train", "train+val"):
        raise ConfigError(f"refit_on: expected 'train' or 'train+val', got {refit_on!r}")
    xs = {
        split: _features(x, name=f"{split}_x", normalize=normalize)
        for split, x in (("train", train_x), ("val", val_x), ("test", test_x))
    }
    ys = {
        split: as_labels(y, name=f"{split}_y", length=xs[split].shape[0]).numpy()
        for split, y in (("train", train_y), ("val", val_y), ("test", test_y))
    }
    dims = {split: x.shape[1] for split, x in xs.items()}
    if len(set(dims.values())) != 1:
        raise ShapeError(f"train_x/val_x/test_x: feature dims differ: {dims}")
    if any(x.shape[0] == 0 for x in xs.values()):
        raise ShapeError(f"train_x/val_x/test_x: every split needs samples, got {[len(x) for x in xs.values()]}")
    if len(np.unique(ys["train"])) < 2:
        raise ShapeError("train_y: needs at least two classes to fit a classifier")

    val_accuracy: dict[float, float] = {}
    for C in sorted(float(c) for c in Cs):
        model = _fit(xs["train"], ys["train"], C=C, max_iter=max_iter, seed=seed)
        val_accuracy[C] = float(accuracy_score(ys["val"], model.predict(xs["val"])))
    # Best validation accuracy; among ties the smallest C, i.e. the strongest regularisation.
    chosen = max(val_accuracy, key=lambda c: (val_accuracy[c], -c))

    if refit_on == "train+val":
        fit_x = np.concatenate([xs["train"], xs["val"]])
        fit_y = np.concatenate([ys["train"], ys["val"]])
    else:
        fit_x, fit_y = xs["train"], ys["train"]
    final = _fit(fit_x, fit_y, C=chosen, max_iter=max_iter, seed=seed)
    pred = final.predict(xs["test"])
    with warnings.catch_warnings():
        # Predicted classes absent from test_y are ignored by balanced accuracy, which is what we want.
        warnings.simplefilter("ignore", UserWarning)
        mpcr = float(balanced_accuracy_score(ys["test"], pred))
    return ProbeResult(
        accuracy=float(accuracy_score(ys["test"], pred)),
        mean_per_class_recall=mpcr,
        chosen_C=chosen,
        val_accuracy=val_accuracy,
        refit_on=refit_on,
    )
