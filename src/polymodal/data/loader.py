"""A DataLoader path for records: worker processes, pinned seeds, cached decoding, bad records counted.

:class:`RecordLoader` wraps ``torch.utils.data.DataLoader`` around a list of
:class:`~polymodal.data.record.Record` and yields collated :class:`~polymodal.data.collate.Batch` es.
Per record, in the worker: decode the modalities given as paths (:class:`DecodeOptions`, optionally
through a :class:`DecodeCache`), then apply the per-record transforms (:class:`ItemTransforms`, e.g. a
:class:`~polymodal.data.image_transforms.TrainTransform`); per batch, collate (text is tokenized there).

Determinism: the shuffle order depends on ``(seed, epoch)`` and every record's augmentation on its own
``torch.Generator`` seeded from ``(seed, epoch, index)``, so 0, 1 or 8 workers give the same batches
(``tests/test_loader.py`` checks 0 against 2). Each worker also seeds ``random``, NumPy and torch from
``(seed, epoch, worker id)`` for transforms that use the global generators, and runs torch on one thread
so that workers do not fight over cores.

Bad records: a record whose file fails to decode (any :class:`~polymodal.errors.PolymodalError`) is
skipped; its :class:`~polymodal.data.record.BadRecord` travels in ``Batch.bad`` from the worker, and
:attr:`RecordLoader.bad` lists all of them for the epoch, so the count is exact across workers.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from polymodal.data.collate import Batch, collate_records
from polymodal.data.record import BadRecord, Record
from polymodal.errors import ConfigError, DataError, PolymodalError

__all__ = ["DecodeCache", "DecodeOptions", "ItemTransforms", "RecordDataset", "RecordLoader", "item_seed"]


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for record ``index`` in ``epoch``: the first 8 bytes of sha256 of the three numbers.

    Hashing (rather than ``seed + index``) keeps the streams of neighbouring records and epochs unrelated.
    """
    digest = hashlib.sha256(f"{seed}:{epoch}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# ---------------------------------------------------------------------------------------------------
# Decoding, with a cache keyed by content
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeOptions:
    """How modalities given as file paths are decoded.

    Args:
        max_pixels: image pixel limit (see :func:`polymodal.data.images.load_image`).
        sample_rate: resample audio (and video soundtracks) to this rate; ``None`` keeps the file's.
        video_frames: frames sampled uniformly from each video; ``None`` with ``video_fps`` None keeps all.
        video_fps: sample video at this rate instead.
        video_size: ``(width, height)`` of decoded video frames; ``None`` keeps the source size.
        video_audio: decode video soundtracks.
    """

    max_pixels: int = 64_000_000
    sample_rate: int | None = None
    video_frames: int | None = 8
    video_fps: float | None = None
    video_size: tuple[int, int] | None = None
    video_audio: bool = True

    def __post_init__(self) -> None:
        if self.video_frames is not None and self.video_fps is not None:
            raise ConfigError("DecodeOptions: give video_frames or video_fps, not both")

    def key(self, modality: str) -> str:
        """The options that affect ``modality``'s decoded value, as text (part of the cache key)."""
        if modality == "image":
            return f"image:{self.max_pixels}"
        if modality == "audio":
            return f"audio:{self.sample_rate}"
        return f"video:{self.video_frames}:{self.video_fps}:{self.video_size}:{self.video_audio}:{self.sample_rate}"

    def decode(self, modality: str, data: bytes, name: str) -> Any:
        """Decode a file's bytes."""
        if modality == "image":
            from polymodal.data.images import load_image

            return load_image(data, max_pixels=self.max_pixels, name=name)
        if modality == "audio":
            from polymodal.data.audio import load_audio

            return load_audio(data, sample_rate=self.sample_rate, name=name)
        from polymodal.data.video import load_video

        return load_video(
            data,
            num_frames=self.video_frames,
            fps=self.video_fps,
            size=self.video_size,
            audio=self.video_audio,
            sample_rate=self.sample_rate,
            name=name,
        )


class DecodeCache:
    """Decoded files keyed by ``sha256(file bytes)`` and the decode options: in memory and/or on disk.

    The memory level is an LRU per process: each worker has its own copy, and :attr:`hits` and
    :attr:`misses` count only the calling process's lookups. The disk level is a folder of
    ``.npz`` files shared by all workers and runs, written atomically (temporary file, then rename), so a
    file is decoded once across epochs and workers. Keys are content hashes, so an edited file is a miss.

    Args:
        memory_items: decoded values kept in memory; 0 turns the memory level off.
        directory: folder of the disk level; ``None`` turns it off.
    """

    def __init__(self, *, memory_items: int = 1024, directory: str | Path | None = None) -> None:
        if memory_items < 0:
            raise ConfigError(f"DecodeCache: memory_items must be >= 0, got {memory_items}")
        self.memory_items = memory_items
        self.directory = None if directory is None else Path(directory)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._memory: OrderedDict[str, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, modality: str, path: Path, options: DecodeOptions) -> Any:
        """The decoded value of the file at ``path``.

        Raises:
            DataError: the file cannot be read or decoded (errors are not cached).
        """
        data = _read(path)
        key = (
            hashlib.sha256(data).hexdigest()[:32]
            + "-"
            + hashlib.sha256(options.key(modality).encode()).hexdigest()[:8]
        )
        if key in self._memory:
            self._memory.move_to_end(key)
            self.hits += 1
            return self._memory[key]
        value = self._load_disk(modality, key)
        if value is None:
            self.misses += 1
            value = options.decode(modality, data, str(path))
            self._save_disk(modality, key, value)
        else:
            self.hits += 1
        if self.memory_items:
            self._memory[key] = value
            while len(self._memory) > self.memory_items:
                self._memory.popitem(last=False)
        return value

    def _file(self, key: str) -> Path | None:
        return None if self.directory is None else self.directory / f"{key}.npz"

    def _save_disk(self, modality: str, key: str, value: Any) -> None:
        target = self._file(key)
        if target is None:
            return
        arrays = _to_arrays(modality, value)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy stubs type **kwds as allow_pickle
            os.replace(tmp, target)  # atomic: a concurrent reader sees the old state or the whole file
        except OSError:
            Path(tmp).unlink(missing_ok=True)  # a full disk costs the cache entry, not the record

    def _load_disk(self, modality: str, key: str) -> Any:
        target = self._file(key)
        if target is None or not target.is_file():
            return None
        try:
            with np.load(target) as z:
                return _from_arrays(modality, {k: z[k] for k in z.files})
        except (OSError, ValueError, KeyError, PolymodalError):
            return None  # a damaged cache file is a miss; it is rewritten


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a directory, not a file") from None
    except OSError as e:
        raise DataError(path, f"cannot read file ({e.strerror or e})") from None


def _to_arrays(modality: str, value: Any) -> dict[str, np.ndarray]:
    if modality == "image":
        return {"pixels": np.asarray(value)}
    if modality == "audio":
        return {"samples": value.samples, "rate": np.array(value.sample_rate)}
    arrays = {
        "frames": value.frames,
        "fps": np.array(value.fps),
        "times": value.times,
        "indices": value.indices,
        "n": np.array(value.num_source_frames),
    }
    if value.audio is not None:
        arrays |= {"samples": value.audio.samples, "rate": np.array(value.audio.sample_rate)}
    return arrays


def _from_arrays(modality: str, a: dict[str, np.ndarray]) -> Any:
    from PIL import Image

    if modality == "image":
        return Image.fromarray(a["pixels"], mode="RGB")
    from polymodal.data.audio import Audio

    audio = Audio(a["samples"], int(a["rate"])) if "samples" in a else None
    if modality == "audio":
        return audio
    from polymodal.data.video import Video

    return Video(a["frames"], float(a["fps"]), a["times"], a["indices"], int(a["n"]), audio)


# ---------------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemTransforms:
    """Per-record transforms, each called as ``fn(value, generator=g)`` and returning a tensor.

    ``g`` is the record's own ``torch.Generator`` (seeded from seed, epoch and index); deterministic
    transforms ignore it (:meth:`~polymodal.data.pixels.ImagePreprocess.one` accepts and ignores it).

    Args:
        image: for the decoded ``PIL.Image``.
        audio: for the decoded :class:`~polymodal.data.audio.Audio`.
        video: for the decoded :class:`~polymodal.data.video.Video`.
    """

    image: Callable[..., torch.Tensor] | None = None
    audio: Callable[..., torch.Tensor] | None = None
    video: Callable[..., torch.Tensor] | None = None

    def __call__(self, record: Record, generator: torch.Generator) -> Record:
        changes = {}
        for modality in ("image", "audio", "video"):
            fn, value = getattr(self, modality), getattr(record, modality)
            if fn is not None and value is not None:
                changes[modality] = fn(value, generator=generator)
        return replace(record, **changes) if changes else record


class RecordDataset(Dataset):
    """Records decoded and transformed on access; a record that fails becomes a :class:`BadRecord`.

    Args:
        records: the records; modalities may be decoded values or file paths (``str`` or ``Path``).
        transforms: per-record transforms, or ``None``.
        decode: how paths are decoded.
        cache: a decode cache, or ``None`` to decode every time.
        seed: base seed of the per-record generators.
    """

    def __init__(
        self,
        records: Sequence[Record],
        *,
        transforms: ItemTransforms | None = None,
        decode: DecodeOptions | None = None,
        cache: DecodeCache | None = None,
        seed: int = 0,
    ) -> None:
        self.records = list(records)
        self.transforms = transforms
        self.decode = decode or DecodeOptions()
        self.cache = cache
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Record | BadRecord:
        record = self.records[index]
        try:
            record = self._decoded(record)
            if self.transforms is not None:
                generator = torch.Generator().manual_seed(item_seed(self.seed, self.epoch, index))
                record = self.transforms(record, generator)
        except PolymodalError as e:
            where = getattr(e, "path", None) or record.source or record.key
            problem = getattr(e, "problem", None) or str(e)
            return BadRecord(source=str(where), problem=problem, row=index)
        return record

    def _decoded(self, record: Record) -> Record:
        changes = {}
        for modality in ("image", "audio", "video"):
            value = getattr(record, modality)
            if isinstance(value, str | Path):
                path = Path(value)
                if self.cache is not None:
                    changes[modality] = self.cache.get(modality, path, self.decode)
                else:
                    changes[modality] = self.decode.decode(modality, _read(path), str(path))
        return replace(record, **changes) if changes else record


@dataclass(frozen=True)
class _Collate:
    """Picklable collate function: splits off bad records, collates the rest."""

    text_fn: Callable[[list[str]], Any] | None
    label_fn: Callable[[Any], int] | Mapping[Any, int] | None
    image_fn: Callable[[Any], torch.Tensor] | None
    audio_fn: Callable[[Any], torch.Tensor] | None
    video_fn: Callable[[Any], torch.Tensor] | None

    def __call__(self, items: list[Record | BadRecord]) -> Batch:
        good = [x for x in items if isinstance(x, Record)]
        bad = [x for x in items if isinstance(x, BadRecord)]
        return collate_records(
            good,
            image_fn=self.image_fn,
            text_fn=self.text_fn,
            audio_fn=self.audio_fn,
            video_fn=self.video_fn,
            label_fn=self.label_fn,
            bad=bad,
        )


@dataclass(frozen=True)
class _SeedWorker:
    """``worker_init_fn``: seed ``random``, NumPy and torch from (seed, epoch, worker id); one torch thread."""

    seed: int
    epoch: int

    def __call__(self, worker_id: int) -> None:
        s = item_seed(self.seed, self.epoch, -1 - worker_id)  # negative index: never a record's stream
        random.seed(s)
        np.random.seed(s % 2**32)
        torch.manual_seed(s)
        torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------------
# Loader
# ---------------------------------------------------------------------------------------------------


class RecordLoader:
    """Batches of records through ``torch.utils.data.DataLoader``.

    Iterating yields :class:`~polymodal.data.collate.Batch` es (a batch whose records all failed is not
    yielded; its bad records are still counted). Each iteration is one epoch and uses
    :attr:`epoch`, then advances it; :meth:`set_epoch` sets it (for resuming).

    Args:
        records: the records (decoded values or file paths).
        batch_size: records per batch (before bad ones are dropped).
        shuffle: shuffle each epoch (order from ``(seed, epoch)``).
        num_workers: worker processes; 0 loads in the calling process.
        seed: base seed of shuffling, augmentation and workers.
        drop_last: drop the last incomplete batch.
        transforms: per-record transforms (see :class:`ItemTransforms`).
        text_fn: batch tokenizer (e.g. ``polymodal.text.Tokenize``); ``None`` keeps raw texts.
        label_fn: label to class index (function or dict); ``None`` requires int labels.
        image_fn: collate-time image conversion after ``transforms`` (default: see ``collate``).
        audio_fn: collate-time audio conversion.
        video_fn: collate-time video conversion.
        decode: how file paths are decoded.
        cache: decode cache (its disk level is shared by the workers).
        pin_memory: pin batch tensors (for fast copies to a GPU).
        prefetch_factor: batches each worker loads ahead (``None``: DataLoader's default).
    """

    def __init__(
        self,
        records: Sequence[Record],
        *,
        batch_size: int,
        shuffle: bool = False,
        num_workers: int = 0,
        seed: int = 0,
        drop_last: bool = False,
        transforms: ItemTransforms | None = None,
        text_fn: Callable[[list[str]], Any] | None = None,
        label_fn: Callable[[Any], int] | Mapping[Any, int] | None = None,
        image_fn: Callable[[Any], torch.Tensor] | None = None,
        audio_fn: Callable[[Any], torch.Tensor] | None = None,
        video_fn: Callable[[Any], torch.Tensor] | None = None,
        decode: DecodeOptions | None = None,
        cache: DecodeCache | None = None,
        pin_memory: bool = False,
        prefetch_factor: int | None = None,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"RecordLoader: batch_size must be a positive int, got {batch_size!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"RecordLoader: num_workers must be an int >= 0, got {num_workers!r}")
        self.dataset = RecordDataset(records, transforms=transforms, decode=decode, cache=cache, seed=seed)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.num_workers = num_workers
        self.seed = seed
        self.drop_last = drop_last
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.collate = _Collate(text_fn, label_fn, image_fn, audio_fn, video_fn)
        self.epoch = 0
        self.bad: list[BadRecord] = []

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next iteration (shuffle order and augmentation streams)."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Any:
        epoch = self.epoch
        self.epoch += 1
        self.dataset.epoch = epoch  # workers get a copy of the dataset when the iterator starts
        self.bad = []
        generator = torch.Generator().manual_seed(item_seed(self.seed, epoch, -(2**31)))
        extra: dict[str, Any] = {}
        if self.num_workers > 0:
            extra = {"worker_init_fn": _SeedWorker(self.seed, epoch), "prefetch_factor": self.prefetch_factor}
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            drop_last=self.drop_last,
            pin_memory=self.pin_memory,
            generator=generator,
            **extra,
        )
        for batch in loader:
            self.bad.extend(batch.bad)
            if len(batch):
                yield batch
