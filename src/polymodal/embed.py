"""Embedding files and texts with any polymodal model, in input order, in batches.

An image file that cannot be read is skipped and named, as ``train`` and ``index build`` do; the result
says which input each row of the array is (:class:`Embeddings`), and ``polymodal embed`` writes that
list beside the array (:func:`save_embeddings`).

Images go through a pipeline (:func:`ordered_map`): worker threads read, decode and preprocess the next
images while the image tower runs on the current batch, and at most ``ahead`` prepared images wait at any
time, so memory stays bounded whatever the number of files. Results come back in input order, so the
output is the same as decoding one file after another (``workers=0`` does exactly that).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from polymodal.data.images import DEFAULT_MAX_PIXELS, load_image
from polymodal.data.record import BadRecord
from polymodal.errors import ConfigError, DataError

A = TypeVar("A")
R = TypeVar("R")

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


def image_paths(items: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their image files in sorted order."""
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.exists():
            out.append(p)
        else:
            raise DataError(p, "no such file")
    return out


@dataclass
class Embeddings:
    """Embeddings of inputs, which input each row is, and the inputs that were skipped.

    Attributes:
        vectors: (N, D) float32, L2-normalised, in input order.
        rows: the input of each row: an image file's path, or ``"<texts file>:<line>"``.
        bad: the inputs that were skipped (unreadable image files), each with its problem.
    """

    vectors: np.ndarray
    rows: list[str] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)


def save_embeddings(npy: Path, emb: Embeddings) -> Path:
    """Write ``npy`` (the array) and beside it ``<name>.rows.json``: ``{"rows": [...], "skipped": [...]}``.

    Returns:
        The path of the row list.
    """
    from polymodal.core.checkpoint import atomic_write_json

    np.save(npy, emb.vectors)
    rows = npy.with_suffix(".rows.json")
    atomic_write_json(rows, {"array": npy.name, "rows": emb.rows, "skipped": [b.to_dict() for b in emb.bad]})
    return rows


def default_workers() -> int:
    """Decode workers for a pipeline: one per core (they sleep while the queue ahead is full), 1 to 8."""
    return max(1, min(8, (os.cpu_count() or 1)))


def ordered_map(fn: Callable[[A], R], items: Iterable[A], *, workers: int = 0, ahead: int = 64,
                processes: bool = False) -> Iterator[R]:
    """``map(fn, items)`` computed by ``workers`` workers, in input order, at most ``ahead`` items in flight.

    The consumer of the iterator runs while the workers compute the next results, which is what overlaps
    decoding with the image tower. Items are taken from ``items`` only as results are consumed, so a
    generator of any length is read lazily and memory holds at most ``ahead`` results.

    Args:
        fn: the work per item. It should catch its own expected errors and return them as values: an
            exception it raises is raised here, at that item's turn, and stops the map.
        items: the inputs.
        workers: 0 runs ``fn`` inline, one item after another (the sequential reference).
        ahead: results computed ahead of the consumer (>= 1); with ``workers`` > 0, at least ``workers``.
        processes: run ``fn`` in forked worker processes instead of threads (for work that holds the GIL;
            ``fn`` is inherited, not pickled, and its results must be picklable). Threads suit work that
            releases the GIL (file reads, hashing, Pillow decoding and resizing, numpy).
    """
    if workers < 0 or ahead < 1:
        raise ConfigError(f"ordered_map: need workers >= 0 and ahead >= 1, got {workers}, {ahead}")
    if workers == 0:
        yield from map(fn, items)
        return
    executor: Executor
    if processes:
        ctx = multiprocessing.get_context("fork")
        executor = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_set_worker_fn, initargs=(fn,))
        call: Callable[[A], R] = _call_worker_fn
    else:
        executor = ThreadPoolExecutor(workers, thread_name_prefix="polymodal-decode")
        call = fn
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(executor.submit(call, item))
            if len(pending) >= max(ahead, workers):
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


_worker_fn: Callable[[Any], Any] | None = None


def _set_worker_fn(fn: Callable[[Any], Any]) -> None:
    global _worker_fn
    _worker_fn = fn
    torch.set_num_threads(1)  # a forked child must not start intra-op thread pools of its own


def _call_worker_fn(item: Any) -> Any:
    assert _worker_fn is not None, "worker started without its function"
    return _worker_fn(item)


@dataclass
class PreparedImage:
    """One image file made ready for the tower: its input tensor (or the decoded image), or its problem."""

    source: str
    pixels: torch.Tensor | Image.Image | None = None
    problem: str | None = None


def decode_size(model: Any) -> tuple[int, int] | None:
    """``(shorter, longer)``: how large an image file must be decoded for ``model`` (``load_image``'s
    ``min_size``), or ``None`` (full size) for a model that does not say how it preprocesses images.

    Every inference path that decodes image files for a model asks this (``embed``, ``index build`` and
    ``add``, ``zeroshot`` on files, the server's uploads, image queries), so the same file gives the same
    pixels, and the same vector, whichever path embeds it. A JPEG is then decoded reduced in the DCT domain
    to no less than what the model's preprocessing resizes it to: a 4000x3000 photo for a 224 px tower
    decodes at 500x375 in a fraction of the time. Training and evaluation data decode at full size.
    """
    spec = getattr(model, "image_preprocess", None)
    if spec is None or not hasattr(spec, "min_source_size"):
        return None
    short, long = spec.min_source_size
    return int(short), int(long)


def image_preparer(model: Any, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Callable[[str | Path], PreparedImage]:
    """The per-file work of :func:`embed_images`: decode (reduced to :func:`decode_size`) and, where the
    model has ``preprocess``, make the tower's input tensor; a file that cannot be read gives its problem
    instead."""
    preprocess = getattr(model, "preprocess", None)
    min_size = decode_size(model)

    def prepare(path: str | Path) -> PreparedImage:
        try:
            im = load_image(path, max_pixels=max_pixels, min_size=min_size)
        except DataError as e:
            return PreparedImage(str(path), problem=e.problem)
        return PreparedImage(str(path), preprocess([im])[0] if preprocess is not None else im)

    return prepare


def encode_prepared(model: Any, pixels: Sequence[torch.Tensor | Image.Image]) -> np.ndarray:
    """(B, D) float32 unit vectors of a batch of :class:`PreparedImage` pixels, one tower pass."""
    with torch.no_grad():
        tensors = [x for x in pixels if isinstance(x, torch.Tensor)]
        batch = torch.stack(tensors) if len(tensors) == len(pixels) else list(pixels)  # (B, 3, H, W)
        return model.encode_image(batch, normalize=True).float().cpu().numpy()


def embed_images(model: Any, paths: Sequence[Path], *, batch_size: int = 64, progress: bool = True,
                 strict: bool = False, workers: int | None = None) -> Embeddings:
    """Embed image files in batches; an unreadable one is skipped and reported (``strict``: an error).

    Decoding runs ahead in ``workers`` threads (default :func:`default_workers`; 0: inline) while the tower
    runs on the current batch; rows come out in input order either way.
    """
    model.eval()
    dim = model.config.embed_dim
    out = Embeddings(np.zeros((0, dim), np.float32))
    chunks = [out.vectors]
    workers = default_workers() if workers is None else workers
    batch: list[PreparedImage] = []

    def flush() -> None:
        chunks.append(encode_prepared(model, [p.pixels for p in batch]))  # type: ignore[misc]
        out.rows.extend(p.source for p in batch)
        batch.clear()

    prepared = ordered_map(image_preparer(model), paths, workers=workers, ahead=2 * batch_size)
    for p in tqdm(prepared, total=len(paths), desc="embed images", disable=not progress, leave=False):
        if p.problem is not None:
            if strict:
                raise DataError(p.source, p.problem)
            out.bad.append(BadRecord(source=p.source, problem=p.problem))
            continue
        batch.append(p)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    out.vectors = np.concatenate(chunks).astype(np.float32)
    return out


@torch.no_grad()
def embed_texts(model, texts: Sequence[str], *, batch_size: int = 256, progress: bool = True) -> np.ndarray:
    model.eval()
    chunks = []
    for i in tqdm(range(0, len(texts), batch_size), desc="embed texts", disable=not progress, leave=False):
        chunks.append(model.encode_text(list(texts[i : i + batch_size]), normalize=True).float().numpy())
    dim = model.config.embed_dim
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, dim), np.float32)
