"""What every polymodal model is (:class:`Model`), and what the contrastive trainer and the evaluation need
from a dual encoder (:class:`DualEncoder`).

:class:`Model` is the return type of ``polymodal.load`` and ``polymodal.create`` and what ``polymodal.save``
takes: every class of the kind table (:data:`polymodal.models.build.KINDS`) satisfies it. A dual encoder is
the aligner (pretrained towers with frozen, cached trunks) or a CLIP trained from scratch (whose "trunks"
are just preprocessing and tokenisation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from PIL import Image
from torch import Tensor, nn


@runtime_checkable
class Model(Protocol):
    """A model of one of the kinds polymodal saves: an ``nn.Module`` that knows its kind and its config.

    Attributes:
        kind: the row of the kind table (a class attribute: "aligner", "clip", "classifier", "captioner",
            "text2image", "flava", "flava-vqa").
        config: the model's config dataclass; with ``kind`` it rebuilds the model
            (``polymodal.models.build.build_model``).
        extra: the ``config.json`` entries besides the model's own: what ``polymodal.save(..., extra=)``
            wrote (data, training record, metrics) and ``polymodal.load`` read back; ``{}`` when built.

    Besides, a model carries what turns raw inputs into its tensors: an image-text model (aligner, CLIP)
    ``preprocess(images)`` and ``tokenize(texts)``; a captioner and a FLAVA model their ``tokenizer`` (FLAVA
    also ``preprocess`` and ``tokenize``); a FLAVA VQA model its ``answers``; a classifier its labels and
    text vocabularies in ``config``. A model from ``polymodal.load`` also has ``source`` (its folder) and
    ``model_id`` (a hash of the folder's files).

    Those differ by kind, so here any other attribute reads as ``Any`` (``__getattr__``); narrow with
    ``isinstance(model, Captioner)`` where the full type matters.
    """

    kind: str
    config: Any
    extra: dict[str, Any]

    def __getattr__(self, name: str) -> Any: ...

    def eval(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def parameters(self, recurse: bool = True) -> Any: ...

    def state_dict(self, *args: Any, **kwargs: Any) -> Any: ...


class DualEncoder(Protocol):
    config: Any  # has .kind, .embed_dim, .max_logit_scale, .to_dict()
    logit_scale: nn.Parameter

    @property
    def image_trunk_id(self) -> str: ...

    @property
    def text_trunk_id(self) -> str: ...

    def preprocess(self, images: Sequence[Image.Image]) -> Tensor: ...

    def image_trunk(self, x: Tensor) -> Tensor: ...

    def image_features(self, trunk_out: Tensor, *, normalize: bool = True) -> Tensor: ...

    def tokenize(self, texts: Sequence[str]) -> Any: ...

    def text_trunk(self, tokens: Any) -> Any: ...

    def text_features(self, trunk: Any, *, normalize: bool = True) -> Tensor: ...

    def encode_image(self, images: Any, *, normalize: bool = True) -> Tensor: ...

    def encode_text(self, texts: Sequence[str], *, normalize: bool = True) -> Tensor: ...

    def trainable_state_dict(self) -> dict[str, Tensor]: ...

    # nn.Module methods the trainer uses
    def named_parameters(self, *args: Any, **kwargs: Any) -> Any: ...

    def parameters(self, *args: Any, **kwargs: Any) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...
