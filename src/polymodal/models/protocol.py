"""The interface the contrastive trainer and the evaluation need from a dual encoder.

Both the aligner (pretrained towers with frozen, cached trunks) and a CLIP trained from scratch (whose
"trunks" are just preprocessing and tokenisation) implement it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from PIL import Image
from torch import Tensor, nn


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
