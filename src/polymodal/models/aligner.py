"""A CLIP-style dual encoder on two pretrained towers (the lecture's "vision+language → representation").

Image tower: EfficientNet-Lite0 (ImageNet). Text tower: all-MiniLM-L6-v2 (sentence embeddings). Each tower
is split into a *trunk*, which stays frozen and whose output the trainer caches, and a *top* of the last
``unlock_*`` blocks/layers, which trains together with the projection heads. ``unlock_*=0`` is LiT
(Zhai et al. 2022, "locked-image tuning"): the towers are frozen whole and only the heads learn.

    image ─ trunk (frozen, cached) ─ top (last N blocks) ─ pool ─ image_head ─┐
                                                                              ├─ cosine · exp(logit_scale)
    text  ─ trunk (frozen, cached) ─ top (last M layers) ─ mean pool ─ text_head ┘
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from polymodal.data.pixels import ImagePreprocess
from polymodal.errors import ConfigError
from polymodal.models.heads import ProjectionHead
from polymodal.models.prompts import DEFAULT_TEMPLATES, build_zeroshot_classifier
from polymodal.models.support import SUPPORT_FILE, SupportSet
from polymodal.models.transfer import TRANSFER_FILE, ImageNetTransfer
from polymodal.text import TokenBatch
from polymodal.towers.efficientnet import EfficientNetLite0
from polymodal.towers.efficientnet_runner import EfficientNetLite0Runner
from polymodal.towers.minilm import MiniLMTextTower
from polymodal.towers.preprocess import FITS, effnet_preprocess, preprocess_id

IMAGE_BLOCKS = 16  # MBConv blocks of EfficientNet-Lite0
IMAGE_DIM = 1280  # its pooled feature width
TEXT_LAYERS = 6  # transformer layers of all-MiniLM-L6-v2
TEXT_DIM = 384  # its hidden width


@dataclass
class AlignerConfig:
    kind: str = "aligner"
    embed_dim: int = 384  # = the text tower's width, so the text head can start as the identity
    image_size: int = 224  # EfficientNet-Lite0's native resolution
    image_fit: str = "crop"  # "crop": TF's centre crop; "pad": the whole image padded to a square (photos)
    max_text_length: int = 48  # tokens; OpenMoji captions with tags stay well under this
    unlock_image: int = 0  # last N of the 16 MBConv blocks that train (0: locked, LiT)
    unlock_text: int = 0  # last N of the 6 transformer layers that train
    image_head_hidden: int = 0  # 0: linear image head; >0: residual MLP of this width before it
    head_dropout: float = 0.0
    text_head_identity: bool = True  # start the joint space as the sentence space (keeps label-text semantics)
    init_temperature: float = 0.07  # CLIP's initial τ; logit_scale = log(1/τ)
    max_logit_scale: float = math.log(100.0)  # CLIP clamps exp(logit_scale) at 100

    def __post_init__(self) -> None:
        if self.kind != "aligner":
            raise ConfigError(f"AlignerConfig.kind must be 'aligner', got {self.kind!r}")
        if not 0 <= self.unlock_image <= IMAGE_BLOCKS:
            raise ConfigError(f"unlock_image must be in 0..{IMAGE_BLOCKS}, got {self.unlock_image}")
        if not 0 <= self.unlock_text <= TEXT_LAYERS:
            raise ConfigError(f"unlock_text must be in 0..{TEXT_LAYERS}, got {self.unlock_text}")
        if self.text_head_identity and self.embed_dim != TEXT_DIM:
            raise ConfigError(f"text_head_identity needs embed_dim == {TEXT_DIM}, got {self.embed_dim}")
        if self.embed_dim <= 0 or self.image_size < 32 or self.max_text_length < 4:
            raise ConfigError(f"bad sizes: embed_dim={self.embed_dim}, image_size={self.image_size}, "
                              f"max_text_length={self.max_text_length}")
        if self.image_fit not in FITS:
            raise ConfigError(f"image_fit must be one of {', '.join(FITS)}, got {self.image_fit!r}")
        if not 0 < self.init_temperature < 1:
            raise ConfigError(f"init_temperature must be in (0, 1), got {self.init_temperature}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlignerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown aligner config keys: {', '.join(unknown)}")
        return cls(**d)


@dataclass
class TextTrunk:
    """The frozen text trunk's output: hidden states (B, T, D) and mask, or pooled (B, D) when locked."""

    hidden: Tensor
    mask: Tensor | None


class Aligner(nn.Module):
    """CLIP-style dual encoder with a learnable temperature."""

    kind = "aligner"  # its row of polymodal.models.build.KINDS

    def __init__(self, config: AlignerConfig | None = None, *, pretrained: bool = True) -> None:
        super().__init__()
        self.config = config = config or AlignerConfig()
        self.extra: dict[str, Any] = {}  # config.json entries besides the model's own (polymodal.save / load)
        self.image_tower = EfficientNetLite0.pretrained() if pretrained else EfficientNetLite0()
        self.text_tower = MiniLMTextTower.pretrained() if pretrained else MiniLMTextTower()
        self.image_head = ProjectionHead(
            IMAGE_DIM, config.embed_dim, hidden=config.image_head_hidden, dropout=config.head_dropout
        )
        self.text_head = ProjectionHead(TEXT_DIM, config.embed_dim, identity_init=config.text_head_identity)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))
        self.image_split = IMAGE_BLOCKS - config.unlock_image
        self.text_split = TEXT_LAYERS - config.unlock_text
        self._freeze_trunks()
        # The training pairs' embeddings, set after training and saved beside the weights; zero-shot
        # mixes label text with the images of its nearest training captions (polymodal.models.support).
        self.support: SupportSet | None = None
        # ImageNet transfer (models/transfer.py), set after training and saved beside the weights: each
        # image embedding is gated between the trained head and the ConSE embedding of its ImageNet classes.
        self.transfer: ImageNetTransfer | None = None

    # ---------------------------------------------------------------- freezing
    def _freeze_trunks(self) -> None:
        for p in self.image_tower.parameters():
            p.requires_grad_(False)
        for p in self.text_tower.parameters():
            p.requires_grad_(False)
        if self.config.unlock_image:
            for block in self.image_tower._blocks[self.image_split :]:
                block.requires_grad_(True)
            self.image_tower._conv_head.requires_grad_(True)
            self.image_tower._bn1.requires_grad_(True)
        if self.config.unlock_text:
            for layer in self.text_tower.encoder.layer[self.text_split :]:
                layer.requires_grad_(True)
                # softmax(q·(W_k x + b_k)) = softmax(q·W_k x + q·b_k): the bias adds the same q·b_k to every
                # key's score, so its gradient is zero in exact arithmetic. Training it would only let
                # Adam turn rounding noise into lr-sized steps.
                layer.attention.self.key.bias.requires_grad_(False)  # type: ignore[union-attr]

    def train(self, mode: bool = True) -> Aligner:
        super().train(mode)
        # BatchNorm statistics stay at their ImageNet values: a few thousand emoji in small batches would
        # wreck them, and the cached trunk features were computed with them.
        for m in self.image_tower.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        # Dropout inside the pretrained towers stays off so cached trunk outputs match a live forward.
        self.image_tower.eval()
        self.text_tower.eval()
        return self

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The parameters that training changes: heads, temperature and unlocked tower parts."""
        return {k: v.detach().clone() for k, v in self.named_parameters() if v.requires_grad}

    # ---------------------------------------------------------------- files besides the weights
    def save_assets(self, path: str | Path) -> None:
        """Write the support set and the transfer bank, where there are (called by ``polymodal.save``)."""
        for name, asset in ((SUPPORT_FILE, self.support), (TRANSFER_FILE, self.transfer)):
            target = Path(path) / name
            if asset is not None:
                asset.save(target)
            elif target.exists():  # a stale file would not match these weights
                target.unlink()

    def load_assets(self, path: str | Path) -> None:
        """Read the files written by :meth:`save_assets` (called by ``polymodal.load``)."""
        f = Path(path) / SUPPORT_FILE
        self.support = SupportSet.load(f) if f.is_file() else None
        f = Path(path) / TRANSFER_FILE
        self.transfer = ImageNetTransfer.load(f, self.image_tower._fc) if f.is_file() else None

    def with_transfer(self, transfer: ImageNetTransfer | None) -> Aligner:
        """A view of this model that shares every weight but mixes images with another transfer bank (or
        none): the baselines "aligner alone" and "ImageNet transfer alone" without a second model."""
        view = copy.copy(self)
        view._modules = dict(self._modules)  # its own submodule table, so the original keeps its bank
        view.transfer = transfer
        return view

    # ---------------------------------------------------------------- ids for caches
    @property
    def image_trunk_id(self) -> str:
        prep = preprocess_id(self.config.image_size, self.config.image_fit)
        return f"effnet-lite0/imagenet|{prep}|split={self.image_split}"

    @property
    def text_trunk_id(self) -> str:
        return f"minilm-l6-v2|maxlen={self.config.max_text_length}|split={self.text_split}"

    # ---------------------------------------------------------------- image path
    @property
    def image_preprocess(self) -> ImagePreprocess:
        """How this model turns images into its input: the image tower's, at the configured size and fit."""
        return effnet_preprocess(self.config.image_size, self.config.image_fit)

    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        """Images to the image tower's input ``(B, 3, S, S)``, by :attr:`image_preprocess`."""
        return self.image_preprocess(images)

    def _runner(self) -> EfficientNetLite0Runner:
        # The fused inference runner snapshots the frozen trunk's weights once (BN folded, oneDNN
        # kernels): it computes the same activations 2-4x faster than eager PyTorch on a CPU.
        if getattr(self, "_trunk_runner", None) is None:
            self._trunk_runner = EfficientNetLite0Runner(self.image_tower, image_size=self.config.image_size)
        return self._trunk_runner

    @torch.no_grad()
    def image_trunk(self, x: Tensor) -> Tensor:
        """Frozen part: (B, 3, H, W) -> (B, 1280) pooled when locked, else (B, C, h, w) block activations."""
        if self.config.unlock_image == 0:
            return self._runner().embed(x)
        return self._runner().stem_and_blocks(x, end=self.image_split)

    def image_top(self, h: Tensor) -> Tensor:
        """Trainable part of the image tower: trunk output -> (B, 1280) pooled features."""
        if self.config.unlock_image == 0:
            return h
        # Channels-last (NHWC) activations let oneDNN pick faster convolution kernels on a CPU: a demo
        # training step (last block + head, forward and backward) takes ~1.2 s instead of ~1.5 s.
        h = h.contiguous(memory_format=torch.channels_last)
        grid = self.image_tower.blocks_and_head(h, start=self.image_split)  # (B, 1280, h', w')
        return grid.mean(dim=(2, 3))

    def image_features(self, trunk_out: Tensor, *, normalize: bool = True) -> Tensor:
        """Trunk output -> (B, embed_dim); with a transfer bank, the gated mix of the head's and the
        ImageNet-transfer embeddings (always unit norm then)."""
        pooled = self.image_top(trunk_out)
        z = self.image_head(pooled)
        if self.transfer is not None:
            return self.transfer.mix(F.normalize(z, dim=-1), pooled, self.text_head)
        return F.normalize(z, dim=-1) if normalize else z

    def sentence_features(self, trunk: TextTrunk) -> Tensor:
        """(B, 384) sentence embeddings before the text head: what the transfer bank's names are."""
        return self.text_top(trunk)

    def encode_image(
        self, images: Tensor | Sequence[Image.Image], *, normalize: bool = True, batch_size: int = 64
    ) -> Tensor:
        """Embed images: a preprocessed (B, 3, H, W) tensor or a list of PIL images. Returns (B, embed_dim)."""
        if isinstance(images, Tensor):
            return self.image_features(self.image_trunk(images), normalize=normalize)
        out = [
            self.image_features(self.image_trunk(self.preprocess(images[i : i + batch_size])), normalize=normalize)
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(out) if out else torch.empty(0, self.config.embed_dim)

    # ---------------------------------------------------------------- text path
    def tokenize(self, texts: Sequence[str]) -> TokenBatch:
        return self.text_tower.tokenize(list(texts), max_length=self.config.max_text_length)

    @torch.no_grad()
    def text_trunk(self, tokens: TokenBatch) -> TextTrunk:
        """Frozen part: (B, 384) pooled when locked, else hidden states after the frozen layers."""
        h = self.text_tower.embed_tokens(tokens.input_ids)
        h = self.text_tower.run_layers(h, tokens.attention_mask, start=0, end=self.text_split)
        if self.config.unlock_text == 0:
            return TextTrunk(self.text_tower.mean_pool(h, tokens.attention_mask), None)
        return TextTrunk(h, tokens.attention_mask)

    def text_top(self, trunk: TextTrunk) -> Tensor:
        if self.config.unlock_text == 0:
            return trunk.hidden
        assert trunk.mask is not None
        h = self.text_tower.run_layers(trunk.hidden, trunk.mask, start=self.text_split, end=TEXT_LAYERS)
        return self.text_tower.mean_pool(h, trunk.mask)

    def text_features(self, trunk: TextTrunk, *, normalize: bool = True) -> Tensor:
        z = self.text_head(self.text_top(trunk))
        return F.normalize(z, dim=-1) if normalize else z

    def encode_text(self, texts: Sequence[str], *, normalize: bool = True, batch_size: int = 256) -> Tensor:
        """Embed texts. Returns (N, embed_dim)."""
        out = [
            self.text_features(self.text_trunk(self.tokenize(texts[i : i + batch_size])), normalize=normalize)
            for i in range(0, len(texts), batch_size)
        ]
        return torch.cat(out) if out else torch.empty(0, self.config.embed_dim)

    # ---------------------------------------------------------------- scoring
    def scale(self) -> Tensor:
        """exp(logit_scale), clamped as in CLIP so the temperature cannot collapse."""
        return self.logit_scale.clamp(max=self.config.max_logit_scale).exp()

    @torch.no_grad()
    def zeroshot(
        self,
        images: Tensor | Sequence[Image.Image],
        labels: Sequence[str],
        *,
        templates: Sequence[str] | None = None,
        support: bool = True,
    ) -> list[list[tuple[str, float]]]:
        """Zero-shot prediction from label text: per image, (label, probability) pairs, best first.

        Args:
            images: Preprocessed (B, 3, H, W) images or PIL images.
            labels: The class texts.
            templates: Prompts with ``{c}``; default the emoji templates, prompt-ensembled.
            support: Mix each label's prompt ensemble with the images of its nearest training captions
                (SuS-X style, :class:`~polymodal.models.support.SupportSet`) when the model has a support set.
        """
        if not labels:
            raise ConfigError("zeroshot needs at least one label")
        was_training = self.training
        self.eval()
        classifier = build_zeroshot_classifier(
            lambda t: self.encode_text(t), list(labels), list(templates or DEFAULT_TEMPLATES)
        )  # (D, C)
        bank = getattr(self, "support", None)  # CLIP shares this method and has no support set
        if support and bank is not None:
            classifier = bank.augment_text(classifier.T).T  # (D, C), unit columns
        probs = (self.scale() * self.encode_image(images) @ classifier).softmax(dim=-1)
        self.train(was_training)
        out = []
        for row in probs.tolist():
            order = sorted(range(len(labels)), key=lambda j: -row[j])
            out.append([(labels[j], float(row[j])) for j in order])
        return out
