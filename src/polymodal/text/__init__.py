"""polymodal.text: tokenizers for the text towers trained here (CLIP's BPE, and ones learned from captions)."""

from polymodal.text.batch import TokenBatch, clean_text, pack
from polymodal.text.clip_bpe import clip_backend, clip_tokenizer_from_json, load_clip_tokenizer
from polymodal.text.tokenizer import Tokenizer, read_backend
from polymodal.text.trained import load_trained_tokenizer, train_tokenizer, trained_tokenizer_from_json

__all__ = [
    "TokenBatch",
    "Tokenizer",
    "clean_text",
    "clip_backend",
    "clip_tokenizer_from_json",
    "load_clip_tokenizer",
    "load_trained_tokenizer",
    "pack",
    "read_backend",
    "train_tokenizer",
    "trained_tokenizer_from_json",
]
