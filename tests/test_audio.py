"""Audio decoding, log-mel parity with librosa, SpecAugment and the AudioCNN tower.

Tolerances for parity with ``librosa.feature.melspectrogram`` (``pad_mode="reflect"``, same settings):
``max |ours - librosa| / max |librosa|`` below 1e-10 in float64 (measured about 5e-16) and below 1e-5
in float32 (measured about 2e-7); ``log_mel`` against ``librosa.power_to_db`` within 1e-8 dB in
float64 and 1e-2 dB in float32 (measured about 1e-3 dB, in cells 80 dB below the peak).
"""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import torch

from polymodal.data.audio import (
    Audio,
    MelConfig,
    MelSpectrogram,
    SpecAugment,
    load_audio,
    log_mel,
    mel_filterbank,
    pad_or_trim,
)
from polymodal.errors import ConfigError, DataError, ShapeError
from polymodal.towers.audio_cnn import AudioCNN

librosa = pytest.importorskip("librosa")

SR = 8000
FSDD_ZIP = Path(__file__).resolve().parents[1] / "src" / "polymodal" / "data" / "assets" / "fsdd" / "fsdd.zip"


def sine(freq: float = 440.0, seconds: float = 1.0, sr: int = SR, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(samples: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / sr)[np.argmax(spectrum)])


def chirp(sr: int, seconds: float = 1.5, f0: float = 60.0, f1: float | None = None) -> np.ndarray:
    """Exponential sweep from f0 to f1 (default just under Nyquist), float64."""
    f1 = f1 or 0.45 * sr
    t = np.arange(int(seconds * sr)) / sr
    k = np.log(f1 / f0) / seconds
    return 0.8 * np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)


def fsdd_clip(name: str = "7_jackson_32") -> np.ndarray:
    with zipfile.ZipFile(FSDD_ZIP) as archive:
        return load_audio(archive.read(f"{name}.flac"), name=name).samples.astype(np.float64)


# ---------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------

FORMATS = [("wav", "WAV", "PCM_16"), ("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS")]


@pytest.mark.parametrize(("ext", "fmt", "subtype"), FORMATS)
def test_round_trip_keeps_the_sine(tmp_path: Path, ext: str, fmt: str, subtype: str) -> None:
    x = sine()
    path = tmp_path / f"tone.{ext}"
    soundfile.write(path, x, SR, format=fmt, subtype=subtype)
    audio = load_audio(path)
    assert audio.sample_rate == SR and audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.num_frames == len(x)
    if subtype == "PCM_16":  # lossless up to 16-bit quantisation
        np.testing.assert_allclose(audio.samples, x, atol=1 / 32768)
    else:  # Vorbis is lossy: the tone must survive
        assert np.sqrt(np.mean((audio.samples - x) ** 2)) < 0.05 * np.sqrt(np.mean(x**2))
    assert abs(peak_hz(audio.samples, SR) - 440.0) <= 1.0
    assert load_audio(path.read_bytes()).samples.tobytes() == audio.samples.tobytes()


@pytest.mark.filterwarnings("ignore::DeprecationWarning:audioread")  # librosa.load imports audioread
@pytest.mark.parametrize(("ext", "fmt", "subtype"), FORMATS)
def test_resampling_8k_to_16k_keeps_the_peak(tmp_path: Path, ext: str, fmt: str, subtype: str) -> None:
    path = tmp_path / f"tone.{ext}"
    soundfile.write(path, sine(), SR, format=fmt, subtype=subtype)
    audio = load_audio(path, sample_rate=16000)
    assert audio.sample_rate == 16000 and audio.num_frames == 2 * SR
    assert abs(peak_hz(audio.samples, 16000) - 440.0) <= 1.0
    # nothing above the old Nyquist appears: the band 4-8 kHz holds < 1e-4 of the energy
    spectrum = np.abs(np.fft.rfft(audio.samples)) ** 2
    freqs = np.fft.rfftfreq(audio.num_frames, 1 / 16000)
    assert spectrum[freqs > 4100].sum() < 1e-4 * spectrum.sum()
    # and matches what librosa.load does (soxr_hq) to float32 rounding
    ref, _ = librosa.load(path, sr=16000)
    np.testing.assert_allclose(audio.samples, ref, atol=1e-5)


def test_stereo_mixdown_averages_channels(tmp_path: Path) -> None:
    left, right = sine(440.0), sine(1000.0, amplitude=0.25)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), SR, subtype="FLOAT")
    mono = load_audio(path)
    np.testing.assert_allclose(mono.samples, (left + right) / 2, atol=1e-7)
    both = load_audio(path, mono=False)
    assert both.samples.shape == (2, len(left)) and both.num_channels == 2
    np.testing.assert_array_equal(both.samples[1], right)
    assert load_audio(path, mono=False, sample_rate=16000).samples.shape == (2, 2 * len(left))


def wav_bytes(samples: np.ndarray, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, SR, format=fmt, subtype=subtype)
    return buffer.getvalue()


@pytest.mark.parametrize(("ext", "fmt", "subtype"), FORMATS)
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_files_raise_naming_the_file(
    tmp_path: Path, ext: str, fmt: str, subtype: str, keep: float
) -> None:
    data = wav_bytes(sine(seconds=2.0), fmt, subtype)
    path = tmp_path / f"cut.{ext}"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DataError, match="truncated|cannot decode") as info:
        load_audio(path)
    assert info.value.path == str(path) and str(path) in str(info.value)


def test_garbage_raises_quickly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cases = {
        "noise.wav": rng.integers(0, 256, 1 << 20, dtype=np.uint8).tobytes(),
        "text.flac": b"this is not audio\n" * 1000,
        "header-only.wav": b"RIFF\x24\x00\x00\x00WAVEfmt ",
        "fake.ogg": b"OggS" + rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        start = time.perf_counter()
        with pytest.raises(DataError) as info:
            load_audio(path)
        assert time.perf_counter() - start < 2.0, name
        assert info.value.path == str(path)
    with pytest.raises(DataError, match="clip-7"):
        load_audio(cases["noise.wav"], name="clip-7")


def test_empty_missing_and_zero_length(tmp_path: Path) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "zero.wav").write_bytes(wav_bytes(np.zeros(0, np.float32)))
    for name, problem in [
        ("empty.wav", "empty"),
        ("missing.wav", "no such file"),
        ("zero.wav", "no audio frames"),
    ]:
        with pytest.raises(DataError, match=problem) as info:
            load_audio(tmp_path / name)
        assert info.value.path == str(tmp_path / name)
    with pytest.raises(DataError, match="not a file"):
        load_audio(tmp_path)
    with pytest.raises(DataError, match="<bytes>: empty"):
        load_audio(b"")
    with pytest.raises(ConfigError):
        load_audio(tmp_path / "x.wav", sample_rate=0)


def test_streaming_wav_without_a_length_is_not_called_truncated() -> None:
    data = bytearray(wav_bytes(sine(seconds=0.25)))
    at = data.index(b"data") + 4
    data[at : at + 4] = (0xFFFFFFFF).to_bytes(4, "little")  # what pipe writers (ffmpeg) leave
    assert load_audio(bytes(data)).num_frames == SR // 4


def test_non_finite_samples_raise() -> None:
    x = sine(seconds=0.1)
    x[10] = np.nan
    with pytest.raises(DataError, match="non-finite"):
        load_audio(wav_bytes(x, subtype="FLOAT"), name="nan.wav")


def test_audio_validates() -> None:
    with pytest.raises(ShapeError):
        Audio(samples=np.zeros(4), sample_rate=SR)  # float64
    with pytest.raises(ShapeError):
        Audio(samples=np.zeros((1, 2, 3), np.float32), sample_rate=SR)
    with pytest.raises(ConfigError):
        Audio(samples=np.zeros(4, np.float32), sample_rate=0)
    audio = Audio(samples=np.zeros((2, 800), np.float32), sample_rate=SR)
    assert (audio.num_channels, audio.num_frames, audio.duration) == (2, 800, 0.1)


def test_pad_or_trim() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(pad_or_trim(x, 5), [[0, 1, 2, 0, 0], [3, 4, 5, 0, 0]])
    np.testing.assert_array_equal(pad_or_trim(x, 2), [[0, 1], [3, 4]])
    assert pad_or_trim(x, 3) is x
    t = torch.arange(3.0)
    assert torch.equal(pad_or_trim(t, 4), torch.tensor([0.0, 1.0, 2.0, 0.0]))
    assert torch.equal(pad_or_trim(t, 0), torch.zeros(0))
    with pytest.raises(ConfigError):
        pad_or_trim(x, -1)


# ---------------------------------------------------------------------------------------------------
# Mel spectrogram parity with librosa
# ---------------------------------------------------------------------------------------------------

CONFIGS = {
    "fsdd": MelConfig(sample_rate=8000, n_fft=256, hop_length=80, n_mels=40),
    "librosa-defaults": MelConfig(sample_rate=22050),
    "window-band": MelConfig(
        sample_rate=16000, n_fft=512, hop_length=160, win_length=400, n_mels=64, fmin=20.0, fmax=7600.0
    ),
    "magnitude-zero-pad": MelConfig(
        sample_rate=8000, n_fft=200, hop_length=50, n_mels=32, power=1.0, pad_mode="constant"
    ),
}


def librosa_mel(y: np.ndarray, cfg: MelConfig, dtype: type = np.float64) -> np.ndarray:
    return librosa.feature.melspectrogram(
        y=y,
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
        power=cfg.power,
        pad_mode=cfg.pad_mode,
        dtype=dtype,
    )


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("signal", ["fsdd", "chirp"])
def test_mel_parity_with_librosa(name: str, signal: str) -> None:
    cfg = CONFIGS[name]
    y = fsdd_clip() if signal == "fsdd" else chirp(cfg.sample_rate)
    ref = librosa_mel(y, cfg)
    ours64 = MelSpectrogram(cfg, dtype=torch.float64)(torch.from_numpy(y)).numpy()
    assert ours64.shape == ref.shape == (cfg.n_mels, cfg.num_frames(len(y)))
    assert np.abs(ours64 - ref).max() / np.abs(ref).max() < 1e-10
    ours32 = MelSpectrogram(cfg)(torch.from_numpy(y.astype(np.float32))).numpy()
    assert ours32.dtype == np.float32
    assert np.abs(ours32 - ref).max() / np.abs(ref).max() < 1e-5
    db_ref = librosa.power_to_db(ref)
    assert np.abs(log_mel(torch.from_numpy(ours64)).numpy() - db_ref).max() < 1e-8
    if cfg.power == 2.0:
        # cells 80 dB below the peak carry float32 FFT rounding of ~1e-7 of the peak: ~1e-3 dB there.
        # (For magnitudes, power=1, 80 dB spans 1e-8 of the peak, below float32 resolution.)
        assert np.abs(log_mel(torch.from_numpy(ours32)).numpy() - db_ref).max() < 1e-2


def test_filterbank_equals_librosa() -> None:
    for cfg in CONFIGS.values():
        ref = librosa.filters.mel(
            sr=cfg.sample_rate,
            n_fft=cfg.n_fft,
            n_mels=cfg.n_mels,
            fmin=cfg.fmin,
            fmax=cfg.fmax,
            dtype=np.float64,
        )
        np.testing.assert_allclose(mel_filterbank(cfg), ref, rtol=1e-12, atol=1e-15)


@pytest.mark.filterwarnings("ignore:n_fft=256 is too large")  # librosa warns; padding is the point
def test_short_signal_reflects_repeatedly_like_numpy() -> None:
    cfg = MelConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=16)
    y = np.random.default_rng(1).standard_normal(50)  # shorter than the 128-sample centre pad
    ours = MelSpectrogram(cfg, dtype=torch.float64)(torch.from_numpy(y)).numpy()
    ref = librosa_mel(y, cfg)
    assert np.abs(ours - ref).max() / np.abs(ref).max() < 1e-10


def test_batch_equals_one_by_one_and_log_mel_peak_is_per_example() -> None:
    cfg = CONFIGS["fsdd"]
    mel = MelSpectrogram(cfg, dtype=torch.float64)
    y = torch.from_numpy(np.stack([chirp(SR, 0.5), 1e-3 * chirp(SR, 0.5, f0=300.0)]))  # (2, T)
    batch = mel(y)
    assert batch.shape == (2, 40, cfg.num_frames(y.shape[1]))
    for i in range(2):
        torch.testing.assert_close(batch[i], mel(y[i]), rtol=1e-12, atol=0)
        np.testing.assert_allclose(
            log_mel(batch)[i].numpy(), librosa.power_to_db(batch[i].numpy()), atol=1e-8
        )
    # the quiet example keeps its own 80 dB range instead of being clamped against the loud one
    assert log_mel(batch)[1].max() < log_mel(batch)[0].max() - 40
    with pytest.raises(ShapeError):
        mel(torch.zeros(2, 3, 400))
    with pytest.raises(ConfigError):
        log_mel(batch, top_db=-1.0)


def test_mel_config_validates() -> None:
    bad_settings: list[dict[str, Any]] = [
        dict(n_fft=0),
        dict(win_length=4096),
        dict(fmin=12000.0),
        dict(fmax=12000.0, sample_rate=16000),
        dict(pad_mode="edge"),
        dict(power=0.0),
        dict(hop_length=True),
    ]
    for bad in bad_settings:
        with pytest.raises(ConfigError):
            MelConfig(**bad)


# ---------------------------------------------------------------------------------------------------
# SpecAugment
# ---------------------------------------------------------------------------------------------------


def test_specaugment_masks_have_the_requested_count_and_widths() -> None:
    aug = SpecAugment(freq_mask=7, time_mask=10, num_masks=2, generator=torch.Generator().manual_seed(0))
    lengths = torch.full((500,), 100)
    masks = aug.sample_masks(500, 40, lengths)
    for tensor in (masks.freq_start, masks.freq_width, masks.time_start, masks.time_width):
        assert tensor.shape == (500, 2)
    # widths are uniform on {0, ..., F} and {0, ..., T}: every value occurs, none above the maximum
    assert set(masks.freq_width.flatten().tolist()) == set(range(8))
    assert set(masks.time_width.flatten().tolist()) == set(range(11))
    assert bool(((masks.freq_start + masks.freq_width) <= 40).all())
    assert bool(((masks.time_start + masks.time_width) <= 100).all())


def test_specaugment_writes_the_masks_and_is_seedable() -> None:
    x = torch.randn(16, 40, 120) + 5.0  # nothing is 0 before masking
    lengths = torch.randint(30, 121, (16,), generator=torch.Generator().manual_seed(1))
    aug = SpecAugment(12, 25, 2, generator=torch.Generator().manual_seed(3)).train()
    out = aug(x, lengths)
    again = SpecAugment(12, 25, 2, generator=torch.Generator().manual_seed(3)).train()
    masks = again.sample_masks(16, 40, lengths)
    expected = masks.to_mask(40, 120)
    assert torch.equal(out == 0, expected)
    assert torch.equal(out[~expected], x[~expected])
    # time masks stay inside each example's valid frames
    assert bool(((masks.time_start + masks.time_width) <= lengths[:, None]).all())
    # one example only: (n_mels, frames) in, same shape out
    assert aug(x[0]).shape == (40, 120)


def test_specaugment_is_identity_in_eval() -> None:
    x = torch.randn(2, 40, 50)
    aug = SpecAugment(10, 10, 3).eval()
    assert aug(x) is x
    with pytest.raises(ConfigError):
        SpecAugment(-1, 5)


def test_specaugment_time_ratio_caps_the_width() -> None:
    aug = SpecAugment(0, 100, 1, max_time_ratio=0.2, generator=torch.Generator().manual_seed(0))
    masks = aug.sample_masks(200, 8, torch.full((200,), 50))
    assert int(masks.time_width.max()) == 10 and int(masks.freq_width.max()) == 0


# ---------------------------------------------------------------------------------------------------
# AudioCNN
# ---------------------------------------------------------------------------------------------------


def test_audio_cnn_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    model = AudioCNN(40, 32, channels=(8, 16))
    x = torch.randn(3, 40, 57, requires_grad=True)
    out = model(x, torch.tensor([57, 20, 1]))
    assert out.shape == (3, 32) and torch.isfinite(out).all()
    out.square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad[1, :, 20:].abs().sum() == 0  # padding does not matter
    assert model(torch.randn(2, 40, 3)).shape == (2, 32)  # shorter than the total pooling
    with pytest.raises(ShapeError):
        model(torch.randn(2, 41, 10))
    with pytest.raises(ShapeError):
        model(torch.randn(2, 40, 10), torch.tensor([10, 11]))
    with pytest.raises(ConfigError):
        AudioCNN(0, 8)


@pytest.mark.parametrize("length", [17, 24, 33])
def test_audio_cnn_embedding_does_not_depend_on_padding(length: int) -> None:
    torch.manual_seed(0)
    model = AudioCNN(24, 16, channels=(8, 8, 16)).eval()
    clip = torch.randn(1, 24, length) * 10 - 40  # dB-like values
    alone = model(clip)
    padded = torch.cat(
        [torch.nn.functional.pad(clip, (0, 60 - length)), torch.randn(1, 24, 60)]
    )  # (2, 24, 60)
    in_batch = model(padded, torch.tensor([length, 60]))
    torch.testing.assert_close(in_batch[0:1], alone, rtol=1e-5, atol=1e-5)


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread; on a loaded 2-core machine 2 threads are ~50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_audio_cnn_learns_to_tell_low_from_high_tones(one_thread: None) -> None:
    torch.manual_seed(0)
    cfg = MelConfig(sample_rate=SR, n_fft=256, hop_length=80, n_mels=32)
    mel = MelSpectrogram(cfg)
    freqs = [300.0, 400.0, 500.0, 600.0, 2000.0, 2400.0, 2800.0, 3200.0]
    x = torch.from_numpy(np.stack([sine(f, seconds=0.3) for f in freqs]))  # (8, T)
    x = x + 0.05 * torch.randn_like(x)
    feats = log_mel(mel(x))
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    tower = AudioCNN(32, 2, channels=(8, 16))
    optimizer = torch.optim.Adam(tower.parameters(), lr=1e-2)
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(tower(feats), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert (tower(feats).argmax(-1) == y).all() and loss.item() < 0.1
