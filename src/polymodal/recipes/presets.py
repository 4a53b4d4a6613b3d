"""Default settings of the main job (``polymodal demo``) and of ``polymodal dual train``.

Chosen on the OpenMoji validation split (``scripts/tune_aligner.py``; the test split is never read there)
under the demo's budget of about 5 minutes on 2 CPU cores for a first run with an empty cache:
- locked towers (LiT) with linear heads over the cached clean-image and caption features: validation R@1
  i→t 0.347-0.355 over three seeds, against 0.327 for the last image block unlocked, with the same
  zero-shot accuracy, at a fraction of the time (the towers run once per image, not once per step);
- no augmented views: with locked towers they did not help (3 views 0.346 against 0.359 for the clean
  image alone, mean of three seeds), and each costs a tower pass over the training images;
- 224 px: 288 px was no better (0.346 mean of three seeds) and costs 1.65x the tower time;
- the text tower stays locked: its sentence space carries the label-text semantics zero-shot needs;
- validation R@1 peaks after ~14-26 epochs while the training loss keeps falling (overfitting), hence
  early stopping with patience 8 within 30 epochs;
- then a refit on train+val for the chosen epoch count: the same procedure run inside the training split
  (245 of its pairs held out to choose the epoch, three seeds) raised validation R@1 i→t 0.325 → 0.356 and
  zero-shot groups 0.543 → 0.568, subgroups unchanged (0.373 → 0.372).
The support set (``polymodal.models.support``) keeps its defaults, also chosen on validation.

Across domains (``scripts/tune_generalist.py``, validation sets only, three seeds; docs/aligner.md):
- the ImageNet transfer (``polymodal.models.transfer``) gated by the distance to the training images
  takes zero-shot on the validation photographs from 0.09-0.14 to 0.66-0.69 and leaves OpenMoji's
  validation figures where they were;
- whole images padded to a square (``image_fit="pad"``) instead of the centre crop: 0.41 -> 0.53 for the
  transfer alone on the photographs; emoji are square, so the same;
- the Twemoji and Noto drawings of the training emoji as more training pairs: Twemoji validation
  image→text R@1 0.11 -> 0.34 and groups 0.37 -> 0.75, Noto 0.12 -> 0.40 and 0.40 -> 0.79, OpenMoji
  R@1 and groups the same within a point, subgroups 0.412 -> 0.388 (one standard error is 0.031).
"""

from __future__ import annotations

from typing import Any

# Plain values first: the command line reads its option defaults from these without importing torch.
DEMO_MODEL_ARGS: dict[str, Any] = {"unlock_image": 0, "unlock_text": 0, "image_size": 224, "image_fit": "pad",
                                   "head_dropout": 0.1}
DEMO_TRAIN_ARGS: dict[str, Any] = {"epochs": 30, "batch_size": 256, "lr": 1e-3, "tower_lr": 2e-4, "image_views": 0,
                                   "patience": 8, "refit": True}
DEMO_DATA = "builtin:openmoji"
DEMO_ALSO_TRAIN_ON = ("builtin:twemoji", "builtin:noto")  # their train (and val, for the refit) splits
DEMO_EVAL_SETS = ("builtin:photos", "builtin:twemoji", "builtin:noto", "builtin:openmoji")


def __getattr__(name: str) -> Any:
    """``DEMO_MODEL`` (an ``AlignerConfig``), ``DEMO_TRAIN`` (a ``TrainConfig``) and ``DEMO_TRANSFER`` (a
    ``TransferConfig``), built on first use: their classes import torch."""
    if name == "DEMO_MODEL":
        from polymodal.models.aligner import AlignerConfig

        return AlignerConfig(**DEMO_MODEL_ARGS)
    if name == "DEMO_TRAIN":
        from polymodal.train.fit import TrainConfig

        return TrainConfig(**DEMO_TRAIN_ARGS)
    if name == "DEMO_TRANSFER":
        from polymodal.models.transfer import TransferConfig

        return TransferConfig()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
