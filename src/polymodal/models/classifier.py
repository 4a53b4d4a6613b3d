"""A multimodal classifier: an encoder per modality, a fusion module and a linear head, from a preset.

Presets live in ``src/polymodal/presets/fusion-*.json`` and ``vqa-*.json``. A model with one modality is
that modality's unimodal baseline (its fusion then only adds the MLP).

Training for missing modalities (used by :func:`polymodal.train.classifier_fit.fit_classifier`):

- ``modality_dropout`` with ``dropout_scheme="independent"``: each modality of each example is dropped
  with that probability, never all of them (ModDrop, Neverova et al. 2016);
- ``dropout_scheme="one"``: with that probability an example loses exactly one of its modalities, chosen
  uniformly, so with two modalities each unimodal case gets ``p / 2`` of the examples and the rest stay
  complete (the independent scheme with two modalities gives ``p (1 - p)`` each, and re-adds one of the
  ``p^2`` rows that lost both);
- ``aux_loss_weight``: a linear head on each encoder's pooled vector, trained with its own cross-entropy
  next to the fused one, so every encoder stays predictive alone and the dominant modality cannot
  starve the weak one of gradient (the unimodal auxiliary losses of Wang et al. 2020, "What Makes
  Training Multi-modal Classification Networks Hard?", and of "modality competition" work);
- ``unimodal_fallback`` (with auxiliary heads): an example with exactly one modality present is
  classified by that modality's auxiliary head instead of the fusion fed with missing embeddings. The
  auxiliary head learned from every example that has the modality, the fused path from the ``p / 2``
  dropped ones only; on avdigits validation the auxiliary audio head beat the fused audio-only path for
  early, late and tensor fusion (docs/fusion.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from polymodal.data.pixels import ImagePreprocess
from polymodal.errors import ConfigError, ShapeError
from polymodal.fusion import FUSIONS
from polymodal.models.classifier_encoders import (
    MODALITY_OF_ENCODER,
    AudioEncoder,
    AudioEncoderConfig,
    EncodedModality,
    EncoderConfig,
    ImageEncoder,
    ImageEncoderConfig,
    TextEncoder,
    TextEncoderConfig,
    VideoEncoder,
    VideoEncoderConfig,
    encoder_config_from_dict,
    encoder_config_to_dict,
)
from polymodal.models.classifier_inputs import ModalityInputs, featurize, raw_inputs

if TYPE_CHECKING:
    from polymodal.data.record import Record

__all__ = ["ClassifierConfig", "ClassifierOutput", "FusionConfig", "ModalityInputs", "MultimodalClassifier"]

DROPOUT_SCHEMES: tuple[str, ...] = ("independent", "one")


@dataclass(frozen=True)
class FusionConfig:
    """Which fusion and its width.

    Args:
        kind: a key of :data:`polymodal.fusion.FUSIONS`.
        dim: width of the fused vector.
        options: keyword arguments of the fusion class (``rank``, ``heads``, ``depth``, ...).
    """

    kind: str = "early"
    dim: int = 64
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in FUSIONS:
            raise ConfigError(f"unknown fusion kind {self.kind!r}; known: {', '.join(FUSIONS)}")
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim <= 0:
            raise ConfigError(f"fusion dim must be a positive int, got {self.dim!r}")


@dataclass(frozen=True)
class ClassifierConfig:
    """A multimodal classifier.

    Args:
        encoders: modality name ("image", "audio", "text", "video") -> encoder config.
        fusion: the fusion.
        labels: class names, in the order of the logits; filled in from the training data.
        modality_dropout: the modality dropout probability (see ``dropout_scheme``).
        head_dropout: dropout before the final linear layer.
        dropout_scheme: "independent" (each modality dropped with probability ``modality_dropout``, at
            least one kept) or "one" (with probability ``modality_dropout`` exactly one modality of the
            example is dropped, chosen uniformly).
        aux_loss_weight: weight of the auxiliary unimodal cross-entropies (one linear head per encoder);
            0 builds no auxiliary heads.
        unimodal_fallback: classify an example with exactly one modality present by that modality's
            auxiliary head (needs ``aux_loss_weight > 0``).
    """

    encoders: dict[str, EncoderConfig]
    fusion: FusionConfig = field(default_factory=FusionConfig)
    labels: tuple[str, ...] = ()
    modality_dropout: float = 0.0
    head_dropout: float = 0.0
    dropout_scheme: str = "independent"
    aux_loss_weight: float = 0.0
    unimodal_fallback: bool = False
    kind: str = "classifier"

    def __post_init__(self) -> None:
        if not self.encoders:
            raise ConfigError("classifier needs at least one encoder")
        for m, enc in self.encoders.items():
            want = MODALITY_OF_ENCODER.get(enc.kind)
            if want != m:
                raise ConfigError(f"encoder {enc.kind!r} encodes {want!r}, but is configured for modality {m!r}")
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError("classifier labels must be distinct")
        if not 0.0 <= self.modality_dropout < 1.0:
            raise ConfigError(f"modality_dropout must be in [0, 1), got {self.modality_dropout}")
        if self.modality_dropout > 0 and len(self.encoders) < 2:
            raise ConfigError("modality_dropout needs at least two modalities")
        if not 0.0 <= self.head_dropout < 1.0:
            raise ConfigError(f"head_dropout must be in [0, 1), got {self.head_dropout}")
        if self.dropout_scheme not in DROPOUT_SCHEMES:
            raise ConfigError(f"dropout_scheme must be one of {DROPOUT_SCHEMES}, got {self.dropout_scheme!r}")
        if not (isinstance(self.aux_loss_weight, (int, float)) and 0.0 <= self.aux_loss_weight):
            raise ConfigError(f"aux_loss_weight must be a number >= 0, got {self.aux_loss_weight!r}")
        if self.aux_loss_weight > 0 and len(self.encoders) < 2:
            raise ConfigError("aux_loss_weight needs at least two modalities (a unimodal model's head is already unimodal)")
        if not isinstance(self.unimodal_fallback, bool):
            raise ConfigError(f"unimodal_fallback must be true or false, got {self.unimodal_fallback!r}")
        if self.unimodal_fallback and self.aux_loss_weight <= 0:
            raise ConfigError("unimodal_fallback needs the auxiliary heads: set aux_loss_weight > 0")
        if self.fusion.kind == "cross_modal" and len(self.encoders) < 2:
            raise ConfigError("the cross_modal fusion needs at least two modalities")

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.encoders)

    def replace(self, **changes: Any) -> ClassifierConfig:
        import dataclasses

        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierConfig:
        """From a preset or a saved ``config.json`` ``model`` entry."""
        d = dict(d)
        d.pop("description", None)
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"classifier config: unknown fields {sorted(unknown)}")
        if not isinstance(d.get("encoders"), dict):
            raise ConfigError("classifier config needs 'encoders': {modality: {kind: ...}}")
        encoders = {m: encoder_config_from_dict(e) for m, e in d["encoders"].items()}
        fusion = d.get("fusion", {})
        if not isinstance(fusion, dict):
            raise ConfigError("classifier config 'fusion' must be an object")
        bad = set(fusion) - {"kind", "dim", "options"}
        if bad:
            raise ConfigError(f"fusion config: unknown fields {sorted(bad)}")
        return cls(
            encoders=encoders,
            fusion=FusionConfig(**fusion),
            labels=tuple(d.get("labels", ())),
            modality_dropout=float(d.get("modality_dropout", 0.0)),
            head_dropout=float(d.get("head_dropout", 0.0)),
            dropout_scheme=str(d.get("dropout_scheme", "independent")),
            aux_loss_weight=float(d.get("aux_loss_weight", 0.0)),
            unimodal_fallback=d.get("unimodal_fallback", False),
            kind=d.get("kind", "classifier"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "encoders": {m: encoder_config_to_dict(e) for m, e in self.encoders.items()},
            "fusion": {"kind": self.fusion.kind, "dim": self.fusion.dim, "options": dict(self.fusion.options)},
            "labels": list(self.labels),
            "modality_dropout": self.modality_dropout,
            "head_dropout": self.head_dropout,
            "dropout_scheme": self.dropout_scheme,
            "aux_loss_weight": self.aux_loss_weight,
            "unimodal_fallback": self.unimodal_fallback,
        }


@dataclass
class ClassifierOutput:
    """Fused logits and, when the model has auxiliary heads, each encoder's own logits.

    Args:
        logits: ``(B, num_classes)`` from the fusion.
        aux_logits: modality -> ``(B, num_classes)`` from that encoder alone (empty without auxiliary heads).
    """

    logits: Tensor
    aux_logits: dict[str, Tensor] = field(default_factory=dict)


def _build_encoder(config: EncoderConfig) -> nn.Module:
    if isinstance(config, ImageEncoderConfig):
        return ImageEncoder(config)
    if isinstance(config, AudioEncoderConfig):
        return AudioEncoder(config)
    if isinstance(config, TextEncoderConfig):
        return TextEncoder(config)
    if isinstance(config, VideoEncoderConfig):
        return VideoEncoder(config)
    raise ConfigError(f"no encoder for {type(config).__name__}")  # pragma: no cover - configs are checked


class MultimodalClassifier(nn.Module):
    """Encoders, a fusion module and a linear head.

    Args:
        config: the settings; ``config.labels`` must be set (the trainer fills it from the data).
    """

    kind = "classifier"  # its row of polymodal.models.build.KINDS

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        if not config.labels:
            raise ConfigError("classifier config has no labels; the trainer sets them from the training data")
        self.config = config
        self.extra: dict[str, Any] = {}  # config.json entries besides the model's own (polymodal.save / load)
        self.encoders = nn.ModuleDict({m: _build_encoder(e) for m, e in config.encoders.items()})
        dims = {m: e.dim for m, e in config.encoders.items()}
        self.fusion = FUSIONS[config.fusion.kind](dims, config.fusion.dim, **config.fusion.options)
        self.head = nn.Sequential(nn.GELU(), nn.Dropout(config.head_dropout), nn.Linear(config.fusion.dim, len(config.labels)))
        # Auxiliary unimodal heads exist only when trained (aux_loss_weight > 0), so older saved models
        # and unimodal models keep exactly their parameters.
        self.aux_heads = nn.ModuleDict(
            {m: nn.Linear(d, len(config.labels)) for m, d in dims.items()} if config.aux_loss_weight > 0 else {}
        )

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.config.modalities

    @property
    def image_preprocess(self) -> ImagePreprocess | None:
        """How images enter the image encoder (``None`` for a model without one)."""
        enc = self.config.encoders.get("image")
        return enc.image_preprocess if isinstance(enc, ImageEncoderConfig) else None

    def labels(self) -> tuple[str, ...]:
        """The class names, in the order of the logits."""
        return self.config.labels

    def preprocess(self, records: Sequence[Record], *, require_all: bool | None = None) -> ModalityInputs:
        """Model inputs of ``records``: images resized, log-mels, word ids by the model's own vocabularies.

        Args:
            records: the examples.
            require_all: see :func:`polymodal.models.classifier_inputs.raw_inputs`.
        """
        return featurize(self.config, raw_inputs(self.config, records, require_all=require_all))

    def encode(self, inputs: ModalityInputs) -> dict[str, EncodedModality]:
        """Each modality's tokens; absent rows are encoded too (their zeros) and replaced by the fusion."""
        missing = [m for m in self.modalities if m not in inputs.values]
        if missing:
            raise ShapeError(f"inputs lack modalities {missing}; the model uses {list(self.modalities)}")
        out = {}
        for m, enc in self.encoders.items():
            if m == "audio":
                out[m] = enc(inputs.values[m], inputs.audio_lengths)
            else:
                out[m] = enc(inputs.values[m])
        return out

    def forward(self, inputs: ModalityInputs) -> Tensor:
        """Logits ``(B, num_classes)``."""
        return self.forward_all(inputs, aux=False).logits

    def forward_all(self, inputs: ModalityInputs, *, aux: bool = True, fallback: bool | None = None) -> ClassifierOutput:
        """Logits and (with ``aux`` and auxiliary heads) each encoder's own logits.

        With ``config.unimodal_fallback`` the logits of a row with exactly one modality present are that
        modality's auxiliary head's.

        Args:
            inputs: the batch.
            aux: return the auxiliary heads' logits too (for their training loss).
            fallback: apply the unimodal fallback; ``None``: ``config.unimodal_fallback``. The trainer
                passes ``False``, so the fused path still learns from the rows with a modality dropped.
        """
        encoded = self.encode(inputs)
        # token fusions (cross-modal attention) take the sequences, vector fusions the pooled vectors
        features = {m: e.tokens if self.fusion.uses_tokens else e.pooled for m, e in encoded.items()}
        masks = {m: e.mask for m, e in encoded.items()}
        present = {m: inputs.present[m] for m in self.modalities}
        logits = self.head(self.fusion(features, present, masks))
        fallback = self.config.unimodal_fallback if fallback is None else fallback
        aux_logits = {m: self.aux_heads[m](encoded[m].pooled) for m in self.aux_heads} if aux or fallback else {}
        if fallback:
            count = torch.stack([present[m] for m in self.modalities], dim=1).sum(dim=1)  # (B,) modalities present
            for m, a in aux_logits.items():
                alone = (present[m] & (count == 1))[:, None]  # (B, 1)
                logits = torch.where(alone, a, logits)
        return ClassifierOutput(logits, aux_logits if aux else {})

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Every parameter (the whole model is trained); what ``polymodal.save`` writes."""
        return {k: v.detach() for k, v in self.named_parameters()}


def missing_modality_dropout(
    present: Mapping[str, Tensor], p: float, generator: torch.Generator | None = None, *, scheme: str = "independent"
) -> dict[str, Tensor]:
    """Drop modalities of training rows, never every modality of a row.

    Args:
        present: ``(B,)`` bool per modality.
        p: drop probability.
        generator: random stream.
        scheme: "independent": each modality of each row is dropped with probability ``p`` (a row left
            with nothing gets one of its modalities back); "one": with probability ``p`` a row with at
            least two modalities loses exactly one of them, chosen uniformly.
    """
    if scheme not in DROPOUT_SCHEMES:
        raise ConfigError(f"modality dropout scheme must be one of {DROPOUT_SCHEMES}, got {scheme!r}")
    if scheme == "one":
        return _drop_one(present, p, generator)
    names = list(present)
    keep = torch.stack([present[m] for m in names], dim=1)  # (B, M)
    drop = torch.rand(keep.shape, generator=generator) < p
    new = keep & ~drop.to(keep.device)
    # a row left with nothing gets back one of its originally present modalities, chosen at random
    empty = ~new.any(dim=1)
    if bool(empty.any()):
        scores = torch.rand(keep.shape, generator=generator).to(keep.device).masked_fill(~keep, -1.0)
        pick = scores.argmax(dim=1)
        restore = torch.zeros_like(new)
        restore[torch.arange(len(pick)), pick] = True
        new = new | (restore & empty[:, None])
    return {m: new[:, i] for i, m in enumerate(names)}


def _drop_one(present: Mapping[str, Tensor], p: float, generator: torch.Generator | None) -> dict[str, Tensor]:
    """With probability ``p``, drop one uniformly chosen present modality of each row that has >= 2."""
    names = list(present)
    keep = torch.stack([present[m] for m in names], dim=1)  # (B, M)
    hit = torch.rand(keep.shape[0], generator=generator).to(keep.device) < p
    hit &= keep.sum(dim=1) >= 2
    # uniform over the row's present modalities: the argmax of random scores with absent ones masked out
    scores = torch.rand(keep.shape, generator=generator).to(keep.device).masked_fill(~keep, -1.0)
    drop = torch.zeros_like(keep)
    drop[torch.arange(keep.shape[0]), scores.argmax(dim=1)] = True
    new = keep & ~(drop & hit[:, None])
    return {m: new[:, i] for i, m in enumerate(names)}
