"""polymodal.text: the one tokenizer package.

Every tokenizer implements :class:`TextTokenizer` (``encode(texts, *, max_length) -> TokenBatch``,
``decode``, ``vocab_size``, ``pad_id``) and follows the same rules for bad bytes, truncation and padding
(:mod:`polymodal.text.batch`):

- :class:`HFTokenizer`: a Hugging Face ``tokenizers`` pipeline; CLIP's BPE (:func:`load_clip_tokenizer`),
  tokenizers learned from captions (:func:`train_tokenizer`), or any ``tokenizer.json`` such as MiniLM's
  WordPiece (:func:`load_hf_tokenizer`);
- :class:`WordTokenizer`: a word-level vocabulary built from a corpus.

Data-layer code never imports this package: it takes a ``texts -> TokenBatch`` callable such as
:class:`Tokenize`.
"""

from polymodal.text.batch import CleanText, TextStats, TokenBatch, clean_text, clean_texts, pack
from polymodal.text.clip_bpe import clip_backend, clip_tokenizer_from_json, load_clip_tokenizer
from polymodal.text.hf import HFTokenizer, load_hf_tokenizer, read_backend
from polymodal.text.protocol import SpecialTokenTokenizer, TextTokenizer, Tokenize
from polymodal.text.trained import load_trained_tokenizer, train_tokenizer, trained_tokenizer_from_json
from polymodal.text.word import WordTokenizer

__all__ = [
    "CleanText",
    "HFTokenizer",
    "SpecialTokenTokenizer",
    "TextStats",
    "TextTokenizer",
    "TokenBatch",
    "Tokenize",
    "WordTokenizer",
    "clean_text",
    "clean_texts",
    "clip_backend",
    "clip_tokenizer_from_json",
    "load_clip_tokenizer",
    "load_hf_tokenizer",
    "load_trained_tokenizer",
    "pack",
    "read_backend",
    "train_tokenizer",
    "trained_tokenizer_from_json",
]
