"""A support set: the training pairs' image and caption embeddings, kept beside a trained dual encoder.

A dual encoder trained on a few thousand pairs maps an unseen image into the joint space only roughly,
but within one modality it does better: a new cat drawing lies near the training cat drawings, and the
label text "mammal" lies near the training captions "dog face" and "cow". A support set uses those
within-modality neighbours to pull each side towards the other modality:

- a **text** (a zero-shot class prompt or a retrieval caption) is mixed with the mean image embedding of
  the ``text_k`` training pairs whose captions are nearest to it: name-only transfer with a support set,
  as in SuS-X (Udandarao et al., 2023), which retrieves support images by class name and scores test
  images against them as well as against the text;
- an **image** is mixed with the caption embeddings of its ``image_k`` nearest training images, weighted
  by a softmax at ``image_temperature``: retrieval-augmented embeddings, as in RA-CLIP (Xie et al., 2023).

Only the training pairs' images and captions are used, never a label: zero-shot stays zero-shot. The
mixing weights were chosen on the OpenMoji validation split (docs/aligner.md). Plain CLIP_benchmark
metrics do not use the support set; evaluations report both.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from polymodal.core.checkpoint import load_weights_and_metadata, save_weights
from polymodal.errors import CheckpointError, ConfigError, ShapeError

SUPPORT_FILE = "support.safetensors"


@dataclass(frozen=True)
class SupportConfig:
    text_k: int = 5  # training pairs whose captions are nearest a text
    text_weight: float = 1.0  # weight of their mean image embedding, added to the unit text embedding
    image_k: int = 10  # training pairs whose images are nearest an image
    image_temperature: float = 0.1  # softmax temperature over those neighbours' cosine similarities
    image_weight: float = 0.6  # weight of their weighted caption embedding, added to the unit image embedding

    def __post_init__(self) -> None:
        if self.text_k < 1 or self.image_k < 1:
            raise ConfigError(f"support: text_k and image_k must be >= 1, got {self.text_k} and {self.image_k}")
        if self.text_weight < 0 or self.image_weight < 0 or self.image_temperature <= 0:
            raise ConfigError("support: weights must be >= 0 and image_temperature > 0")


class SupportSet:
    """Unit-norm image and caption embeddings of N training pairs (row i of each is one pair).

    Args:
        image_emb: (N, D) image embeddings in the joint space.
        text_emb: (N, D) embeddings of the same pairs' captions.
        config: How many neighbours each side takes and how strongly they are mixed in.
    """

    def __init__(self, image_emb: Tensor, text_emb: Tensor, config: SupportConfig | None = None) -> None:
        if image_emb.ndim != 2 or image_emb.shape != text_emb.shape or len(image_emb) == 0:
            raise ShapeError(f"support: expected two equal (N, D) tensors with N >= 1, got "
                             f"{tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
        self.image_emb = F.normalize(image_emb.float(), dim=-1)
        self.text_emb = F.normalize(text_emb.float(), dim=-1)
        self.config = config or SupportConfig()

    def __len__(self) -> int:
        return len(self.image_emb)

    def _check(self, x: Tensor, name: str) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.image_emb.shape[1]:
            raise ShapeError(f"{name}: expected (M, {self.image_emb.shape[1]}), got {tuple(x.shape)}")
        return F.normalize(x.float(), dim=-1)

    @torch.no_grad()
    def augment_text(self, text_emb: Tensor) -> Tensor:
        """(M, D) texts -> (M, D) unit vectors: ``normalize(t + w · normalize(mean of k support images))``.

        The k support pairs are those whose captions have the highest cosine similarity to ``t``.
        """
        t = self._check(text_emb, "text_emb")
        k = min(self.config.text_k, len(self))
        nearest = (t @ self.text_emb.T).topk(k, dim=1).indices  # (M, k)
        proto = F.normalize(self.image_emb[nearest].mean(dim=1), dim=-1)  # (M, D)
        return F.normalize(t + self.config.text_weight * proto, dim=-1)

    @torch.no_grad()
    def augment_image(self, image_emb: Tensor) -> Tensor:
        """(M, D) images -> (M, D) unit vectors mixed with their nearest support pairs' captions.

        ``normalize(x + w · normalize(sum_j softmax_j(cos(x, x_j) / τ) · t_j))`` over the k support images
        x_j nearest to x, with t_j their captions.
        """
        x = self._check(image_emb, "image_emb")
        k = min(self.config.image_k, len(self))
        sims, nearest = (x @ self.image_emb.T).topk(k, dim=1)  # (M, k)
        weights = (sims / self.config.image_temperature).softmax(dim=1)  # (M, k)
        proto = F.normalize((weights[..., None] * self.text_emb[nearest]).sum(dim=1), dim=-1)  # (M, D)
        return F.normalize(x + self.config.image_weight * proto, dim=-1)

    # ------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write ``image_emb``/``text_emb`` (float16) and the config into one safetensors file, atomically."""
        path = Path(path)
        save_weights(path, {"image_emb": self.image_emb.half(), "text_emb": self.text_emb.half()},
                     metadata={"format": "polymodal-support", "config": json.dumps(asdict(self.config))})
        return path

    @classmethod
    def load(cls, path: str | Path) -> SupportSet:
        """Read a file written by :meth:`save` (safetensors: no code runs on load)."""
        path = Path(path)
        tensors, meta = load_weights_and_metadata(path)
        missing = {"image_emb", "text_emb"} - set(tensors)
        if missing:
            raise CheckpointError(f"{path}: not a support set (missing {', '.join(sorted(missing))})")
        try:
            config = SupportConfig(**json.loads(meta.get("config", "{}")))
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: bad support config in the metadata ({e})") from None
        return cls(tensors["image_emb"], tensors["text_emb"], config)
