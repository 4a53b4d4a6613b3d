"""Image captioner: the EfficientNet-Lite0 feature grid as memory, a transformer decoder over words.

"Show, attend and tell" (Xu et al. 2015) with the recurrent decoder replaced by a transformer decoder
(Vaswani et al. 2017): each of the ``h*w`` cells of the frozen tower's last feature map ``(B, 1280, h, w)``
becomes one memory token (a linear projection to the decoder width plus a learned position embedding per
cell), and the words attend to them through encoder-decoder (cross) attention. The tower stays frozen,
so training runs on cached grids (:mod:`polymodal.caption.train`).

A model folder holds ``config.json`` (``kind: "captioner"``, the config and the tokenizer's words) and
``model.safetensors``; ``polymodal.save`` / ``polymodal.load`` write and read it (through
:func:`write_folder` / :func:`read_folder`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import Tensor, nn

from polymodal.core.checkpoint import load_weights, save_weights
from polymodal.data.pixels import ImagePreprocess
from polymodal.errors import CheckpointError, ConfigError, ShapeError
from polymodal.nn import LearnedPositionalEmbedding, TransformerDecoder
from polymodal.text import WordTokenizer
from polymodal.towers.efficientnet import EfficientNetLite0
from polymodal.towers.efficientnet_runner import EfficientNetLite0Runner
from polymodal.towers.preprocess import effnet_preprocess

if TYPE_CHECKING:
    from polymodal.caption.decode import Decoded

__all__ = ["KIND", "CaptionConfig", "Captioner", "extract_grids", "read_folder", "write_folder"]

KIND = "captioner"


@dataclass
class CaptionConfig:
    """Size of a :class:`Captioner`.

    Args:
        vocab_size: Token ids of the caption tokenizer (``WordTokenizer.vocab_size``).
        feature_dim: Channels of the image grid (1280 for EfficientNet-Lite0).
        grid_cells: Largest ``h*w`` of the grid (49 for 224-pixel inputs).
        dim: Decoder width.
        heads: Attention heads.
        depth: Decoder layers.
        max_length: Longest caption in tokens, ``<bos>`` and ``<eos>`` included.
        dropout: Dropout in the decoder and on the memory.
        image_size: Input side length the grid was computed at (recorded for inference).
    """

    vocab_size: int
    feature_dim: int = 1280
    grid_cells: int = 49
    dim: int = 128
    heads: int = 4
    depth: int = 2
    max_length: int = 16
    dropout: float = 0.1
    image_size: int = 224

    def __post_init__(self) -> None:
        for name in ("vocab_size", "feature_dim", "grid_cells", "dim", "heads", "depth"):
            if getattr(self, name) < 1:
                raise ConfigError(f"CaptionConfig.{name}: must be >= 1, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise ConfigError(f"CaptionConfig: dim {self.dim} is not divisible by heads {self.heads}")
        if self.max_length < 3:
            raise ConfigError(f"CaptionConfig.max_length: must be >= 3, got {self.max_length}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"CaptionConfig.dropout: must be in [0, 1), got {self.dropout}")


class Captioner(nn.Module):
    """Feature grid -> memory tokens -> causal transformer decoder -> next-word logits.

    Args:
        config: Sizes.
        tokenizer: The word vocabulary (kept with the model so a folder is self-contained).
    """

    kind = KIND

    def __init__(self, config: CaptionConfig, tokenizer: WordTokenizer) -> None:
        super().__init__()
        if tokenizer.vocab_size != config.vocab_size:
            raise ConfigError(
                f"Captioner: tokenizer has {tokenizer.vocab_size} ids, config.vocab_size is {config.vocab_size}"
            )
        self.config = config
        self.extra: dict[str, Any] = {}  # config.json entries besides the model's own (polymodal.save / load)
        self.tokenizer = tokenizer
        c = config
        self.memory_proj = nn.Sequential(nn.LayerNorm(c.feature_dim), nn.Linear(c.feature_dim, c.dim))
        self.memory_pos = nn.Parameter(torch.zeros(1, c.grid_cells, c.dim))
        nn.init.normal_(self.memory_pos, std=0.02)
        self.memory_drop = nn.Dropout(c.dropout)
        self.embed = nn.Embedding(c.vocab_size, c.dim, padding_idx=tokenizer.pad_id)
        # The embedding doubles as the output layer (tied below), so torch's N(0, 1) init would give
        # initial logits of std ~sqrt(dim) against the unit-variance final-norm output (a first-epoch
        # loss near 26 instead of ln V). GPT-2's N(0, 0.02) starts the decoder at uniform predictions.
        nn.init.normal_(self.embed.weight, std=0.02)
        with torch.no_grad():
            self.embed.weight[tokenizer.pad_id].zero_()
        self.pos = LearnedPositionalEmbedding(c.dim, c.max_length)
        self.decoder = TransformerDecoder(c.dim, c.heads, c.depth, dropout=c.dropout, norm_first=True)
        self.head = nn.Linear(c.dim, c.vocab_size, bias=False)
        self.head.weight = self.embed.weight  # weight tying (Press & Wolf 2017): fewer parameters, better LM

    @property
    def image_preprocess(self) -> ImagePreprocess:
        """How images enter the frozen tower whose grids this model reads (at the recorded ``image_size``)."""
        return effnet_preprocess(self.config.image_size)

    # ------------------------------------------------------------------ images to words
    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        """The frozen pretrained tower's ``(N, 1280, h, w)`` feature grids of PIL images, at ``config.image_size``.

        Args:
            images: PIL images.
        """
        return extract_grids(images, image_size=self.config.image_size, tower=_pretrained_tower())

    @torch.no_grad()
    def caption(self, images: Sequence[Image.Image], *, beam_size: int = 1, no_repeat_ngram_size: int = 2) -> Decoded:
        """Captions of PIL images (greedy with ``beam_size=1``, the best setting on val CIDEr-D).

        Args:
            images: PIL images.
            beam_size: Beam width.
            no_repeat_ngram_size: Forbid repeating n-grams of this size (0 = off).
        """
        from polymodal.caption.decode import beam_search  # (it imports this module)

        return beam_search(self, self.preprocess(images), beam_size=beam_size, no_repeat_ngram_size=no_repeat_ngram_size)

    # ------------------------------------------------------------------ pieces
    def memory(self, grid: Tensor) -> Tensor:
        """Memory tokens of a feature grid.

        Args:
            grid: ``(B, C, h, w)`` tower features, or already flattened ``(B, h*w, C)``.

        Returns:
            ``(B, h*w, dim)``.
        """
        if grid.dim() == 4:
            grid = grid.flatten(2).transpose(1, 2)  # (B, h*w, C)
        if grid.dim() != 3 or grid.shape[-1] != self.config.feature_dim:
            raise ShapeError(f"grid: expected (B, {self.config.feature_dim}, h, w), got {tuple(grid.shape)}")
        cells = grid.shape[1]
        if cells > self.config.grid_cells:
            raise ShapeError(f"grid: {cells} cells, the model knows {self.config.grid_cells}")
        return self.memory_drop(self.memory_proj(grid) + self.memory_pos[:, :cells])

    def _tokens(self, ids: Tensor, offset: int = 0) -> Tensor:
        if ids.shape[1] + offset > self.config.max_length:
            raise ShapeError(f"tokens: {ids.shape[1] + offset} positions, max_length is {self.config.max_length}")
        x = self.embed(ids)  # (B, T, D)
        return self.pos(x, offset=offset)

    def decode(self, memory: Tensor, ids: Tensor, *, key_padding_mask: Tensor | None = None) -> Tensor:
        """Logits ``(B, T, V)`` for every prefix of ``ids`` ``(B, T)`` (causal), given memory ``(B, S, D)``.

        Args:
            memory: From :meth:`memory`.
            ids: Token ids starting with ``<bos>``.
            key_padding_mask: Bool ``(B, T)``, ``True`` = padding.
        """
        h = self.decoder(self._tokens(ids), memory, causal=True, key_padding_mask=key_padding_mask)
        return self.head(h)

    def forward(self, grid: Tensor, ids: Tensor) -> Tensor:
        """Teacher-forced logits ``(B, T, V)``: position t predicts ``ids[:, t+1]``.

        Args:
            grid: ``(B, C, h, w)`` feature grids.
            ids: ``(B, T)`` token ids, ``<bos> ... <eos> <pad>...``.
        """
        pad = ids == self.tokenizer.pad_id
        return self.decode(self.memory(grid), ids, key_padding_mask=pad if pad.any() else None)

    @torch.no_grad()
    def cross_attention_maps(self, grid: Tensor, ids: Tensor) -> Tensor:
        """Encoder-decoder attention of each layer: ``(L, B, H, T, S)``; which grid cells each token reads.

        Args:
            grid: ``(B, C, h, w)``.
            ids: ``(B, T)`` ids of a (generated) caption starting with ``<bos>``.
        """
        memory = self.memory(grid)
        x = self._tokens(ids)
        maps = []
        for layer in self.decoder.layers:
            maps.append(layer.cross_attention_weights(x, memory, causal=True))  # type: ignore[operator]
            x = layer(x, memory, causal=True)
        return torch.stack(maps)


@lru_cache(maxsize=1)
def _pretrained_tower() -> EfficientNetLite0:
    return EfficientNetLite0.pretrained().eval()


@torch.no_grad()
def extract_grids(
    images: Sequence[Image.Image],
    *,
    image_size: int = 224,
    tower: EfficientNetLite0 | None = None,
    batch_size: int = 64,
) -> Tensor:
    """Frozen tower feature grids of PIL images.

    Args:
        images: PIL images.
        image_size: Input side (224 gives a 7x7 grid, 128 a 4x4 one).
        tower: The tower; defaults to the pretrained EfficientNet-Lite0.
        batch_size: Images per runner call.

    Returns:
        ``(N, 1280, h, w)`` float32.
    """
    tower = EfficientNetLite0.pretrained() if tower is None else tower
    runner = EfficientNetLite0Runner(tower, image_size=image_size)
    prep = effnet_preprocess(image_size)  # = Captioner.image_preprocess at this size
    try:
        out = [
            runner.forward_features(prep(images[i : i + batch_size]))
            for i in range(0, len(images), batch_size)
        ]
    finally:
        runner.close()
    if not out:
        raise ConfigError("extract_grids: no images")
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------------
# Folder (the "captioner" row of polymodal.models.build.KINDS: polymodal.save / polymodal.load)
# ---------------------------------------------------------------------------------------------------


def write_folder(model: Captioner, path: Path) -> dict[str, Any]:
    """Write ``path/model.safetensors`` (the tied output layer once); return the ``config.json`` entries.

    Args:
        model: The captioner.
        path: An existing folder.
    """
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k != "head.weight"}
    save_weights(path / "model.safetensors", state, metadata={"format": "polymodal"})
    return {"model": asdict(model.config), "tokenizer": model.tokenizer.to_dict()}


def read_folder(path: Path, cfg: dict[str, Any]) -> Captioner:
    """The captioner of a folder :func:`write_folder` wrote, given its parsed ``config.json``.

    Args:
        path: The folder.
        cfg: Its ``config.json``.

    Raises:
        CheckpointError: a config that does not parse, or weights that do not fit it.
    """
    try:
        model = Captioner(CaptionConfig(**cfg["model"]), WordTokenizer.from_dict(cfg["tokenizer"]))
    except KeyError as e:
        raise CheckpointError(f"{path / 'config.json'}: missing {e}") from None
    except (TypeError, ConfigError) as e:
        raise CheckpointError(f"{path / 'config.json'}: {e}") from None
    missing, unexpected = model.load_state_dict(load_weights(path / "model.safetensors"), strict=False)
    if unexpected or set(missing) - {"head.weight"}:
        raise CheckpointError(f"{path}/model.safetensors: missing {missing}, unexpected {unexpected}")
    return model
