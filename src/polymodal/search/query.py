"""Queries against an index with the model that built it: text → image, image → image, image → text, zero-shot.

A :class:`Searcher` pairs an open :class:`~polymodal.search.index.SearchIndex` with a model and refuses
a model whose id differs from the index's, since vectors of two models live in unrelated spaces and the
results would be noise that looks like an answer. Text embeddings of recent queries and the class vectors
of zero-shot labels are cached, per label, for as long as the searcher keeps its model (a server sees the
same queries and labels again and again, in ever new lists).

Model work runs in three lanes side by side, each one forward pass at a time: text queries, image
queries, and labels (prompt-ensembled class vectors, :data:`LABEL_BATCH` labels per pass). A request with
512 new labels or a large upload thus never holds up a text query, and no single pass grows with the
request. Concurrent text queries are micro-batched (:class:`TextBatcher`): the texts that arrive while the
text lane is busy, or within ``batch_wait`` seconds of the first, go through the text tower in one pass.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from polymodal.data.images import DEFAULT_MAX_PIXELS, load_image
from polymodal.embed import decode_size
from polymodal.errors import ConfigError, PolymodalError
from polymodal.search.index import Hit, ItemFilter, SearchIndex, chunks

MAX_LABELS = 512  # most labels a zero-shot request may name, and most new ones it may have embedded
MAX_TEXT_CHARS = 1000
LABEL_BATCH = 32  # labels per text-tower pass (x templates prompts): bounds one pass's time and memory
TEXT_BATCH = 32  # most query texts per micro-batched text-tower pass
TEXT_BATCH_WAIT = 0.002  # seconds the text lane waits for more queries after the first of a batch


class LabelsNotReady(PolymodalError):
    """More labels lack an embedding than one request may embed; they are being embedded in the background.

    Attributes:
        missing: labels without a cached embedding.
        total: labels asked for.
    """

    def __init__(self, missing: int, total: int) -> None:
        self.missing = missing
        self.total = total
        super().__init__(f"zero-shot labels are still being embedded: {total - missing} of {total} ready; "
                         "try again shortly")


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


class TextBatcher:
    """Micro-batching: concurrent callers' texts go through one ``encode`` call, in a thread of its own.

    A caller that finds the lane idle (no pass running, nobody waiting) encodes its texts itself, in its
    own thread: a lone client's query costs no hand-over. Otherwise it queues: the lane's thread takes the
    first waiting request, then every request that arrives before ``max_batch`` texts are gathered or
    ``wait`` seconds have passed, encodes their distinct texts in one pass and hands each caller its rows.
    It waits only while queries come concurrently (the previous pass served more than one request, or
    requests queued behind a caller's own pass). Rows do not depend on the batch (the text tower masks padding),
    so a caller gets what it would get alone. A request larger than ``max_batch`` runs on its own.

    :meth:`dedicate` turns the caller's own passes off: every pass runs in the lane's thread, set up once
    (a server keeps one warm OpenMP team there; :mod:`polymodal.core.threads`).

    Args:
        encode: texts -> (N, D) float32 rows.
        max_batch: most texts per pass.
        wait: seconds to wait for more requests after the first.
    """

    def __init__(self, encode: Callable[[list[str]], np.ndarray], *, max_batch: int = TEXT_BATCH,
                 wait: float = TEXT_BATCH_WAIT) -> None:
        if max_batch < 1 or wait < 0:
            raise ConfigError(f"TextBatcher: need max_batch >= 1 and wait >= 0, got {max_batch}, {wait}")
        self._encode = encode
        self.max_batch = max_batch
        self.wait = wait
        self._queue: deque[_TextRequest] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._concurrent = False  # the previous pass served more than one request
        self._busy = False  # a pass is running or being gathered (in the lane or in a caller)
        self._inline = True  # a caller that finds the lane idle runs its pass itself
        self._setup: Callable[[], None] | None = None  # run once in the lane's thread before its next pass
        self.passes = 0  # forward passes run (for tests and benchmarks)

    def dedicate(self, setup: Callable[[], None] | None = None) -> None:
        """From now on run every pass in the lane's own thread, calling ``setup()`` there once first."""
        with self._cond:
            self._inline = False
            self._setup = setup

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) rows of ``texts``, computed in the next pass of the lane together with other callers' texts."""
        req = _TextRequest(list(texts))
        with self._cond:
            if self._closed:
                raise RuntimeError("TextBatcher is closed")
            inline = self._inline and not self._busy and not self._queue
            if inline:
                self._busy = True
            else:
                self._queue.append(req)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="polymodal-text-lane", daemon=True)
                    self._thread.start()
                self._cond.notify()
        if inline:
            try:
                self._serve([req])
            finally:
                with self._cond:
                    self._busy = False
                    self._concurrent = bool(self._queue)  # they came while this pass ran
                    self._cond.notify_all()
        req.done.wait()
        if req.error is not None:
            raise req.error
        assert req.rows is not None
        return req.rows

    def close(self) -> None:
        """Stop the lane's thread once the waiting requests are served."""
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _next_batch(self) -> list[_TextRequest] | None:
        with self._cond:
            while not self._queue or self._busy:
                if self._closed and not self._queue:
                    return None
                self._cond.wait()
            self._busy = True
            batch = [self._queue.popleft()]
            size = len(batch[0].texts)
            deadline = time.monotonic() + (self.wait if self._concurrent else 0.0)
            while size < self.max_batch:
                if self._queue:
                    if size + len(self._queue[0].texts) > self.max_batch:
                        break
                    batch.append(self._queue.popleft())
                    size += len(batch[-1].texts)
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            self._concurrent = len(batch) > 1
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._serve(batch)
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def _serve(self, batch: list[_TextRequest]) -> None:
        """One pass over the distinct texts of ``batch``; each request gets its rows or the pass's error."""
        unique = list(dict.fromkeys(t for r in batch for t in r.texts))
        try:
            if self._setup is not None and threading.current_thread() is self._thread:
                setup, self._setup = self._setup, None
                setup()
            rows = dict(zip(unique, self._encode(unique)))
            self.passes += 1
            for r in batch:
                r.rows = np.stack([rows[t] for t in r.texts]) if r.texts else None
        except BaseException as e:  # handed to every caller of this pass; the lane goes on
            for r in batch:
                r.error = e
        for r in batch:
            r.done.set()


class _TextRequest:
    __slots__ = ("texts", "rows", "error", "done")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.rows: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class Searcher:
    """Search an index with its model.

    Args:
        index: the open index.
        model: a polymodal model whose ``model_id`` is the index's (``polymodal.load`` sets it).
        templates: prompt templates for zero-shot (default: polymodal.models.prompts.DEFAULT_TEMPLATES).
        cache_size: text queries whose embeddings are kept.
        label_cache_size: zero-shot labels whose class vectors are kept.
        batch_wait: seconds the text lane waits for concurrent queries to share a pass (0: only those
            that arrived while the previous pass ran).
        text_batch: most query texts per text-lane pass (1: one query per pass, no micro-batching).

    Raises:
        ConfigError: the model is not the one that built the index (the message names both ids).
    """

    def __init__(self, index: SearchIndex, model: Any, *, templates: Sequence[str] | None = None,
                 cache_size: int = 1024, label_cache_size: int = 8192, model_name: str = "the query model",
                 batch_wait: float = TEXT_BATCH_WAIT, text_batch: int = TEXT_BATCH) -> None:
        index.check_model(getattr(model, "model_id", None), model_name=model_name)
        from polymodal.models.prompts import DEFAULT_TEMPLATES

        self.index = index
        self.model = model.eval()
        # How large image files and uploads are decoded for this model: as `index build` decodes them.
        self.decode_size = decode_size(model)
        self.templates = list(templates or DEFAULT_TEMPLATES)
        self._cache_size = cache_size
        self._label_cache_size = label_cache_size
        self._texts: OrderedDict[str, np.ndarray] = OrderedDict()
        self._labels: OrderedDict[str, torch.Tensor] = OrderedDict()  # label -> (D,) class vector
        self._classifiers: OrderedDict[tuple[str, ...], torch.Tensor] = OrderedDict()  # (D, C) of whole lists
        # One forward pass at a time per lane (torch already spreads one pass over the cores); the lanes
        # run side by side, so label work or an image never queues a text query. Text queries are
        # micro-batched in the text lane's own thread.
        self._texts_lane = TextBatcher(self._encode_texts, max_batch=text_batch, wait=batch_wait)
        self._image_lock = threading.Lock()
        self._label_lock = threading.Lock()
        self._cache_lock = threading.Lock()  # cache hits never wait for a forward pass

    def dedicate_text_thread(self, threads: int) -> None:
        """Run every text-tower pass in the text lane's thread, with ``threads`` intra-op threads there.

        For a server, whose requests arrive on many threads: one thread holds the cores for the text
        tower, and request threads should run with one intra-op thread each (:mod:`polymodal.core.threads`).
        """
        from polymodal.core.threads import use_threads

        self._texts_lane.dedicate(functools.partial(use_threads, threads))

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
            fresh = dict(zip(todo, self._texts_lane.encode(todo)))
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
        im = image if isinstance(image, Image.Image) else load_image(image, max_pixels=max_pixels,
                                                                     min_size=self.decode_size)
        with self._image_lock, torch.no_grad():
            return self.model.encode_image([im], normalize=True).float().cpu().numpy()

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        """(N, D) float32 unit vectors: one text-tower pass (run by the text lane)."""
        with torch.no_grad():
            return self.model.encode_text(texts, normalize=True).float().cpu().numpy()

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
        the scaled cosine similarities, CLIP sec. 3.1.4), with the class vectors cached per label.
        """
        names = self.zeroshot_labels(labels)
        return self.rank_labels(self.embed_image(image), names, self.label_classifier(names))

    def zeroshot_labels(self, labels: Sequence[str] | None = None) -> list[str]:
        """The checked, de-duplicated labels of a zero-shot query: ``labels``, or the index's default list.

        Raises:
            ConfigError: no labels, a label over 200 characters, or more than :data:`MAX_LABELS` given ones
                (the index's own list may be longer: it is embedded once, in the background, by the server).
        """
        if labels is None:
            return _check_labels(self.index.default_labels(), limit=None)
        return _check_labels(labels, limit=MAX_LABELS)

    def label_classifier(self, names: Sequence[str], *, max_new: int | None = None) -> torch.Tensor:
        """(D, C) class vectors of ``names`` (columns unit-norm), embedding the ones not cached yet.

        Labels are embedded :data:`LABEL_BATCH` at a time in the label lane, each pass committed to the
        cache at once, so concurrent requests share the work and an interrupted one keeps what it did.

        Args:
            names: distinct labels (as :meth:`zeroshot_labels` returns them).
            max_new: refuse (:class:`LabelsNotReady`) rather than embed more labels than this.
        """
        key = tuple(names)
        with self._cache_lock:
            whole = self._classifiers.get(key)
            if whole is not None:
                self._classifiers.move_to_end(key)
                return whole
            found = {n: v for n in names if (v := self._labels.get(n)) is not None}
        missing = [n for n in names if n not in found]
        if max_new is not None and len(missing) > max_new:
            raise LabelsNotReady(len(missing), len(names))
        for batch in chunks(missing, LABEL_BATCH):
            found.update(zip(batch, self._embed_labels(batch).unbind(dim=1)))
        w = torch.stack([found[n] for n in names], dim=1)  # (D, C)
        with self._cache_lock:
            self._classifiers[key] = w
            if len(self._classifiers) > 32:
                self._classifiers.popitem(last=False)
        return w

    def labels_ready(self, names: Sequence[str]) -> int:
        """How many of ``names`` have a cached class vector (all, once the whole list is cached)."""
        with self._cache_lock:
            if tuple(names) in self._classifiers:
                return len(names)
            return sum(1 for n in names if n in self._labels)

    def rank_labels(self, image_vec: np.ndarray, names: Sequence[str], w: torch.Tensor) -> list[LabelScore]:
        """Softmax of the scaled cosine similarities of a (1, D) image vector to the (D, C) classifier, best first."""
        with torch.no_grad():
            probs = (_logit_scale(self.model) * torch.from_numpy(image_vec) @ w).softmax(dim=-1)[0].tolist()
        order = sorted(range(len(names)), key=lambda j: -probs[j])
        return [LabelScore(label=names[j], score=float(probs[j])) for j in order]

    def _embed_labels(self, names: list[str]) -> torch.Tensor:
        """(D, C) class vectors of one batch of labels, one text-tower pass in the label lane; cached."""
        from polymodal.models.prompts import build_zeroshot_classifier

        with self._label_lock, torch.no_grad():
            w = build_zeroshot_classifier(
                lambda ps: self.model.encode_text(ps, normalize=True).float().cpu(), names, self.templates)
        with self._cache_lock:
            for n, v in zip(names, w.unbind(dim=1)):
                self._labels[n] = v
                self._labels.move_to_end(n)
            while len(self._labels) > self._label_cache_size:
                self._labels.popitem(last=False)
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
        self._texts_lane.close()
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


def _check_labels(labels: Sequence[str], *, limit: int | None) -> list[str]:
    names = list(dict.fromkeys(s.strip() for s in labels if isinstance(s, str) and s.strip()))
    if not names:
        raise ConfigError("zero-shot needs at least one label (give labels, or build the index with --labels)")
    if limit is not None and len(names) > limit:
        raise ConfigError(f"{len(names)} labels, over the limit of {limit}")
    too_long = [s for s in names if len(s) > 200]
    if too_long:
        raise ConfigError(f"label {too_long[0][:40]!r}... is over 200 characters")
    return names
