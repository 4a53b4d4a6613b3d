"""Records -> tensors for the multimodal classifier, in two steps so perturbations can sit between them.

:func:`raw_inputs` turns records into raw tensors (images in [0, 1], waveforms, texts) and presence
masks; :func:`featurize` turns those into model inputs (log-mels, token ids). Robustness evaluation
corrupts the raw tensors (noise on pixels, on the waveform, typos in the text) and featurises again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from polymodal.data.audio import Audio, MelConfig, MelSpectrogram, log_mel, pad_or_trim
from polymodal.data.record import Record
from polymodal.data.video import Video, sample_indices
from polymodal.errors import ConfigError, DataError
from polymodal.models.classifier_encoders import (
    AudioEncoderConfig,
    ImageEncoderConfig,
    TextEncoderConfig,
    VideoEncoderConfig,
)
from polymodal.text import WordTokenizer

if TYPE_CHECKING:  # (the classifier imports this module for its inputs)
    from polymodal.models.classifier import ClassifierConfig

__all__ = ["RawInputs", "featurize", "raw_inputs", "read_compact"]


@dataclass
class ModalityInputs:
    """Model-ready tensors of a batch.

    Args:
        values: per modality: images ``(B, C, H, W)`` in [0, 1], videos ``(B, T, C, H, W)`` in [0, 1], log-mels ``(B, n_mels, T)``, token ids ``(B, L)``.
        present: per modality, ``(B,)`` bool.
        audio_lengths: ``(B,)`` valid log-mel frames, or ``None`` (all valid).
    """

    values: dict[str, Tensor]
    present: dict[str, Tensor]
    audio_lengths: Tensor | None = None

    def __len__(self) -> int:
        return next(iter(self.present.values())).shape[0]

    def select(self, index: Tensor) -> ModalityInputs:
        """The rows ``index`` (a 1-D long tensor)."""
        return ModalityInputs(
            {m: v[index] for m, v in self.values.items()},
            {m: p[index] for m, p in self.present.items()},
            None if self.audio_lengths is None else self.audio_lengths[index],
        )

    def to(self, device: torch.device | str) -> ModalityInputs:
        return ModalityInputs(
            {m: v.to(device) for m, v in self.values.items()},
            {m: p.to(device) for m, p in self.present.items()},
            None if self.audio_lengths is None else self.audio_lengths.to(device),
        )

    def without(self, modality: str) -> ModalityInputs:
        """The same batch with ``modality`` marked absent in every row."""
        if modality not in self.present:
            raise ConfigError(f"no modality {modality!r} in these inputs; have {sorted(self.present)}")
        present = dict(self.present)
        present[modality] = torch.zeros_like(present[modality])
        return ModalityInputs(dict(self.values), present, self.audio_lengths)


@dataclass
class RawInputs:
    """Raw tensors of a set of records.

    Args:
        values: ``image`` ``(N, C, H, W)`` floats in [0, 1]; ``video`` ``(N, T, C, H, W)`` floats in
            [0, 1] (``T`` frames sampled uniformly from the decoded ones); ``audio`` ``(N, S)`` waveforms padded or cut
            to the encoder's length; ``text`` is not here (see ``texts``).
        texts: the texts ("" where absent), or ``None`` if the model reads no text.
        audio_samples: ``(N,)`` valid samples per waveform, or ``None``.
        present: ``(N,)`` bool per modality.
    """

    values: dict[str, Tensor]
    texts: list[str] | None
    audio_samples: Tensor | None
    present: dict[str, Tensor]


def _image_tensor(value: object, c: ImageEncoderConfig, source: str) -> Tensor:
    if not isinstance(value, Image.Image):
        raise DataError(source, f"image must be a decoded PIL image, got {type(value).__name__}")
    return c.image_preprocess.one(value)  # (C, H, W) in [0, 1]


def _video_tensor(value: object, c: VideoEncoderConfig, source: str) -> Tensor:
    """``(T, C, H, W)`` in [0, 1]: ``c.num_frames`` frames spread uniformly over the decoded ones (repeated
    when the video has fewer), each through the frame encoder's image preprocessing."""
    if not isinstance(value, Video):
        raise DataError(source, f"video must be a decoded Video, got {type(value).__name__}")
    if value.num_frames == 0:
        raise DataError(source, "the video has no frames")
    keep = sample_indices(np.arange(value.num_frames, dtype=np.float64), num_frames=c.num_frames, source_fps=value.fps)
    pre = c.image_preprocess
    return torch.stack([pre.one(Image.fromarray(value.frames[i])) for i in keep])  # (T, C, H, W)


def _audio_of(record: Record) -> object:
    """The record's audio, or its video's audio track (a labelled folder of MP4 files has only videos)."""
    if record.audio is not None:
        return record.audio
    return getattr(record.video, "audio", None)


def _waveform(value: object, c: AudioEncoderConfig, source: str) -> Tensor:
    if not isinstance(value, Audio):
        raise DataError(source, f"audio must be decoded Audio, got {type(value).__name__}")
    samples = value.samples if value.samples.ndim == 1 else value.samples.mean(axis=0)  # mono
    if value.sample_rate != c.sample_rate:
        import soxr

        samples = soxr.resample(samples, value.sample_rate, c.sample_rate).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))


def _compact_video(video: Video, c: VideoEncoderConfig) -> Video:
    """``video`` with its frames put through the frame encoder's preprocessing and stored back as uint8 RGB at
    its size: squashing them again is the identity (same size) and grey frames come back grey, so the model's
    input is bit for bit the one of the original frames (``load_video`` never returns a video without frames)."""
    pre = c.image_preprocess
    frames = []
    for frame in video.frames:
        x = (pre.one(Image.fromarray(frame)) * 255.0).round().to(torch.uint8)  # (C, S, S): a [0, 1] image from uint8
        frames.append(x.expand(3, -1, -1).permute(1, 2, 0).numpy())
    return replace(video, frames=np.ascontiguousarray(np.stack(frames)))


def _compact_audio(audio: Audio, c: AudioEncoderConfig, source: str) -> Audio:
    """``audio`` as the audio encoder reads it: mono at its sample rate (what :func:`_waveform` gives again)."""
    return Audio(_waveform(audio, c, source).numpy(), c.sample_rate)


def read_compact(config: ClassifierConfig, record: Record) -> Record:
    """``record``, whose files are paths (``open_source(..., decode=False)``), decoded into what ``config`` reads.

    A video keeps the video encoder's ``num_frames`` frames at its frame size, and its audio track (when
    the model has an audio encoder) becomes mono at that encoder's rate; an audio file likewise. The
    model's inputs are the same as from the fully decoded files, while a folder of long or large videos
    holds only small arrays. Images and text are decoded as they are.

    Raises:
        DataError: a file that cannot be decoded, named.
    """
    from polymodal.data.decode import decode

    video_enc = config.encoders.get("video")
    audio_enc = config.encoders.get("audio")
    values: dict[str, Any] = {}
    if isinstance(record.video, str | Path):
        from polymodal.data.video import load_video

        frames = video_enc.num_frames if isinstance(video_enc, VideoEncoderConfig) else 1
        video = load_video(record.video, num_frames=frames, audio=isinstance(audio_enc, AudioEncoderConfig))
        if isinstance(video_enc, VideoEncoderConfig):
            video = _compact_video(video, video_enc)
        if video.audio is not None and isinstance(audio_enc, AudioEncoderConfig):
            video = replace(video, audio=_compact_audio(video.audio, audio_enc, str(record.video)))
        values["video"] = video
    if isinstance(record.audio, str | Path):
        audio = decode("audio", record.audio)
        values["audio"] = _compact_audio(audio, audio_enc, str(record.audio)) if isinstance(audio_enc, AudioEncoderConfig) else audio
    if isinstance(record.image, str | Path):
        values["image"] = decode("image", record.image)
    return replace(record, **values)


def raw_inputs(config: ClassifierConfig, records: Sequence[Record], *, require_all: bool | None = None) -> RawInputs:
    """Raw tensors and presence masks of ``records``.

    Args:
        config: the model's config (which modalities, sizes).
        records: the examples.
        require_all: raise when a record lacks one of the model's modalities; ``None`` means "unless the
            model was trained with modality dropout" (a model trained without it has never seen a
            missing modality, so its answer on one would be meaningless).

    Raises:
        DataError: a record lacks a required modality (naming the record and the modality), or holds
            the wrong type.
    """
    if require_all is None:
        require_all = config.modality_dropout == 0.0
    n = len(records)
    values: dict[str, Tensor] = {}
    present: dict[str, Tensor] = {}
    texts: list[str] | None = None
    audio_samples: Tensor | None = None
    for m, enc in config.encoders.items():
        get = _audio_of if m == "audio" else (lambda r, m=m: getattr(r, m))
        mask = torch.tensor([get(r) is not None for r in records], dtype=torch.bool)
        if require_all and not bool(mask.all()):
            bad = records[int((~mask).nonzero()[0, 0])]
            raise DataError(
                bad.source or bad.key or None,
                f"record {bad.key!r} has no {m}; this model needs {' and '.join(config.modalities)} "
                "(it was trained without modality dropout, so it cannot answer with one missing)",
            )
        present[m] = mask
        if isinstance(enc, ImageEncoderConfig):
            out = torch.zeros(n, enc.channels, enc.image_size, enc.image_size)
            for i, r in enumerate(records):
                if r.image is not None:
                    out[i] = _image_tensor(r.image, enc, r.source or r.key)
            values[m] = out
        elif isinstance(enc, VideoEncoderConfig):
            out = torch.zeros(n, enc.num_frames, enc.channels, enc.image_size, enc.image_size)
            for i, r in enumerate(records):
                if r.video is not None:
                    out[i] = _video_tensor(r.video, enc, r.source or r.key)
            values[m] = out
        elif isinstance(enc, AudioEncoderConfig):
            out = torch.zeros(n, enc.num_samples)
            lengths = torch.full((n,), enc.num_samples, dtype=torch.int64)
            for i, r in enumerate(records):
                audio = _audio_of(r)
                if audio is not None:
                    w = _waveform(audio, enc, r.source or r.key)
                    lengths[i] = max(1, min(len(w), enc.num_samples))
                    out[i] = pad_or_trim(w, enc.num_samples)
            values[m], audio_samples = out, lengths
        elif isinstance(enc, TextEncoderConfig):
            texts = []
            for r in records:
                if r.text is not None and not isinstance(r.text, str):
                    raise DataError(r.source or r.key or None, f"text must be a string, got {type(r.text).__name__}")
                texts.append(r.text or "")
    return RawInputs(values, texts, audio_samples, present)


def featurize(config: ClassifierConfig, raw: RawInputs) -> ModalityInputs:
    """Model inputs from raw tensors: log-mels (librosa-exact, per clip dB) and word ids.

    Args:
        config: the model's config.
        raw: from :func:`raw_inputs`, possibly corrupted.
    """
    values: dict[str, Tensor] = {}
    audio_lengths = None
    for m, enc in config.encoders.items():
        if isinstance(enc, ImageEncoderConfig | VideoEncoderConfig):
            values[m] = raw.values[m].clamp(0.0, 1.0)
        elif isinstance(enc, AudioEncoderConfig):
            mel = MelSpectrogram(
                MelConfig(sample_rate=enc.sample_rate, n_fft=enc.n_fft, hop_length=enc.hop_length, n_mels=enc.n_mels, pad_mode="constant")
            )
            with torch.no_grad():
                feats = log_mel(mel(raw.values[m]))  # (N, n_mels, frames)
            values[m] = feats
            assert raw.audio_samples is not None
            audio_lengths = (raw.audio_samples // enc.hop_length + 1).clamp(max=feats.shape[-1])
        elif isinstance(enc, TextEncoderConfig):
            tok = WordTokenizer(list(enc.vocab))
            assert raw.texts is not None
            batch = tok.encode(raw.texts, max_length=enc.max_length)
            ids = torch.as_tensor(batch.input_ids, dtype=torch.int64)  # (N, L)
            values[m] = ids
    return ModalityInputs(values, dict(raw.present), audio_lengths)
