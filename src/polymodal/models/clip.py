"""CLIP trained from scratch (Radford et al. 2021): a ViT image tower and a causal text transformer, both
projected into one joint space and trained with the symmetric InfoNCE loss at a learned temperature.

    image ─ preprocess ─ VisionTransformer ─ proj ─┐
                                                  ├─ cosine · exp(logit_scale)
    text  ─ tokenizer  ─ TextTransformer   ─ proj ─┘

The model speaks the trainer's *trunk protocol* (see :mod:`polymodal.train.fit`), so ``polymodal train
--preset clip-tiny`` runs the aligner's loop and evaluation unchanged. A from-scratch model has no frozen
part, so its "trunks" are only the deterministic input preparation, which the trainer caches per image
content and view: the normalised pixels (``image_trunk``) and the token ids (``text_trunk``).

The tokenizer is part of the model. ``tokenizer="bpe"``/``"wordpiece"`` learn one from the training
captions (:meth:`CLIP.fit_tokenizer`, called before the text trunks are computed); ``"clip"`` is CLIP's own
BPE and comes with a checkpoint (:mod:`polymodal.models.hf_clip`). ``polymodal.save`` writes it as
``tokenizer.json`` next to ``model.safetensors``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from polymodal.data.pixels import CLIP_MEAN, CLIP_STD, ImagePreprocess
from polymodal.errors import CheckpointError, ConfigError
from polymodal.models.aligner import Aligner, TextTrunk
from polymodal.text import HFTokenizer, TokenBatch, train_tokenizer
from polymodal.towers.text_transformer import TextTransformer, TextTransformerConfig
from polymodal.towers.vit import VisionTransformer, ViTConfig

# OpenAI CLIP's pixel statistics (its training set); from-scratch models keep them, any fixed choice works.
OPENAI_MEAN = CLIP_MEAN
OPENAI_STD = CLIP_STD
TOKENIZERS = ("bpe", "wordpiece", "clip")
TOKENIZER_FILE = "tokenizer.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"


@dataclass
class CLIPConfig:
    """A CLIP model: the two towers, the joint space and the tokenizer."""

    kind: str = "clip"
    embed_dim: int = 128  # width of the joint space
    vision: ViTConfig = field(default_factory=ViTConfig)
    text: TextTransformerConfig = field(default_factory=TextTransformerConfig)
    tokenizer: str = "bpe"  # "bpe"/"wordpiece": learned from the training captions; "clip": CLIP's BPE
    image_mean: tuple[float, float, float] = OPENAI_MEAN
    image_std: tuple[float, float, float] = OPENAI_STD
    init_temperature: float = 0.07  # CLIP's initial τ; logit_scale = log(1/τ)
    max_logit_scale: float = math.log(100.0)  # CLIP clamps exp(logit_scale) at 100
    autocast_bf16: bool = False  # run both towers under CPU bfloat16 autocast (features come back float32)

    def __post_init__(self) -> None:
        if self.kind != "clip":
            raise ConfigError(f"CLIPConfig.kind must be 'clip'; got {self.kind!r}")
        if isinstance(self.vision, dict):
            self.vision = ViTConfig.from_dict(self.vision)
        if isinstance(self.text, dict):
            self.text = TextTransformerConfig.from_dict(self.text)
        if self.embed_dim <= 0:
            raise ConfigError(f"CLIPConfig: embed_dim must be positive; got {self.embed_dim}")
        if self.tokenizer not in TOKENIZERS:
            raise ConfigError(f"CLIPConfig: tokenizer must be one of {TOKENIZERS}; got {self.tokenizer!r}")
        self.image_mean = tuple(float(v) for v in self.image_mean)  # type: ignore[assignment]
        self.image_std = tuple(float(v) for v in self.image_std)  # type: ignore[assignment]
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ConfigError("CLIPConfig: image_mean and image_std need 3 values each, std > 0")
        if not 0 < self.init_temperature < 1:
            raise ConfigError(f"CLIPConfig: init_temperature must be in (0, 1); got {self.init_temperature}")
        if self.max_logit_scale <= 0:
            raise ConfigError(f"CLIPConfig: max_logit_scale must be positive; got {self.max_logit_scale}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_mean"], d["image_std"] = list(self.image_mean), list(self.image_std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CLIPConfig:
        """Build from a (JSON) dict with nested ``vision`` and ``text`` dicts, refusing unknown keys.

        Args:
            d: Keys as the fields.
        """
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown clip config keys: {', '.join(unknown)}")
        d = dict(d)
        if isinstance(d.get("vision"), dict):
            d["vision"] = ViTConfig.from_dict(d["vision"])
        if isinstance(d.get("text"), dict):
            d["text"] = TextTransformerConfig.from_dict(d["text"])
        return cls(**d)


@dataclass
class CLIPOutput:
    """What :meth:`CLIP.forward` returns.

    Attributes:
        image_embeds: ``(B, E)`` L2-normalised image embeddings.
        text_embeds: ``(N, E)`` L2-normalised text embeddings.
        logits_per_image: ``(B, N)`` scaled cosine similarities; its transpose is per text.
    """

    image_embeds: Tensor
    text_embeds: Tensor
    logits_per_image: Tensor


class CLIP(nn.Module):
    """CLIP with a ViT image tower and a transformer text tower, trainable from scratch.

    Args:
        config: The architecture; defaults to :class:`CLIPConfig` ().
        tokenizer: A ready tokenizer (e.g. CLIP's BPE from a checkpoint); a trained one can also be set
            later by :meth:`fit_tokenizer`.
    """

    kind = "clip"  # its row of polymodal.models.build.KINDS

    def __init__(self, config: CLIPConfig | None = None, *, tokenizer: HFTokenizer | None = None) -> None:
        super().__init__()
        self.config = config = config or CLIPConfig()
        self.extra: dict[str, Any] = {}  # config.json entries besides the model's own (polymodal.save / load)
        self.visual = VisionTransformer(config.vision, output_dim=config.embed_dim)
        self.text = TextTransformer(config.text, output_dim=config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))
        self.tokenizer: HFTokenizer | None = None
        if tokenizer is not None:
            self.set_tokenizer(tokenizer)

    # ------------------------------------------------------------------------------------------ tokenizer
    def set_tokenizer(self, tokenizer: HFTokenizer) -> None:
        """Use ``tokenizer``; it must be of the configured kind and fit the token embedding.

        Args:
            tokenizer: The tokenizer.
        """
        expected = "clip-bpe" if self.config.tokenizer == "clip" else f"trained-{self.config.tokenizer}"
        if tokenizer.kind != expected:
            raise ConfigError(f"CLIP: config asks for a {expected} tokenizer; got {tokenizer.kind}")
        if tokenizer.vocab_size > self.config.text.vocab_size:
            raise ConfigError(
                f"CLIP: the tokenizer has {tokenizer.vocab_size} tokens; the text tower embeds "
                f"{self.config.text.vocab_size} (raise text.vocab_size)"
            )
        self.tokenizer = tokenizer

    def fit_tokenizer(self, texts: Sequence[str]) -> HFTokenizer:
        """Learn the tokenizer from the training captions (``tokenizer="bpe"`` or ``"wordpiece"``).

        Deterministic in the set of texts, so a resumed run learns the same one.

        Args:
            texts: The training captions.
        """
        if self.config.tokenizer == "clip":
            raise ConfigError("CLIP: a 'clip' tokenizer comes with a checkpoint; it is not learned")
        tok = train_tokenizer(texts, kind=self.config.tokenizer, vocab_size=self.config.text.vocab_size)
        self.set_tokenizer(tok)
        return tok

    def _tokenizer(self) -> HFTokenizer:
        if self.tokenizer is None:
            raise ConfigError(
                f"CLIP: no tokenizer yet; a '{self.config.tokenizer}' tokenizer is learned from the training "
                "captions: call model.fit_tokenizer(captions) first"
            )
        return self.tokenizer

    def save_assets(self, path: str | Path) -> None:
        """Write the tokenizer into the model folder (called by ``polymodal.save``): ``tokenizer.json`` and
        ``special_tokens_map.json`` naming its BOS, EOT and padding tokens.

        Args:
            path: The model folder.
        """
        tok = self.tokenizer
        if tok is None:
            return
        tok.save(Path(path) / TOKENIZER_FILE)
        special = {"bos_token": tok.bos_token, "eos_token": tok.eot_token, "pad_token": tok.pad_token}
        (Path(path) / SPECIAL_TOKENS_FILE).write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")

    def load_assets(self, path: str | Path) -> None:
        """Read the tokenizer written by :meth:`save_assets` (called by ``load``).

        Args:
            path: The model folder.
        """
        from polymodal.text import load_clip_tokenizer, load_trained_tokenizer

        folder = Path(path)
        if not (folder / TOKENIZER_FILE).is_file():
            raise CheckpointError(f"{folder}: missing {TOKENIZER_FILE} (the model's {self.config.tokenizer} tokenizer)")
        if self.config.tokenizer == "clip":
            tok = load_clip_tokenizer(folder)
        else:
            tok = load_trained_tokenizer(folder / TOKENIZER_FILE, kind=self.config.tokenizer)
        try:
            self.set_tokenizer(tok)
        except ConfigError as e:
            raise CheckpointError(f"{folder / TOKENIZER_FILE}: {e}") from None

    # ------------------------------------------------------------------------------------------ cache ids
    @property
    def image_trunk_id(self) -> str:
        """Names the cached image trunk output: the preprocessing, since the trunk is the pixels."""
        c = self.config
        mean = ",".join(f"{v:.6g}" for v in c.image_mean)
        std = ",".join(f"{v:.6g}" for v in c.image_std)
        return f"clip-pixels|size={c.vision.image_size}|bicubic-shorter-side+center-crop|mean={mean}|std={std}"

    @property
    def text_trunk_id(self) -> str:
        """Names the cached text trunk output: token ids of this tokenizer and context length."""
        return f"clip-token-ids|{self._tokenizer().tokenizer_id}|ctx={self.config.text.context_length}"

    # ------------------------------------------------------------------------------------------ image path
    def _autocast(self) -> AbstractContextManager[Any]:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.config.autocast_bf16)

    @property
    def image_preprocess(self) -> ImagePreprocess:
        """How this model turns images into pixels: transparency onto white, shorter side to the ViT's size
        (bicubic), centre crop, ``(x / 255 - image_mean) / image_std``."""
        c = self.config
        return ImagePreprocess.clip(c.vision.image_size, c.image_mean, c.image_std)

    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        """PIL images to normalised pixels ``(B, 3, S, S)``, by :attr:`image_preprocess`.

        Args:
            images: Any PIL images.
        """
        return self.image_preprocess(images)

    @torch.no_grad()
    def image_trunk(self, x: Tensor) -> Tensor:
        """The frozen part of a from-scratch model is empty: preprocessed pixels pass through.

        Args:
            x: ``(B, 3, S, S)`` from :meth:`preprocess`.
        """
        self.visual._check(x)
        return x

    def image_features(self, trunk_out: Tensor, *, normalize: bool = True) -> Tensor:
        """Pixels to joint-space image embeddings ``(B, E)``.

        Args:
            trunk_out: Pixels ``(B, 3, S, S)``.
            normalize: L2-normalise the embeddings.
        """
        with self._autocast():
            z = self.visual(trunk_out).float()
        return F.normalize(z, dim=-1) if normalize else z

    # ------------------------------------------------------------------------------------------ text path
    def tokenize(self, texts: Sequence[str | bytes]) -> TokenBatch:
        """Token ids and mask ``(B, T)``, ``T <= text.context_length``.

        Args:
            texts: Captions or label texts.
        """
        return self._tokenizer().encode(list(texts), max_length=self.config.text.context_length)

    @torch.no_grad()
    def text_trunk(self, tokens: TokenBatch) -> TextTrunk:
        """The text "trunk" is the token ids: ``hidden`` = ids ``(B, T)`` int64, ``mask`` ``(B, T)``.

        Args:
            tokens: From :meth:`tokenize`.
        """
        return TextTrunk(tokens.input_ids, tokens.attention_mask)

    def text_features(self, trunk: TextTrunk, *, normalize: bool = True) -> Tensor:
        """Token ids (right-padded, with mask) to joint-space text embeddings ``(B, E)``.

        Args:
            trunk: From :meth:`text_trunk`, or the trainer's collated cache entries.
            normalize: L2-normalise the embeddings.
        """
        with self._autocast():
            z = self.text(trunk.hidden, trunk.mask).float()
        return F.normalize(z, dim=-1) if normalize else z

    # ------------------------------------------------------------------------------------------ shared API
    # The user-facing calls are the aligner's, written against the trunk protocol; reuse them as they are.
    encode_image = Aligner.encode_image
    encode_text = Aligner.encode_text
    zeroshot = Aligner.zeroshot

    def scale(self) -> Tensor:
        """``exp(logit_scale)``, clamped at ``exp(max_logit_scale)`` as in CLIP."""
        return self.logit_scale.clamp(max=self.config.max_logit_scale).exp()

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Every parameter: nothing is frozen in a from-scratch model."""
        return {k: v.detach().clone() for k, v in self.named_parameters() if v.requires_grad}

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor | None = None) -> CLIPOutput:
        """Embed a batch of images and texts and score every pair.

        Args:
            images: Pixels ``(B, 3, S, S)``.
            input_ids: ``(N, T)`` token ids, right-padded.
            attention_mask: ``(N, T)``, 1 for tokens.
        """
        img = self.image_features(images)
        txt = self.text_features(TextTrunk(input_ids, attention_mask))
        return CLIPOutput(img, txt, self.scale() * img @ txt.T)

    # ------------------------------------------------------------------------------------------ attention
    @torch.no_grad()
    def attention_maps(self, images: Tensor | Sequence[Image.Image]) -> Tensor:
        """The image tower's self-attention weights per layer, ``(L, B, H, T, T)``.

        Token 0 is the class token when ``vision.pool == "cls"``; the others are patches in row-major
        order (see :func:`polymodal.towers.vit.patch_grid_attention` for per-patch maps).

        Args:
            images: Pixels ``(B, 3, S, S)`` or PIL images.
        """
        x = images if isinstance(images, Tensor) else self.preprocess(list(images))
        return self.visual.attention_maps(x)


__all__ = ["CLIP", "CLIPConfig", "CLIPOutput"]
