"""ImageNet transfer: what the image tower's own classifier knows, carried into the joint space.

EfficientNet-Lite0 is an ImageNet-1k classifier, so for a photograph it already knows "tabby cat" or
"fire engine"; an aligner trained on a few thousand emoji never learns to use that. ConSE (Norouzi et al.
2014, "Zero-shot learning by convex combination of semantic embeddings") maps an image to the
probability-weighted text embeddings of its top-T ImageNet classes:

    t(x) = normalize( Σ_{k ∈ top-T(p)} p_k · e_k ),   p = softmax(classifier(f(x)))

with ``e_k`` the class's sentence embedding (its WordNet lemmas in a photo prompt, and its WordNet gloss
with its nearest hypernym: "magpie, a kind of corvine bird: long-tailed black-and-white crow ..."), passed
through the aligner's text head so that ``t(x)`` lies in the joint space beside the label prompts.

The aligner knows drawings like its training images and nothing else; ImageNet knows photographs. Which
one an image needs is told by how far it lies from everything the aligner was trained on: the cosine of
its pooled tower features to their nearest training image (nearest-neighbour out-of-distribution
scoring, Sun et al. 2022, "Out-of-distribution detection with deep nearest neighbors"). On validation
data that similarity is 0.70-0.97 for OpenMoji, mostly above 0.6 for other emoji styles and 0.32-0.54
for photographs. The gate

    g(x) = sigmoid(gate_scale · (gate_center − max_j cos(f(x), f_j)))
    z(x) = normalize( (1 − g) · a(x) + g · t(x) )

mixes the aligner's own unit embedding ``a(x)`` with the transfer. No label is read anywhere: the bank
holds ImageNet's 1,000 synset names and the training images' features, and zero-shot label text is only
compared with ``z(x)``. The settings were chosen on validation sets (docs/aligner.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polymodal.core.checkpoint import load_weights_and_metadata, save_weights
from polymodal.errors import CheckpointError, ConfigError, ShapeError
from polymodal.towers.imagenet import ImageNetClass, imagenet_class_table

TRANSFER_FILE = "transfer.safetensors"


@dataclass(frozen=True)
class TransferConfig:
    top_k: int = 10  # ConSE's T: the classes whose names are mixed (the tail only adds noise)
    gate_center: float = 0.55  # nearest-training-image cosine at which the two embeddings weigh the same
    gate_scale: float = 20.0  # how sharply the gate turns from the aligner (near) to the transfer (far)
    max_lemmas: int = 3  # synonyms per class taken from its WordNet lemma list ("tabby, tabby cat, ...")
    gate: str = "nearest"  # "nearest": the gate above; "always": the transfer alone (a baseline)

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.max_lemmas < 1:
            raise ConfigError(f"transfer: top_k and max_lemmas must be >= 1, got {self.top_k}, {self.max_lemmas}")
        if self.gate not in ("nearest", "always"):
            raise ConfigError(f"transfer: gate must be 'nearest' or 'always', got {self.gate!r}")
        if not -1 <= self.gate_center <= 1 or self.gate_scale < 0:
            raise ConfigError(f"transfer: gate_center must be in [-1, 1] and gate_scale >= 0, got "
                              f"{self.gate_center}, {self.gate_scale}")


def class_name_prompts(classes: Sequence[ImageNetClass], config: TransferConfig) -> list[list[str]]:
    """Per class, the prompts whose mean sentence embedding stands for it: each of its first lemmas in a
    photo prompt, and one sentence of its gloss with its nearest WordNet hypernym. On the validation
    photographs the gloss sentence raised transfer zero-shot from 0.53 to 0.64 over the lemmas alone."""
    out = []
    for c in classes:
        lemmas = [w.strip() for w in c.name.split(",") if w.strip()][: config.max_lemmas]
        prompts = [f"a photo of a {lemma}." for lemma in lemmas]
        kind = c.hypernyms[0] if c.hypernyms else "thing"
        gloss = c.gloss.split(";")[0].strip()
        prompts.append(f"{lemmas[0]}, a kind of {kind}: {gloss}." if gloss else f"{lemmas[0]}, a kind of {kind}.")
        out.append(prompts)
    return out


class ImageNetTransfer(nn.Module):
    """The ConSE embedding of pooled tower features and its nearest-neighbour gate (nothing trainable).

    Args:
        classifier: The tower's ImageNet head, (1000, F) weights; used read-only.
        names: (1000, S) unit sentence embeddings of the class names, in the text tower's space.
        reference: (N, F) pooled tower features of the aligner's training images (for the gate).
        config: T, the gate and the prompts the names were embedded with.
    """

    def __init__(self, classifier: nn.Linear, names: Tensor, reference: Tensor,
                 config: TransferConfig | None = None) -> None:
        super().__init__()
        if names.ndim != 2 or names.shape[0] != classifier.out_features:
            raise ShapeError(f"transfer: names must be ({classifier.out_features}, S), got {tuple(names.shape)}")
        if reference.ndim != 2 or reference.shape[1] != classifier.in_features or len(reference) == 0:
            raise ShapeError(f"transfer: reference must be (N>0, {classifier.in_features}), got {tuple(reference.shape)}")
        self.config = config or TransferConfig()
        self.classifier = classifier  # shared with the tower, not a copy; frozen like it
        self.register_buffer("names", names.float(), persistent=False)
        self.register_buffer("reference", F.normalize(reference.float(), dim=-1), persistent=False)
        self.names: Tensor
        self.reference: Tensor

    def probabilities(self, features: Tensor) -> Tensor:
        """(B, F) pooled features -> (B, 1000) ImageNet class probabilities."""
        return self.classifier(features).softmax(dim=-1)

    def nearest_similarity(self, features: Tensor) -> Tensor:
        """(B, F) pooled features -> (B, 1) cosine to the nearest training image."""
        sims = [F.normalize(features, dim=-1) @ chunk.T for chunk in self.reference.split(4096)]
        return torch.cat(sims, dim=-1).max(dim=-1, keepdim=True).values

    def gate(self, features: Tensor) -> Tensor:
        """(B, F) pooled features -> (B, 1) weight of the transfer embedding: near 1 far from the training images."""
        if self.config.gate == "always":
            return features.new_ones(len(features), 1)
        return torch.sigmoid(self.config.gate_scale * (self.config.gate_center - self.nearest_similarity(features)))

    def embed(self, probs: Tensor, text_head: Callable[[Tensor], Tensor]) -> Tensor:
        """(B, 1000) probabilities -> (B, D) unit ConSE embeddings in the joint space of ``text_head``."""
        top = probs.topk(min(self.config.top_k, probs.shape[-1]), dim=-1)  # (B, T)
        names = F.normalize(text_head(self.names), dim=-1)  # (1000, D)
        mixed = torch.einsum("bt,btd->bd", top.values, names[top.indices])  # Σ_k p_k e_k over the top T
        return F.normalize(mixed, dim=-1)

    def mix(self, aligned: Tensor, features: Tensor, text_head: Callable[[Tensor], Tensor]) -> Tensor:
        """The gated mixture of unit aligner embeddings (B, D) and the transfer embeddings of ``features``."""
        g = self.gate(features)
        return F.normalize((1 - g) * aligned + g * self.embed(self.probabilities(features), text_head), dim=-1)

    def with_settings(self, **changes: object) -> ImageNetTransfer:
        """The same bank with other settings (e.g. ``gate="always"`` for the transfer-alone baseline)."""
        return ImageNetTransfer(self.classifier, self.names, self.reference, replace(self.config, **changes))  # type: ignore[arg-type]

    # ---------------------------------------------------------------- files
    def save(self, path: str | Path) -> None:
        tensors = {"names": self.names, "reference": self.reference}
        save_weights(Path(path), {k: v.to(torch.float16).contiguous() for k, v in tensors.items()},
                     metadata={"format": "polymodal-transfer", "config": json.dumps(asdict(self.config))})

    @classmethod
    def load(cls, path: str | Path, classifier: nn.Linear) -> ImageNetTransfer:
        tensors, meta = load_weights_and_metadata(Path(path))
        if meta.get("format") != "polymodal-transfer" or not {"names", "reference"} <= set(tensors):
            raise CheckpointError(f"{path}: not a polymodal transfer bank")
        try:
            config = TransferConfig(**json.loads(meta.get("config", "{}")))
        except (TypeError, ValueError, ConfigError) as e:
            raise CheckpointError(f"{path}: bad transfer config ({e})") from None
        return cls(classifier, tensors["names"], tensors["reference"], config)


def build_transfer(
    classifier: nn.Linear,
    encode_sentences: Callable[[list[str]], Tensor],
    reference: Tensor,
    config: TransferConfig | None = None,
) -> ImageNetTransfer:
    """Embed the 1,000 class names once (``encode_sentences``: texts -> (N, S) sentence embeddings) and
    return the transfer module; each class is the unit mean of its prompts' unit embeddings.

    Args:
        classifier: The tower's ImageNet head.
        encode_sentences: The text tower up to (not including) the aligner's text head.
        reference: (N, F) pooled tower features of the training images.
        config: Transfer settings.
    """
    config = config or TransferConfig()
    prompts = class_name_prompts(imagenet_class_table(), config)
    flat = [p for ps in prompts for p in ps]
    emb = F.normalize(encode_sentences(flat).float(), dim=-1)
    rows, start = [], 0
    for ps in prompts:
        rows.append(F.normalize(emb[start : start + len(ps)].mean(dim=0), dim=-1))
        start += len(ps)
    return ImageNetTransfer(classifier, torch.stack(rows), reference, config)
