"""polymodal.nn: attention, positional encodings and transformer layers (the lecture's building blocks)."""

from polymodal.nn.additive_attention import AdditiveAttention, AttentionPooling
from polymodal.nn.attention import (
    AttentionOutput,
    KVCache,
    MultiHeadAttention,
    dot_product_attention,
    load_torch_mha_state,
)
from polymodal.nn.directional_context import DirectionalContext, directional_sums
from polymodal.nn.mlp import Mlp, QuickGELU, activation_layer
from polymodal.nn.positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding, sinusoidal_table
from polymodal.nn.sequence_classifier import (
    RNNAttentionClassifier,
    RNNClassifierConfig,
    SequenceClassifierOutput,
)
from polymodal.nn.torch_convert import (
    load_torch_decoder,
    load_torch_decoder_layer,
    load_torch_encoder,
    load_torch_encoder_layer,
)
from polymodal.nn.transformer import (
    DecoderCache,
    DecoderLayerCache,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)

__all__ = [
    "AdditiveAttention",
    "AttentionOutput",
    "AttentionPooling",
    "DecoderCache",
    "DecoderLayerCache",
    "DirectionalContext",
    "KVCache",
    "LearnedPositionalEmbedding",
    "Mlp",
    "MultiHeadAttention",
    "QuickGELU",
    "RNNAttentionClassifier",
    "RNNClassifierConfig",
    "SequenceClassifierOutput",
    "SinusoidalPositionalEncoding",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "activation_layer",
    "directional_sums",
    "dot_product_attention",
    "load_torch_decoder",
    "load_torch_decoder_layer",
    "load_torch_encoder",
    "load_torch_encoder_layer",
    "load_torch_mha_state",
    "sinusoidal_table",
]
