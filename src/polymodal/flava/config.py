"""Configuration of the FLAVA-style model and of its pretraining (sizes, masking, loss weights).

Two validated dataclasses: :class:`FlavaConfig` is the architecture (saved with the weights in
``config.json``), :class:`PretrainConfig` the pretraining recipe, including the weight of each objective in
the weighted sum (Singh et al. 2022, sec. 3.2); a weight of 0 turns that objective off, which is how the
ablation removes one objective at a time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from polymodal.errors import ConfigError

OBJECTIVES: tuple[str, ...] = ("mlm", "mim", "mmm", "itm", "contrastive")


def _from_dict(cls: Any, d: dict[str, Any], owner: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{owner}: expected a dict, got {type(d).__name__}")
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise ConfigError(f"{owner}: unknown keys {unknown}")
    return cls(**d)


@dataclass
class FlavaConfig:
    """Shape of a :class:`~polymodal.flava.model.FlavaModel`.

    Args:
        vocab_size: token ids of the tokenizer; the text embedding has one more row, the [MASK] token
            (id ``vocab_size``), so any tokenizer works unchanged.
        max_text_length: longest token sequence the tokenizer emits (its specials included).
        image_size: input side in pixels (a multiple of ``patch_size``).
        patch_size: side of a square patch.
        channels: image channels.
        width: token width ``D`` of all three encoders.
        heads: attention heads.
        image_layers: image encoder depth.
        text_layers: text encoder depth.
        multimodal_layers: multimodal encoder depth.
        mlp_ratio: MLP hidden width over ``width``.
        dropout: dropout in the encoders.
        embed_dim: width of the joint contrastive space.
        init_temperature: contrastive temperature at initialisation (CLIP/FLAVA: 0.07).
    """

    vocab_size: int
    max_text_length: int = 16
    image_size: int = 32
    patch_size: int = 4
    channels: int = 3
    width: int = 128
    heads: int = 4
    image_layers: int = 2
    text_layers: int = 2
    multimodal_layers: int = 2
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    embed_dim: int = 64
    init_temperature: float = 0.07

    def __post_init__(self) -> None:
        for name in (
            "vocab_size", "max_text_length", "image_size", "patch_size", "channels", "width", "heads",
            "image_layers", "text_layers", "multimodal_layers", "embed_dim",
        ):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"FlavaConfig.{name}: must be a positive int, got {value!r}")
        if self.vocab_size < 2:
            raise ConfigError(f"FlavaConfig.vocab_size: must be >= 2, got {self.vocab_size}")
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"FlavaConfig: image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})"
            )
        if self.width % self.heads:
            raise ConfigError(f"FlavaConfig: width ({self.width}) must be a multiple of heads ({self.heads})")
        if not self.mlp_ratio > 0:
            raise ConfigError(f"FlavaConfig.mlp_ratio: must be > 0, got {self.mlp_ratio}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"FlavaConfig.dropout: must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.init_temperature < 1.0:
            raise ConfigError(f"FlavaConfig.init_temperature: must be in (0, 1), got {self.init_temperature}")

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Patches per image ``N``."""
        return self.grid**2

    @property
    def patch_dim(self) -> int:
        """Pixels per patch ``K = P * P * C`` (the MIM head's output width)."""
        return self.patch_size**2 * self.channels

    @property
    def mask_token_id(self) -> int:
        """Id of the [MASK] token: the extra embedding row after the tokenizer's ids."""
        return self.vocab_size

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlavaConfig:
        """Build from a dict, refusing unknown keys.

        Args:
            d: keys as the fields.
        """
        return _from_dict(cls, d, "FlavaConfig")


@dataclass
class PretrainConfig:
    """Pretraining recipe: optimisation, masking and the weight of each objective.

    Args:
        epochs: passes over the image-caption pairs.
        batch_size: pairs per step (also the pool hard negatives are mined from).
        lr: peak AdamW learning rate (linear warm-up, cosine decay).
        weight_decay: AdamW weight decay (not on biases, norms, embeddings tokens).
        warmup_fraction: share of the steps spent warming up.
        text_mask_prob: BERT's selection probability for MLM and MMM.
        image_mask_ratio: fraction of patches masked for MIM and MMM (BEiT/FLAVA: about 0.4).
        mlm: weight of masked language modelling.
        mim: weight of masked image modelling.
        mmm: weight of masked multimodal modelling (its text and image parts weigh the same).
        itm: weight of image-text matching.
        contrastive: weight of the global contrastive loss.
        max_logit_scale: clamp of the learned contrastive scale (CLIP: log 100).
        seed: seeds the initialisation, shuffling, caption choice and masks.
        log_every: steps between progress lines (0 = silent).
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05
    text_mask_prob: float = 0.15
    image_mask_ratio: float = 0.4
    mlm: float = 1.0
    mim: float = 1.0
    mmm: float = 1.0
    itm: float = 1.0
    contrastive: float = 1.0
    max_logit_scale: float = 4.6052
    seed: int = 0
    log_every: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"PretrainConfig.{name}: must be a positive int, got {value!r}")
        if self.batch_size < 2:
            raise ConfigError(
                "PretrainConfig.batch_size: contrastive pairs and hard negatives need at least 2"
            )
        if not self.lr > 0 or self.weight_decay < 0:
            raise ConfigError(
                f"PretrainConfig: lr must be > 0 and weight_decay >= 0; got {self.lr}, {self.weight_decay}"
            )
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(
                f"PretrainConfig.warmup_fraction: must be in [0, 1), got {self.warmup_fraction}"
            )
        if not 0.0 < self.text_mask_prob < 1.0 or not 0.0 < self.image_mask_ratio < 1.0:
            raise ConfigError(
                "PretrainConfig: text_mask_prob and image_mask_ratio must be in (0, 1); "
                f"got {self.text_mask_prob}, {self.image_mask_ratio}"
            )
        for name in OBJECTIVES:
            if not getattr(self, name) >= 0:
                raise ConfigError(
                    f"PretrainConfig.{name}: a loss weight must be >= 0, got {getattr(self, name)}"
                )
        if not any(getattr(self, name) > 0 for name in OBJECTIVES):
            raise ConfigError(f"PretrainConfig: every loss weight is 0; turn on at least one of {OBJECTIVES}")
        if self.log_every < 0:
            raise ConfigError(f"PretrainConfig.log_every: must be >= 0, got {self.log_every}")

    @property
    def weights(self) -> dict[str, float]:
        """``{objective: weight}`` in :data:`OBJECTIVES` order."""
        return {name: float(getattr(self, name)) for name in OBJECTIVES}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainConfig:
        """Build from a dict, refusing unknown keys.

        Args:
            d: keys as the fields.
        """
        return _from_dict(cls, d, "PretrainConfig")
