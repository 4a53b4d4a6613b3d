"""Queries against an index with the model that built it: text → image, image → image, image → text, zero-shot.

A :class:`Searcher` pairs an open :class:`~polymodal.search.index.SearchIndex` with a model and refuses
a model whose id differs from the index's, since vectors of two models live in unrelated spaces and the
results would be noise that looks like an answer. Text embeddings of recent queries and zero-shot
classifiers of recent label lists are cached (a server sees the same queries again and again).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from polymodal.data.images import DEFAULT_MAX_PIXELS, load_image
from polymodal.errors import ConfigError
from polymodal.search.index import Hit, ItemFilter, SearchIndex

MAX_LABELS = 512  # a zero-shot request with more labels than this is refused (each costs text-tower passes)
MAX_TEXT_CHARS = 1000


@dataclass
class TextHit:
    """One candidate text ranked for an image: its line number in the list, the text, cosine similarity."""

    id: int
    text: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LabelScore:
    """A zero-shot label and its probability (softmax over the given labels)."""

    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Searcher:
    """Search an index with its model.

    Args:
        index: the open index.
        model: a polymodal model whose ``model_id`` is the index's (``polymodal.load`` sets it).
        templates: prompt templates for zero-shot (default: polymodal.eval.templates.DEFAULT_TEMPLATES).
        cache_size: text queries whose embeddings are kept.

    Raises:
        ConfigError: the model is not the one that built the index (the message names both ids).
    """

    def __init__(self, index: SearchIndex, model: Any, *, templates: Sequence[str] | None = None,
                 cache_size: int = 1024, model_name: str = "the query model") -> None:
        index.check_model(getattr(model, "model_id", None), model_name=model_name)
        from polymodal.eval.templates import DEFAULT_TEMPLATES

        self.index = index
        self.model = model.eval()
        self.templates = list(templates or DEFAULT_TEMPLATES)
        self._cache_size = cache_size
        self._texts: OrderedDict[str, np.ndarray] = OrderedDict()
        self._classifiers: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()
        self._model_lock = threading.Lock()  # one forward pass at a time; torch already uses every core for one
        self._cache_lock = threading.Lock()  # cache hits never wait for a forward pass

    @classmethod
    def open(cls, index_dir: str | Path, model_dir: str | Path | None = None) -> Searcher:
        """Open ``index_dir`` and load its model: ``model_dir``, or the folder recorded at build time.

        Raises:
            ConfigError: no model folder is given and the recorded one does not exist, or the ids differ.
        """
        from polymodal.models.io import load

        index = SearchIndex.open(index_dir)
        chosen = model_dir or index.info.model_dir
        if chosen is None or not Path(chosen).is_dir():
            index.close()
            raise ConfigError(f"{index_dir}: the model folder recorded at build time ({chosen}) is not there; "
                              "pass --model DIR (the model that built the index)")
        try:
            return cls(index, load(chosen), model_name=f"the model {chosen}")
        except BaseException:
            index.close()
            raise

    # ------------------------------------------------------------- embeddings
    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32 unit vectors of texts, through the cache."""
        with self._cache_lock:
            found = {t: v for t in dict.fromkeys(texts) if (v := self._texts.get(t)) is not None}
            for t in found:
                self._texts.move_to_end(t)
        todo = [t for t in dict.fromkeys(texts) if t not in found]
        if todo:
            with self._model_lock, torch.no_grad():
                vecs = self.model.encode_text(todo, normalize=True).float().cpu().numpy()  # (U, D)
            fresh = dict(zip(todo, vecs))
            with self._cache_lock:
                for t, v in fresh.items():
                    self._texts[t] = v
                    if len(self._texts) > self._cache_size:
                        self._texts.popitem(last=False)
            found.update(fresh)
        if not texts:
            return np.zeros((0, self.index.dim), np.float32)
        return np.stack([found[t] for t in texts]).astype(np.float32)  # (N, D)

    def embed_image(self, image: Image.Image | str | Path | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """(1, D) float32 unit vector of one image (a PIL image, a file, or encoded bytes)."""
        im = image if isinstance(image, Image.Image) else load_image(image, max_pixels=max_pixels)
        with self._model_lock, torch.no_grad():
            return self.model.encode_image([im], normalize=True).float().cpu().numpy()

    # ------------------------------------------------------------- queries
    def by_text(self, text: str, *, k: int = 10, where: ItemFilter | None = None) -> list[Hit]:
        """Images for a sentence, best first."""
        text = _check_text(text)
        return self.index.search(self.embed_text([text]), k=k, where=where)[0]

    def by_image(self, image: Image.Image | str | Path | bytes, *, k: int = 10, where: ItemFilter | None = None) -> list[Hit]:
        """Images like this image, best first."""
        return self.index.search(self.embed_image(image), k=k, where=where)[0]

    def texts_for_image(self, image: Image.Image | str | Path | bytes, texts: Sequence[str], *, k: int = 10) -> list[TextHit]:
        """The candidate texts that fit the image best (cosine similarity), best first."""
        texts = [_check_text(t) for t in texts]
        if not texts:
            raise ConfigError("texts: expected at least one candidate text")
        q = self.embed_image(image)[0]  # (D,)
        scores = self.embed_text(texts) @ q  # (N,)
        order = np.argsort(-scores, kind="stable")[:k]
        return [TextHit(id=int(i), text=texts[i], score=float(scores[i])) for i in order]

    def zeroshot(self, image: Image.Image | str | Path | bytes, labels: Sequence[str] | None = None) -> list[LabelScore]:
        """Zero-shot label probabilities for an image, best first; ``labels`` default to the index's.

        Same computation as the model's own ``zeroshot`` (prompt-ensembled class embeddings, softmax of
        the scaled cosine similarities, CLIP sec. 3.1.4), with the classifier cached per label list.
        """
        names = _check_labels(labels if labels is not None else self.index.default_labels())
        w = self._classifier(tuple(names))  # (D, C)
        z = torch.from_numpy(self.embed_image(image))  # (1, D)
        with torch.no_grad():
            probs = (_logit_scale(self.model) * z @ w).softmax(dim=-1)[0].tolist()
        order = sorted(range(len(names)), key=lambda j: -probs[j])
        return [LabelScore(label=names[j], score=float(probs[j])) for j in order]

    def _classifier(self, names: tuple[str, ...]) -> torch.Tensor:
        from polymodal.eval.zeroshot import build_zeroshot_classifier, fill_template

        with self._cache_lock:
            cached = self._classifiers.get(names)
            if cached is not None:
                self._classifiers.move_to_end(names)
                return cached
        # One batched text pass over every prompt, then the shared classifier code on the results.
        prompts = list(dict.fromkeys(fill_template(t, c) for c in names for t in self.templates))
        with self._model_lock, torch.no_grad():
            emb = dict(zip(prompts, self.model.encode_text(prompts, normalize=True).float().cpu()))
        w = build_zeroshot_classifier(lambda ps: torch.stack([emb[p] for p in ps]), list(names), self.templates)
        with self._cache_lock:
            self._classifiers[names] = w
            if len(self._classifiers) > 32:
                self._classifiers.popitem(last=False)
        return w

    # ------------------------------------------------------------- lifecycle
    def reload_if_stale(self) -> bool:
        """Reopen the index if another process committed a newer generation; returns whether it did."""
        if not self.index.is_stale():
            return False
        fresh = SearchIndex.open(self.index.root)
        fresh.check_model(getattr(self.model, "model_id", None))
        # The old view is not closed here: a request in another thread may still be using it; its
        # connection closes when the last reference goes.
        self.index = fresh
        return True

    def close(self) -> None:
        self.index.close()


def _logit_scale(model: Any) -> torch.Tensor:
    """exp(logit_scale), clamped as the model clamps it (CLIP's 100 when the model has no scale at all)."""
    if hasattr(model, "scale"):
        return model.scale().detach().float()
    if hasattr(model, "logit_scale"):
        cap = getattr(getattr(model, "config", None), "max_logit_scale", None)
        s = model.logit_scale.detach().float()
        return (s if cap is None else s.clamp(max=cap)).exp()
    return torch.tensor(100.0)


def _check_text(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("query text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise ConfigError(f"query text is {len(text)} characters, over the limit of {MAX_TEXT_CHARS}")
    return text.strip()


def _check_labels(labels: Sequence[str]) -> list[str]:
    names = list(dict.fromkeys(s.strip() for s in labels if isinstance(s, str) and s.strip()))
    if not names:
        raise ConfigError("zero-shot needs at least one label (give labels, or build the index with --labels)")
    if len(names) > MAX_LABELS:
        raise ConfigError(f"{len(names)} labels, over the limit of {MAX_LABELS}")
    too_long = [s for s in names if len(s) > 200]
    if too_long:
        raise ConfigError(f"label {too_long[0][:40]!r}... is over 200 characters")
    return names
