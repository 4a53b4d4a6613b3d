"""Audio: decoding to float samples, log-mel features and SpecAugment.

Read top to bottom: the :class:`Audio` container and :func:`load_audio` (WAV/FLAC/OGG through
``soundfile``, resampling through ``soxr``), :func:`pad_or_trim`, then the features: :class:`MelConfig`,
:class:`MelSpectrogram` (a torch module that matches ``librosa.feature.melspectrogram`` with
``pad_mode="reflect"``) and :func:`log_mel` (``librosa.power_to_db``), and last :class:`SpecAugment`
(Park et al. 2019).
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
import soundfile
import soxr
import torch
from torch import nn

from polymodal.errors import ConfigError, DataError, ShapeError

__all__ = [
    "Audio",
    "MelConfig",
    "MelSpectrogram",
    "SpecAugment",
    "SpecAugmentMasks",
    "load_audio",
    "log_mel",
    "mel_filterbank",
    "pad_or_trim",
]

# ---------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------

_BLOCK_FRAMES = 1 << 16  # decode in blocks: a header that lies about its length cannot make us allocate
_MAX_RIFF_CHUNKS = 1024  # a RIFF file with more chunks than this before 'data' is garbage
_UNKNOWN_RIFF_SIZES = (0, 0xFFFFFFFF)  # streaming writers leave the data size unset


@dataclass(frozen=True)
class Audio:
    """Decoded audio.

    Args:
        samples: float32 samples in [-1, 1] for integer sources; shape ``(T,)`` for mono, ``(C, T)``
            for several channels.
        sample_rate: samples per second per channel.
    """

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        if not isinstance(self.samples, np.ndarray) or self.samples.dtype != np.float32:
            raise ShapeError("Audio.samples must be a float32 numpy array")
        if self.samples.ndim not in (1, 2):
            raise ShapeError(f"Audio.samples must be (T,) or (C, T), got shape {self.samples.shape}")
        if (
            isinstance(self.sample_rate, bool)
            or not isinstance(self.sample_rate, int)
            or self.sample_rate <= 0
        ):
            raise ConfigError(f"Audio.sample_rate must be a positive int, got {self.sample_rate!r}")

    @property
    def num_channels(self) -> int:
        """1 for mono ``(T,)`` samples, else ``C``."""
        return 1 if self.samples.ndim == 1 else int(self.samples.shape[0])

    @property
    def num_frames(self) -> int:
        """Samples per channel."""
        return int(self.samples.shape[-1])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_frames / self.sample_rate

    def to_tensor(self) -> torch.Tensor:
        """The samples as a float32 tensor that shares memory with :attr:`samples`."""
        return torch.from_numpy(self.samples)


def _check_rate(value: int | None, argument: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{argument} must be a positive int or None, got {value!r}")


def _riff_truncation(stream: BinaryIO, total: int) -> str | None:
    """Say whether a RIFF/WAVE file's ``data`` chunk declares more bytes than the file holds.

    libsndfile quietly decodes what is there when a WAV file was cut short (the header still declares
    the full length), so a download that stopped halfway would pass as a shorter clip. Returns a
    problem description, or ``None`` when the file is not RIFF/WAVE or is complete.
    """
    stream.seek(0)
    head = stream.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    position = 12
    for _ in range(_MAX_RIFF_CHUNKS):
        stream.seek(position)
        chunk = stream.read(8)
        if len(chunk) < 8:
            return None  # no data chunk: libsndfile reports that itself
        size = int.from_bytes(chunk[4:8], "little")
        position += 8
        if chunk[:4] == b"data":
            held = total - position
            if size not in _UNKNOWN_RIFF_SIZES and held < size:
                return f"truncated: the WAV header declares {size} bytes of audio, the file holds {held}"
            return None
        position += size + (size & 1)  # chunks are padded to an even size
    return None


def load_audio(
    source: str | Path | bytes,
    *,
    sample_rate: int | None = None,
    mono: bool = True,
    name: str | None = None,
) -> Audio:
    """Decode a WAV, FLAC or OGG/Vorbis file (any format libsndfile reads) to float32 samples.

    Args:
        source: a path, or the file's bytes.
        sample_rate: resample to this rate with soxr's high-quality ("HQ") filter, the resampler
            ``librosa.load`` uses by default; ``None`` keeps the file's rate.
        mono: average the channels into one (the same mixdown as ``librosa.to_mono``) and return
            ``(T,)`` samples; ``False`` returns ``(C, T)``.
        name: what to call the source in error messages (for bytes, e.g. a zip member name).

    Returns:
        The decoded :class:`Audio`.

    Raises:
        DataError: the file is missing, empty, not audio, in an unsupported format, truncated, holds no
            frames or non-finite samples. The error names the file.
        ConfigError: ``sample_rate`` is not a positive int.
    """
    _check_rate(sample_rate, "sample_rate")
    if isinstance(source, (bytes, bytearray, memoryview)):
        where: str = name or "<bytes>"
        data = bytes(source)
        if not data:
            raise DataError(where, "empty: no bytes to decode")
        stream: BinaryIO = io.BytesIO(data)
        total = len(data)
    else:
        path = Path(source)
        where = name or str(path)
        if not path.is_file():
            raise DataError(where, "no such file" if not path.exists() else "not a file")
        total = path.stat().st_size
        if total == 0:
            raise DataError(where, "empty: the file has 0 bytes")
        try:
            stream = path.open("rb")
        except OSError as error:
            raise DataError(where, f"cannot open: {error.strerror or error}") from None
    try:
        samples, rate = _decode(stream, total, where)
    finally:
        stream.close()
    if mono and samples.shape[0] > 1:
        samples = samples.mean(axis=0, keepdims=True, dtype=np.float32)  # (1, T)
    if sample_rate is not None and sample_rate != rate:
        # soxr wants (T, C); it keeps float32.
        samples = np.ascontiguousarray(soxr.resample(samples.T, rate, sample_rate, quality="HQ").T)
        rate = sample_rate
    if mono:
        samples = samples[0]  # (T,)
    return Audio(samples=np.ascontiguousarray(samples, dtype=np.float32), sample_rate=int(rate))


def _decode(stream: BinaryIO, total: int, where: str) -> tuple[np.ndarray, int]:
    """Decode a whole stream to ``(C, T)`` float32 samples and the sample rate."""
    problem = _riff_truncation(stream, total)
    if problem is not None:
        raise DataError(where, problem)
    stream.seek(0)
    try:
        with soundfile.SoundFile(stream) as sf:
            declared, rate, fmt = sf.frames, sf.samplerate, sf.format
            blocks = list(sf.blocks(blocksize=_BLOCK_FRAMES, dtype="float32", always_2d=True))
            log = sf.extra_info if fmt == "OGG" else ""
    except (soundfile.SoundFileError, RuntimeError, TypeError, ValueError) as error:
        raise DataError(where, f"cannot decode as audio: {_short(error)}") from None
    samples = np.concatenate(blocks, axis=0).T if blocks else np.zeros((1, 0), np.float32)  # (C, T)
    if "ended unexpectedly" in log:  # libsndfile's note when an Ogg stream lacks its end-of-stream page
        raise DataError(where, "truncated: the Ogg stream ends before its last page")
    if 0 < samples.shape[1] < declared:
        raise DataError(
            where, f"truncated: decoded {samples.shape[1]} of the {declared} frames the header declares"
        )
    if samples.shape[1] == 0:
        raise DataError(where, "no audio frames (zero-length or truncated file)")
    if not np.isfinite(samples).all():
        raise DataError(where, "non-finite samples (NaN or infinity)")
    return np.ascontiguousarray(samples), int(rate)


def _short(error: Exception) -> str:
    """libsndfile's message without the repr of the file object it was given."""
    message = str(error).strip() or type(error).__name__
    return re.sub(r"^Error opening <[^>]*>: ", "", message)


ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def pad_or_trim(samples: ArrayT, length: int) -> ArrayT:
    """Cut or zero-pad the last axis to ``length`` (padding at the end).

    Args:
        samples: a numpy array or a tensor, ``(..., T)``.
        length: the wanted size of the last axis, >= 0.

    Returns:
        The same kind of array with shape ``(..., length)``; the input itself when it already fits.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ConfigError(f"length must be an int >= 0, got {length!r}")
    current = samples.shape[-1]
    if current == length:
        return samples
    if current > length:
        return samples[..., :length]
    if isinstance(samples, torch.Tensor):
        return nn.functional.pad(samples, (0, length - current))
    widths = [(0, 0)] * (samples.ndim - 1) + [(0, length - current)]
    return np.pad(samples, widths)


# ---------------------------------------------------------------------------------------------------
# Mel spectrogram (librosa's defaults: Slaney mel scale, Slaney area normalisation, periodic Hann)
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MelConfig:
    """Settings of a mel spectrogram. Defaults equal ``librosa.feature.melspectrogram(sr=sample_rate)``.

    Args:
        sample_rate: rate of the input samples.
        n_fft: FFT size; ``n_fft // 2 + 1`` frequency bins.
        hop_length: samples between frames.
        win_length: Hann window length, centred in ``n_fft``; ``None`` means ``n_fft``.
        n_mels: mel bands.
        fmin: lowest band edge in Hz.
        fmax: highest band edge in Hz; ``None`` means ``sample_rate / 2``.
        power: 2 for power, 1 for magnitude.
        center: pad ``n_fft // 2`` on both sides so frame ``t`` is centred on sample ``t * hop_length``.
        pad_mode: "reflect" (librosa < 0.10 and torchaudio) or "constant" (zeros, librosa >= 0.10).
    """

    sample_rate: int = 22050
    n_fft: int = 2048
    hop_length: int = 512
    win_length: int | None = None
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    power: float = 2.0
    center: bool = True
    pad_mode: str = "reflect"

    def __post_init__(self) -> None:
        for field_name in ("sample_rate", "n_fft", "hop_length", "n_mels"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"MelConfig.{field_name} must be a positive int, got {value!r}")
        if self.win_length is not None and not 0 < self.win_length <= self.n_fft:
            raise ConfigError(
                f"MelConfig.win_length must be in [1, n_fft={self.n_fft}], got {self.win_length}"
            )
        if not 0 <= self.fmin < self.top_hz:
            raise ConfigError(f"MelConfig needs 0 <= fmin < fmax, got fmin={self.fmin}, fmax={self.top_hz}")
        if self.top_hz > self.sample_rate / 2:
            raise ConfigError(f"MelConfig.fmax={self.fmax} is above Nyquist ({self.sample_rate / 2} Hz)")
        if not self.power > 0:
            raise ConfigError(f"MelConfig.power must be > 0, got {self.power}")
        if self.pad_mode not in ("reflect", "constant"):
            raise ConfigError(f"MelConfig.pad_mode must be 'reflect' or 'constant', got {self.pad_mode!r}")

    @property
    def top_hz(self) -> float:
        """``fmax``, or Nyquist when it is ``None``."""
        return self.sample_rate / 2 if self.fmax is None else float(self.fmax)

    def num_frames(self, num_samples: int) -> int:
        """Frames the spectrogram of ``num_samples`` samples has (for masks over padded batches)."""
        if self.center:
            return 1 + num_samples // self.hop_length
        return max(0, 1 + (num_samples - self.n_fft) // self.hop_length)


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale (Auditory Toolbox): linear below 1 kHz, logarithmic above."""
    f_sp = 200.0 / 3  # Hz per mel in the linear part
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0  # 27 mels per factor 6.4 in frequency
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / f_sp
    log_part = min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep
    return np.where(hz >= min_log_hz, log_part, linear)


def _mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`_hz_to_mel`."""
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(config: MelConfig) -> np.ndarray:
    """Triangular mel filters, ``(n_mels, n_fft // 2 + 1)`` float64, as ``librosa.filters.mel``.

    Band edges are equally spaced on the Slaney mel scale; each triangle is scaled by
    ``2 / (f_{i+2} - f_i)`` so every filter has unit area in Hz (Slaney normalisation), which keeps the
    energy of white noise roughly equal across bands.

    Args:
        config: the spectrogram settings.

    Returns:
        The filter matrix; rows are bands.
    """
    fft_hz = np.linspace(0.0, config.sample_rate / 2, 1 + config.n_fft // 2)  # (F,)
    edges = _mel_to_hz(
        np.linspace(
            _hz_to_mel(np.float64(config.fmin)), _hz_to_mel(np.float64(config.top_hz)), config.n_mels + 2
        )
    )  # (M + 2,)
    widths = np.diff(edges)  # (M + 1,)
    ramps = edges[:, None] - fft_hz[None, :]  # (M + 2, F)
    lower = -ramps[:-2] / widths[:-1, None]  # rising slope of band i, (M, F)
    upper = ramps[2:] / widths[1:, None]  # falling slope of band i, (M, F)
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights


def _reflect_indices(length: int, pad: int) -> torch.Tensor:
    """Indices that reflect-pad a length-``length`` signal by ``pad`` on both sides.

    Unlike ``torch.nn.functional.pad(mode="reflect")`` this works when ``pad >= length``: it repeats the
    reflection like ``numpy.pad(mode="reflect")``, i.e. the signal extended with period ``2 (length - 1)``.
    """
    positions = torch.arange(-pad, length + pad)
    if length == 1:
        return torch.zeros_like(positions)
    period = 2 * (length - 1)
    folded = positions.remainder(period)
    return torch.where(folded >= length, period - folded, folded)


class MelSpectrogram(nn.Module):
    """Mel spectrogram of waveforms: centred STFT with a Hann window, power, mel filters.

    Matches ``librosa.feature.melspectrogram(y, sr=..., pad_mode=config.pad_mode, ...)`` to float64
    rounding (see tests/test_audio.py for the tolerance). Filters and window are non-persistent buffers,
    rebuilt from the config, so checkpoints carry only the config.

    Args:
        config: spectrogram settings; the default is librosa's defaults at 22,050 Hz.
        dtype: dtype of the window and filters; inputs of another dtype use them cast.
    """

    window: torch.Tensor  # (n_fft,) periodic Hann, zero-padded to n_fft
    filters: torch.Tensor  # (n_mels, n_fft // 2 + 1)

    def __init__(self, config: MelConfig | None = None, *, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.config = config or MelConfig()
        win_length = self.config.win_length or self.config.n_fft
        # Periodic Hann (scipy's get_window("hann", N, fftbins=True)), centred inside n_fft like librosa.
        window = torch.hann_window(win_length, periodic=True, dtype=torch.float64)
        left = (self.config.n_fft - win_length) // 2
        window = nn.functional.pad(window, (left, self.config.n_fft - win_length - left))
        self.register_buffer("window", window.to(dtype), persistent=False)
        self.register_buffer(
            "filters", torch.from_numpy(mel_filterbank(self.config)).to(dtype), persistent=False
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Compute the mel spectrogram.

        Args:
            waveform: ``(T,)`` or ``(B, T)`` samples at ``config.sample_rate``.

        Returns:
            ``(n_mels, frames)`` or ``(B, n_mels, frames)``; frames is ``config.num_frames(T)``.
        """
        if waveform.ndim not in (1, 2) or not waveform.is_floating_point():
            raise ShapeError(f"waveform must be a float (T,) or (B, T) tensor, got {tuple(waveform.shape)}")
        cfg = self.config
        batch = waveform.reshape(-1, waveform.shape[-1])  # (B, T)
        if cfg.center:
            pad = cfg.n_fft // 2
            if cfg.pad_mode == "reflect":
                batch = batch[:, _reflect_indices(batch.shape[-1], pad).to(batch.device)]  # (B, T + 2 pad)
            else:
                batch = nn.functional.pad(batch, (pad, pad))
        if batch.shape[-1] < cfg.n_fft:
            raise ShapeError(f"waveform has {waveform.shape[-1]} samples, fewer than n_fft={cfg.n_fft}")
        window = self.window.to(batch.dtype)
        spec = torch.stft(
            batch, cfg.n_fft, hop_length=cfg.hop_length, window=window, center=False, return_complex=True
        )  # (B, F, frames)
        if cfg.power == 2.0:
            power = spec.real.square() + spec.imag.square()
        else:
            power = spec.abs().pow(cfg.power)
        mel = torch.matmul(self.filters.to(power.dtype), power)  # (B, n_mels, frames)
        return mel[0] if waveform.ndim == 1 else mel


def log_mel(
    spectrogram: torch.Tensor, *, ref: float = 1.0, amin: float = 1e-10, top_db: float | None = 80.0
) -> torch.Tensor:
    """Power spectrogram to decibels, as ``librosa.power_to_db``.

    ``10 log10(max(S, amin)) - 10 log10(max(ref, amin))``, then values more than ``top_db`` below the
    peak are raised to ``peak - top_db``. The peak is taken per example (over the last two axes), so a
    batch gives what librosa gives for each example on its own.

    Args:
        spectrogram: ``(n_mels, frames)`` or ``(B, n_mels, frames)`` power values (>= 0).
        ref: the power that maps to 0 dB.
        amin: floor that keeps the log finite.
        top_db: dynamic range kept below the peak; ``None`` keeps everything.

    Returns:
        Decibels, same shape and dtype.
    """
    if not amin > 0:
        raise ConfigError(f"amin must be > 0, got {amin}")
    if top_db is not None and top_db < 0:
        raise ConfigError(f"top_db must be >= 0 or None, got {top_db}")
    if spectrogram.ndim < 2:
        raise ShapeError(
            f"spectrogram must be (n_mels, frames) or (B, n_mels, frames), got {tuple(spectrogram.shape)}"
        )
    db = 10.0 * torch.log10(spectrogram.clamp_min(amin))
    db = db - 10.0 * math.log10(max(ref, amin))
    if top_db is not None:
        peak = db.amax(dim=(-2, -1), keepdim=True)  # (..., 1, 1)
        db = torch.maximum(db, peak - top_db)
    return db


# ---------------------------------------------------------------------------------------------------
# SpecAugment (Park et al. 2019, "SpecAugment: A Simple Data Augmentation Method for ASR", sec. 2)
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecAugmentMasks:
    """The masks drawn for one batch; each tensor is ``(B, num_masks)`` int64.

    Mask ``k`` of example ``b`` covers mel bands ``[freq_start, freq_start + freq_width)`` and frames
    ``[time_start, time_start + time_width)``.
    """

    freq_start: torch.Tensor
    freq_width: torch.Tensor
    time_start: torch.Tensor
    time_width: torch.Tensor

    def to_mask(self, n_mels: int, n_frames: int) -> torch.Tensor:
        """Boolean ``(B, n_mels, n_frames)``, true where a value is masked."""
        bands = torch.arange(n_mels)[None, None, :]  # (1, 1, M)
        frames = torch.arange(n_frames)[None, None, :]  # (1, 1, T)
        in_freq = (bands >= self.freq_start[..., None]) & (
            bands < (self.freq_start + self.freq_width)[..., None]
        )
        in_time = (frames >= self.time_start[..., None]) & (
            frames < (self.time_start + self.time_width)[..., None]
        )
        # (B, K, M) -> (B, M, 1) and (B, K, T) -> (B, 1, T)
        return in_freq.any(dim=1)[:, :, None] | in_time.any(dim=1)[:, None, :]


class SpecAugment(nn.Module):
    """Frequency and time masking of (log-)mel spectrograms; the identity in eval mode.

    Each example gets ``num_masks`` frequency masks of width ``f ~ U{0, ..., freq_mask}`` starting at
    ``f0 ~ U{0, ..., n_mels - f}`` and ``num_masks`` time masks of width ``t ~ U{0, ..., time_mask}``
    (capped at ``max_time_ratio`` times the example's length, Park et al.'s ``p``) within its valid
    frames. Masked values become ``mask_value``: Park et al. mask to the mean, which is 0 for normalised
    features. Time warping, the third SpecAugment policy, is left out: the paper found it the least useful.

    Args:
        freq_mask: largest frequency mask width ``F`` in mel bands.
        time_mask: largest time mask width ``T`` in frames.
        num_masks: masks of each kind per example (``m_F = m_T``).
        max_time_ratio: a time mask covers at most this fraction of the example's frames.
        mask_value: value written into masked cells.
        generator: source of randomness; pass a seeded ``torch.Generator`` for repeatable masks.
    """

    def __init__(
        self,
        freq_mask: int,
        time_mask: int,
        num_masks: int = 1,
        *,
        max_time_ratio: float = 1.0,
        mask_value: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        for argument, value in (("freq_mask", freq_mask), ("time_mask", time_mask), ("num_masks", num_masks)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"SpecAugment {argument} must be an int >= 0, got {value!r}")
        if not 0 < max_time_ratio <= 1:
            raise ConfigError(f"SpecAugment max_time_ratio must be in (0, 1], got {max_time_ratio}")
        self.freq_mask = freq_mask
        self.time_mask = time_mask
        self.num_masks = num_masks
        self.max_time_ratio = max_time_ratio
        self.mask_value = mask_value
        self.generator = generator

    def sample_masks(self, batch: int, n_mels: int, lengths: torch.Tensor) -> SpecAugmentMasks:
        """Draw the masks for a batch.

        Args:
            batch: examples in the batch.
            n_mels: mel bands.
            lengths: ``(B,)`` valid frames per example.

        Returns:
            Starts and widths of every mask.
        """
        shape = (batch, self.num_masks)
        lengths = lengths.to(torch.int64).cpu()[:, None]  # (B, 1)

        def uniform(high: torch.Tensor) -> torch.Tensor:
            # integers uniform on {0, ..., high} (inclusive), elementwise
            u = torch.rand(shape, generator=self.generator, dtype=torch.float64)
            return (u * (high + 1).to(torch.float64)).floor().to(torch.int64)

        f_high = torch.full(shape, min(self.freq_mask, n_mels), dtype=torch.int64)
        freq_width = uniform(f_high)
        freq_start = uniform(n_mels - freq_width)
        t_cap = torch.minimum(
            torch.full_like(lengths, self.time_mask), (lengths * self.max_time_ratio).floor().long()
        )
        time_width = uniform(t_cap.expand(shape))
        time_start = uniform(lengths - time_width)
        return SpecAugmentMasks(freq_start, freq_width, time_start, time_width)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Mask a batch of spectrograms (training mode only).

        Args:
            features: ``(n_mels, frames)`` or ``(B, n_mels, frames)``.
            lengths: ``(B,)`` valid frames per example; ``None`` means all frames.

        Returns:
            The masked features (a new tensor), or ``features`` itself in eval mode.
        """
        if not self.training or self.num_masks == 0:
            return features
        if features.ndim not in (2, 3):
            raise ShapeError(
                f"features must be (n_mels, frames) or (B, n_mels, frames), got {tuple(features.shape)}"
            )
        batch = features.reshape(-1, *features.shape[-2:])  # (B, M, T)
        b, n_mels, n_frames = batch.shape
        if lengths is None:
            lengths = torch.full((b,), n_frames, dtype=torch.int64)
        elif lengths.shape != (b,):
            raise ShapeError(f"lengths must have shape ({b},), got {tuple(lengths.shape)}")
        mask = self.sample_masks(b, n_mels, lengths).to_mask(n_mels, n_frames).to(features.device)
        out = batch.masked_fill(mask, self.mask_value)
        return out.reshape(features.shape)
