"""Decode + log-mel throughput: polymodal vs librosa on the same FSDD clips. Prints one JSON line.

    python benchmarks/bench_audio.py [--clips 300] [--sample-rate 16000] [--threads 1]

Both sides start from the FLAC bytes of the vendored FSDD (so no file-system caching differences) and
compute the same features: ours is ``load_audio`` + ``MelSpectrogram`` + ``log_mel`` one clip at a
time; librosa's is ``librosa.load`` + ``librosa.feature.melspectrogram`` + ``librosa.power_to_db``.
Their outputs are compared too (max abs dB difference) so the race is between equal results.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import time
import zipfile
from importlib import metadata, resources

import numpy as np
import torch

from polymodal.data.audio import MelConfig, MelSpectrogram, load_audio, log_mel


def clips(count: int) -> list[bytes]:
    """``count`` FLAC clips spread evenly over the vendored FSDD (every digit and speaker)."""
    path = resources.files("polymodal.data").joinpath("assets", "fsdd", "fsdd.zip")
    with path.open("rb") as handle, zipfile.ZipFile(io.BytesIO(handle.read())) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith(".flac"))
        step = max(1, len(names) // count)
        return [archive.read(name) for name in names[::step][:count]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=300)
    parser.add_argument("--sample-rate", type=int, default=None, help="resample to this rate (both sides)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (librosa's FFT is single-threaded)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timed passes")
    args = parser.parse_args()
    import librosa  # test/bench-only dependency

    torch.set_num_threads(args.threads)
    data = clips(args.clips)
    rate = args.sample_rate or 8000
    cfg = MelConfig(sample_rate=rate, n_fft=256 * rate // 8000, hop_length=80 * rate // 8000, n_mels=40)
    mel = MelSpectrogram(cfg)

    def ours(blob: bytes) -> np.ndarray:
        audio = load_audio(blob, sample_rate=args.sample_rate)
        with torch.inference_mode():
            return log_mel(mel(audio.to_tensor())).numpy()

    def theirs(blob: bytes) -> np.ndarray:
        y, sr = librosa.load(io.BytesIO(blob), sr=args.sample_rate)
        spec = librosa.feature.melspectrogram(
            y=y, sr=sr, n_fft=cfg.n_fft, hop_length=cfg.hop_length, n_mels=cfg.n_mels, pad_mode="reflect"
        )
        return librosa.power_to_db(spec)

    diff = max(float(np.abs(ours(b) - theirs(b)).max()) for b in data[:20])  # also warms both up
    timings = {}
    for name, fn in (("ours", ours), ("librosa", theirs)):
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            for blob in data:
                fn(blob)
            best = min(best, time.perf_counter() - start)
        timings[name] = len(data) / best
    print(
        json.dumps(
            {
                "bench": "audio_decode_logmel",
                "clips": len(data),
                "sample_rate": rate,
                "mel": {"n_fft": cfg.n_fft, "hop_length": cfg.hop_length, "n_mels": cfg.n_mels},
                "threads": args.threads,
                "ours_clips_per_s": round(timings["ours"], 1),
                "librosa_clips_per_s": round(timings["librosa"], 1),
                "ratio_ours_over_librosa": round(timings["ours"] / timings["librosa"], 3),
                "max_abs_db_diff": diff,
                "torch": torch.__version__,
                "librosa": metadata.version("librosa"),
                "machine": platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
