"""ImageNet-1k class names and a top-5 helper for the pretrained image tower.

The names (WordNet lemmas of the 1000 ILSVRC-2012 synsets, in the standard sorted-synset index order)
are vendored in ``assets/imagenet_classes.txt``, their WordNet 3.0 hypernyms and glosses in
``assets/imagenet_wordnet.tsv`` (``scripts/vendor_imagenet_wordnet.py``); see ``assets/IMAGENET_CLASSES_NOTICE.md`` for their
origin and licence. ``IMAGENET_CLASSES`` is read on first access (PEP 562 module ``__getattr__``), so
importing this module costs nothing.
"""

from __future__ import annotations

import functools
import importlib.resources
from dataclasses import dataclass

import torch
from PIL import Image

from polymodal.towers.efficientnet import EfficientNetLite0
from polymodal.towers.preprocess import effnet_preprocess

NUM_CLASSES = 1000


@dataclass(frozen=True)
class ImageNetClass:
    """One ImageNet-1k class.

    Args:
        synset: WordNet id, e.g. ``n03877845``.
        name: Comma-separated lemmas, e.g. ``palace``.
        hypernyms: Its WordNet hypernym chain, nearest first (``assets/imagenet_wordnet.tsv``).
        gloss: Its WordNet definition.
    """

    synset: str
    name: str
    hypernyms: tuple[str, ...] = ()  # WordNet 3.0 ancestors' first lemmas, nearest first ("corvine bird", ...)
    gloss: str = ""  # WordNet 3.0 definition


def _asset_text(name: str) -> str:
    return (importlib.resources.files("polymodal.towers") / "assets" / name).read_text(encoding="utf-8")


@functools.cache
def imagenet_class_table() -> tuple[ImageNetClass, ...]:
    """The 1000 classes in logit order, read once from the vendored asset."""
    text = _asset_text("imagenet_classes.txt")
    rows = [line.split("\t", 1) for line in text.splitlines() if line.strip()]
    wordnet = {}
    for line in _asset_text("imagenet_wordnet.tsv").splitlines():
        synset, chain, gloss = line.split("\t")
        wordnet[synset] = (tuple(h for h in chain.split("; ") if h), gloss)
    table = tuple(ImageNetClass(synset, name, *wordnet.get(synset, ((), ""))) for synset, name in rows)
    if len(table) != NUM_CLASSES:  # a packaging error, not user input
        raise RuntimeError(f"imagenet_classes.txt: expected {NUM_CLASSES} rows, found {len(table)}")
    return table


def __getattr__(name: str) -> list[str]:
    if name == "IMAGENET_CLASSES":
        return [c.name for c in imagenet_class_table()]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def imagenet_top5(model: EfficientNetLite0, img: Image.Image) -> list[tuple[str, float]]:
    """The five most probable ImageNet classes of one image.

    The model is run in eval mode (dropout off) and put back in its previous mode afterwards.

    Args:
        model: A tower with 1000 ImageNet logits, e.g. ``EfficientNetLite0.pretrained()``.
        img: Any PIL image; preprocessed with ``effnet_preprocess()``.

    Returns:
        (class name, softmax probability) pairs, most probable first.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            logits = model(effnet_preprocess()([img]))[0]  # (1000,)
    finally:
        model.train(was_training)
    probs = logits.softmax(dim=-1)
    top = probs.topk(5)
    classes = imagenet_class_table()
    return [
        (classes[i].name, float(p)) for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
    ]
