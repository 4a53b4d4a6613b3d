"""Batch records whose modalities may be missing: per-modality tensors plus presence masks.

A batch of :class:`~polymodal.data.record.Record` becomes one :class:`Batch`. Each modality that any
record carries becomes a tensor with one row per record, zeros in the rows that lack it, and
``present[modality]`` (a bool ``(B,)`` mask) says which rows are real, so a model can drop the missing
modality from fusion (e.g. mask it out of attention) instead of reading zeros as data. A modality that
no record in the batch carries is ``None``.

Per-record values go through a function of that modality (``image_fn``, ``audio_fn``, ``video_fn``) that
returns a tensor; text goes through ``text_fn`` once per batch (tokenizers are fastest on a list).
Without a function, the defaults are: PIL image -> uint8 ``(3, H, W)``; :class:`~polymodal.data.audio.Audio`
-> float32 samples; :class:`~polymodal.data.video.Video` -> uint8 ``(T, 3, H, W)``; numpy arrays and
tensors as they are. Audio is right-padded with zeros along its last axis and video along its first
(time) axis to the longest in the batch, with ``audio_lengths`` and ``video_mask`` recording the valid part.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from polymodal.data.record import MODALITIES, BadRecord, Record
from polymodal.errors import ConfigError, ShapeError

__all__ = ["Batch", "collate_records", "to_tensor"]

ValueFn = Callable[[Any], torch.Tensor]


@dataclass
class Batch:
    """A batch of records; ``B`` rows in record order.

    Attributes:
        keys: ``Record.key`` of each row.
        present: per modality, bool ``(B,)``; True where the record has that modality.
        labels: int64 ``(B,)``; -1 where the record has no label.
        image: ``(B, ...)`` tensor (zeros where absent), or ``None`` if no record has an image.
        text: the tokenized texts (``text_fn``'s output, a ``TokenBatch`` with ``input_ids`` and
            ``attention_mask``; rows without text are all padding), or ``None``.
        texts: the raw texts, ``""`` where absent.
        audio: ``(B, ..., L)`` right-padded, or ``None``.
        audio_lengths: int64 ``(B,)`` valid length of each row's last axis (0 where absent), or ``None``.
        video: ``(B, T, ...)`` padded in time, or ``None``.
        video_mask: bool ``(B, T)``, True at real frames, or ``None``.
        extra: ``Record.extra`` of each row.
        bad: records that were skipped before collation (see :mod:`polymodal.data.loader`).
    """

    keys: list[str]
    present: dict[str, torch.Tensor]
    labels: torch.Tensor
    image: torch.Tensor | None = None
    text: Any = None
    texts: list[str] = field(default_factory=list)
    audio: torch.Tensor | None = None
    audio_lengths: torch.Tensor | None = None
    video: torch.Tensor | None = None
    video_mask: torch.Tensor | None = None
    extra: list[dict[str, Any]] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    def _map_tensors(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        def apply(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return fn(value)
            if isinstance(value, dict):
                return {k: apply(v) for k, v in value.items()}
            if hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
                return replace(value, **{f.name: apply(getattr(value, f.name)) for f in fields(value)})
            return value

        return replace(
            self,
            **{f.name: apply(getattr(self, f.name)) for f in fields(self) if f.name not in ("extra", "bad")},
        )

    def to(self, device: torch.device | str, *, non_blocking: bool = False) -> Batch:
        """A copy with every tensor moved to ``device``."""
        return self._map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """A copy with every tensor in pinned memory (``DataLoader(pin_memory=True)`` calls this)."""
        return self._map_tensors(lambda t: t.pin_memory())


def to_tensor(value: Any, *, modality: str) -> torch.Tensor:
    """The default conversion of one modality value to a tensor (see the module docstring).

    Args:
        value: a PIL image, an ``Audio``, a ``Video``, a numpy array or a tensor.
        modality: the modality's name, for the error message.
    """
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, Image.Image):
        arr = np.asarray(value.convert("RGB"))  # (H, W, 3)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)  # (3, H, W)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    samples = getattr(value, "samples", None)  # polymodal.data.audio.Audio
    if isinstance(samples, np.ndarray):
        return torch.from_numpy(samples)
    to_t = getattr(value, "to_tensor", None)  # polymodal.data.video.Video
    if callable(to_t):
        return to_t()
    raise ShapeError(
        f"collate: {modality} of type {type(value).__name__} has no default conversion; pass {modality}_fn"
    )


def collate_records(
    records: Sequence[Record],
    *,
    image_fn: ValueFn | None = None,
    text_fn: Callable[[list[str]], Any] | None = None,
    audio_fn: ValueFn | None = None,
    video_fn: ValueFn | None = None,
    label_fn: Callable[[Any], int] | Mapping[Any, int] | None = None,
    bad: Sequence[BadRecord] = (),
) -> Batch:
    """Collate records into a :class:`Batch` with presence masks.

    Args:
        records: the records, any mix of present and missing modalities.
        image_fn: per-record image -> tensor; all results must have one shape.
        text_fn: list of texts -> token batch; the caller passes its tokenizer in (e.g.
            ``polymodal.text.Tokenize(tokenizer, max_length)``: the data layer imports no tokenizer); called on
            the present texts only; rows without text get ``text_fn.pad_id`` (0 if it has none) and a zero
            attention mask. ``None`` keeps only ``Batch.texts``.
        audio_fn: per-record audio -> tensor ``(..., L)``; ``L`` may differ between records.
        video_fn: per-record video -> tensor ``(T, ...)``; ``T`` may differ between records.
        label_fn: maps a label to a class index (a function or a dict); ``None`` requires int labels.
        bad: records skipped earlier, carried in ``Batch.bad``.

    Returns:
        The batch.

    Raises:
        ShapeError: per-record tensors that cannot be stacked (the message names the modality and keys).
        ConfigError: a label that is not an int and no ``label_fn``.
    """
    records = list(records)
    b = len(records)
    present = {
        m: torch.tensor([getattr(r, m) is not None for r in records], dtype=torch.bool) for m in MODALITIES
    }
    keys = [r.key for r in records]

    image = _stack(records, "image", image_fn)
    audio, audio_lengths = _pad_stack(records, "audio", audio_fn, axis=-1)
    video, video_lengths = _pad_stack(records, "video", video_fn, axis=0)
    video_mask = None
    if video is not None and video_lengths is not None:
        video_mask = torch.arange(video.shape[1])[None, :] < video_lengths[:, None]  # (B, T)

    texts = [r.text if r.text is not None else "" for r in records]
    text = None
    if text_fn is not None and bool(present["text"].any()):
        rows = [i for i in range(b) if present["text"][i]]
        tokens = text_fn([texts[i] for i in rows])
        text = _scatter_tokens(tokens, rows, b, pad_id=int(getattr(text_fn, "pad_id", 0)))

    labels = torch.tensor([_label(r, label_fn) for r in records], dtype=torch.int64).reshape(b)
    return Batch(
        keys=keys,
        present=present,
        labels=labels,
        image=image,
        text=text,
        texts=texts,
        audio=audio,
        audio_lengths=audio_lengths,
        video=video,
        video_mask=video_mask,
        extra=[r.extra for r in records],
        bad=list(bad),
    )


# --- helpers, in the order collate_records uses them ---------------------------------------------


def _convert(records: list[Record], modality: str, fn: ValueFn | None) -> dict[int, torch.Tensor]:
    out = {}
    for i, r in enumerate(records):
        value = getattr(r, modality)
        if value is not None:
            out[i] = fn(value) if fn is not None else to_tensor(value, modality=modality)
            if not isinstance(out[i], torch.Tensor):
                raise ShapeError(f"collate: {modality}_fn must return a tensor, got {type(out[i]).__name__}")
    return out


def _stack(records: list[Record], modality: str, fn: ValueFn | None) -> torch.Tensor | None:
    values = _convert(records, modality, fn)
    if not values:
        return None
    first = next(iter(values.values()))
    for i, t in values.items():
        if t.shape != first.shape or t.dtype != first.dtype:
            raise ShapeError(
                f"collate: {modality} of {records[i].key or i!r} is {t.dtype} {tuple(t.shape)}, but other records "
                f"give {first.dtype} {tuple(first.shape)}; resize them first ({modality}_fn)"
            )
    out = first.new_zeros((len(records), *first.shape))  # (B, ...)
    for i, t in values.items():
        out[i] = t
    return out


def _pad_stack(
    records: list[Record], modality: str, fn: ValueFn | None, *, axis: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Stack tensors that differ only along ``axis`` (0 or -1), zero-padding at the end of it."""
    values = _convert(records, modality, fn)
    if not values:
        return None, None
    first = next(iter(values.values()))
    rest = lambda t: t.shape[1:] if axis == 0 else t.shape[:-1]  # noqa: E731 - the shape off the padded axis
    for i, t in values.items():
        if t.ndim == 0 or rest(t) != rest(first) or t.dtype != first.dtype:
            raise ShapeError(
                f"collate: {modality} of {records[i].key or i!r} is {t.dtype} {tuple(t.shape)}, which does not pad "
                f"together with {first.dtype} {tuple(first.shape)} (only axis {axis} may differ)"
            )
    lengths = torch.zeros(len(records), dtype=torch.int64)
    for i, t in values.items():
        lengths[i] = t.shape[axis]
    longest = int(lengths.max())
    shape = (
        (len(records), longest, *first.shape[1:]) if axis == 0 else (len(records), *first.shape[:-1], longest)
    )
    out = first.new_zeros(shape)
    for i, t in values.items():
        if axis == 0:
            out[i, : t.shape[0]] = t
        else:
            out[i, ..., : t.shape[-1]] = t
    return out, lengths


def _scatter_tokens(tokens: Any, rows: list[int], b: int, *, pad_id: int) -> Any:
    """Put the token rows of the present texts back at their batch positions; absent rows are padding."""
    ids, mask = tokens.input_ids, tokens.attention_mask  # (n, T)
    if len(rows) == b:
        return tokens
    full_ids = ids.new_full((b, ids.shape[1]), pad_id)
    full_mask = mask.new_zeros((b, mask.shape[1]))
    index = torch.tensor(rows, dtype=torch.long)
    full_ids[index] = ids
    full_mask[index] = mask
    return replace(tokens, input_ids=full_ids, attention_mask=full_mask)


def _label(record: Record, label_fn: Callable[[Any], int] | Mapping[Any, int] | None) -> int:
    label = record.label
    if label is None:
        return -1
    if label_fn is not None:
        if isinstance(label_fn, Mapping):
            if label not in label_fn:
                raise ConfigError(
                    f"collate: label {label!r} of {record.key or record.source!r} is not in label_fn"
                )
            return int(label_fn[label])
        return int(label_fn(label))
    if isinstance(label, bool) or not isinstance(label, int | np.integer):
        raise ConfigError(
            f"collate: label {label!r} of {record.key or record.source!r} is not an int; pass label_fn to map it"
        )
    return int(label)
