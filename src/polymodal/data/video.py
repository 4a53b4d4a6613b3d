"""Video: decode with PyAV, sample frames uniformly or at a rate, keep the audio track.

Read top to bottom: the :class:`Video` container, :func:`sample_indices` (which frames to keep, a pure
function of the frame count and timestamps so it can be tested without a decoder), then
:func:`load_video` and its two passes over the file:

1. demux the video stream without decoding it, which yields every frame's presentation timestamp
   cheaply and bounds the work (``max_frames``) before any pixel is decoded;
2. decode, converting to RGB only the frames that were selected (plus the audio track if asked).

Every failure (missing file, not a container, no video stream, truncated or corrupt stream, a frame
size over ``max_pixels``) is a :class:`~polymodal.errors.DataError` that names the file.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from polymodal.errors import ConfigError, DataError, ShapeError

if TYPE_CHECKING:  # data/audio.py pulls in soundfile and soxr; import it only where audio is decoded
    from polymodal.data.audio import Audio

__all__ = ["DEFAULT_MAX_FRAMES", "DEFAULT_MAX_FRAME_PIXELS", "Video", "load_video", "sample_indices"]

DEFAULT_MAX_FRAMES = 100_000  # about an hour at 30 fps; far above a training clip, below a runaway
DEFAULT_MAX_FRAME_PIXELS = 16_000_000  # 4K UHD is 8.3 Mpx
DEFAULT_MAX_AUDIO_SECONDS = 3600.0


@dataclass(frozen=True)
class Video:
    """Decoded, sampled video frames and (optionally) the audio track.

    Args:
        frames: uint8 RGB frames, ``(T, H, W, 3)``.
        fps: the source's average frame rate (frames per second), not the sampling rate.
        times: ``(T,)`` float64 presentation time of each kept frame in seconds, from the first frame.
        indices: ``(T,)`` int64 index of each kept frame among the source's frames (presentation order).
        num_source_frames: frames in the source stream.
        audio: the audio track as :class:`~polymodal.data.audio.Audio`, or ``None``.
    """

    frames: np.ndarray
    fps: float
    times: np.ndarray
    indices: np.ndarray
    num_source_frames: int
    audio: Audio | None = None

    def __post_init__(self) -> None:
        f = self.frames
        if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
            shape = getattr(f, "shape", None)
            raise ShapeError(f"Video.frames must be a uint8 (T, H, W, 3) array, got {shape}")
        for name in ("times", "indices"):
            value = getattr(self, name)
            if not isinstance(value, np.ndarray) or value.shape != (f.shape[0],):
                raise ShapeError(
                    f"Video.{name} must be a ({f.shape[0]},) array, got {getattr(value, 'shape', None)}"
                )
        if not (isinstance(self.fps, float | int) and math.isfinite(self.fps) and self.fps > 0):
            raise ConfigError(f"Video.fps must be a positive number, got {self.fps!r}")

    @property
    def num_frames(self) -> int:
        """Frames kept (``T``)."""
        return int(self.frames.shape[0])

    @property
    def duration(self) -> float:
        """Length of the source video in seconds (``num_source_frames / fps``)."""
        return self.num_source_frames / float(self.fps)

    def to_tensor(self) -> torch.Tensor:
        """The frames as a uint8 tensor ``(T, 3, H, W)``, channels first like image towers expect."""
        return torch.from_numpy(self.frames).permute(0, 3, 1, 2).contiguous()  # (T, 3, H, W)


# ---------------------------------------------------------------------------------------------------
# Which frames to keep
# ---------------------------------------------------------------------------------------------------


def sample_indices(
    times: np.ndarray, *, num_frames: int | None = None, fps: float | None = None, source_fps: float
) -> np.ndarray:
    """Choose frames from a stream of ``len(times)`` frames.

    Uniform (``num_frames=N``): the centre frame of each of N equal segments,
    ``floor((i + 0.5) * n / N)`` for ``i = 0..N-1`` (the TSN segment sampling of Wang et al. 2016,
    without the random offset), so the choice is symmetric in time and has no repeats while ``N <= n``;
    for ``N > n`` frames repeat. At a rate (``fps=r``): the frame on screen at each time
    ``t_0 + k / r`` for ``t_0 + k / r < t_end`` (``t_end`` is the last frame's time plus one source frame
    period), that is the last frame whose time is ``<=`` the sampling time. Neither: every frame.

    Args:
        times: ``(n,)`` presentation times of the source frames in seconds, sorted.
        num_frames: frames to keep, uniformly spread.
        fps: sampling rate in frames per second.
        source_fps: the source's frame rate, for the end of the last frame.

    Returns:
        ``(T,)`` int64 indices into ``times``.
    """
    n = len(times)
    if num_frames is not None and fps is not None:
        raise ConfigError("give num_frames or fps, not both")
    if n == 0:
        return np.zeros(0, np.int64)
    if num_frames is not None:
        i = np.arange(num_frames, dtype=np.float64)
        return np.minimum(np.floor((i + 0.5) * n / num_frames).astype(np.int64), n - 1)
    if fps is not None:
        start, end = float(times[0]), float(times[-1]) + 1.0 / source_fps
        # 1e-9 absorbs rounding of k / fps so a sampling time equal to a frame time picks that frame
        steps = np.arange(0, max(1, math.ceil((end - start) * fps - 1e-9)), dtype=np.float64)
        wanted = start + steps / fps
        return np.clip(np.searchsorted(times, wanted + 1e-9, side="right") - 1, 0, n - 1).astype(np.int64)
    return np.arange(n, dtype=np.int64)


# ---------------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------------


def load_video(
    source: str | Path | bytes,
    *,
    num_frames: int | None = None,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    audio: bool = True,
    sample_rate: int | None = None,
    mono: bool = True,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_pixels: int = DEFAULT_MAX_FRAME_PIXELS,
    max_audio_seconds: float = DEFAULT_MAX_AUDIO_SECONDS,
    name: str | None = None,
) -> Video:
    """Decode a video file (any container and codec FFmpeg reads) into sampled RGB frames.

    Args:
        source: a path, or the file's bytes.
        num_frames: keep this many frames spread uniformly (see :func:`sample_indices`).
        fps: keep frames at this rate instead; with neither, every frame is kept.
        size: ``(width, height)`` to scale the kept frames to (FFmpeg's swscale, bicubic);
            ``None`` keeps the source size.
        audio: decode the first audio stream too (``Video.audio``; ``None`` when the file has none).
        sample_rate: resample the audio to this rate with soxr's "HQ" filter, as
            :func:`polymodal.data.audio.load_audio` does; ``None`` keeps the stream's rate.
        mono: mix the audio down to one channel (mean of the channels).
        max_frames: refuse streams with more frames than this (checked before decoding).
        max_pixels: refuse frames larger than this (width * height, from the stream header).
        max_audio_seconds: refuse audio tracks longer than this.
        name: what to call the source in error messages (for bytes).

    Returns:
        The :class:`Video`.

    Raises:
        DataError: missing or unreadable file, not a video, no video stream, no decodable frames,
            a truncated or corrupt stream, or over a limit. ``error.path`` names the file.
        ConfigError: invalid sampling or limit arguments.
    """
    _check_args(num_frames, fps, size, sample_rate, max_frames, max_pixels)
    if isinstance(source, bytes | bytearray | memoryview):
        where = name or "<bytes>"
        data = bytes(source)
    elif isinstance(source, str | Path):
        where = name or str(source)
        data = _read_file(Path(source), where)
    else:
        raise ConfigError(f"load_video: source must be a path or bytes, got {type(source).__name__}")
    if not data:
        raise DataError(where, "empty: the file has 0 bytes")

    import av  # PyAV: only needed here, and it loads the FFmpeg libraries

    try:
        times, source_fps = _frame_times(av, data, where, max_frames, max_pixels)
        keep = sample_indices(times, num_frames=num_frames, fps=fps, source_fps=source_fps)
        frames, track = _decode(av, data, where, keep, size, audio, max_audio_seconds)
    except (av.FFmpegError, OSError, EOFError, ValueError, IndexError, MemoryError, RuntimeError) as e:
        if isinstance(e, ConfigError | ShapeError):  # ConfigError and ShapeError are ValueErrors
            raise
        raise DataError(where, f"cannot decode as video: {_short(e)}") from None
    audio_out = _to_audio(track, sample_rate, mono) if track is not None else None
    return Video(
        frames=frames,
        fps=float(source_fps),
        times=(times[keep] - times[0]).astype(np.float64),
        indices=keep,
        num_source_frames=len(times),
        audio=audio_out,
    )


def _check_args(
    num_frames: int | None,
    fps: float | None,
    size: tuple[int, int] | None,
    sample_rate: int | None,
    max_frames: int,
    max_pixels: int,
) -> None:
    def positive_int(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    if num_frames is not None and fps is not None:
        raise ConfigError("load_video: give num_frames or fps, not both")
    if num_frames is not None and not positive_int(num_frames):
        raise ConfigError(f"load_video: num_frames must be a positive int, got {num_frames!r}")
    if fps is not None and not (isinstance(fps, int | float) and math.isfinite(fps) and fps > 0):
        raise ConfigError(f"load_video: fps must be a positive number, got {fps!r}")
    if size is not None and not (len(size) == 2 and all(positive_int(s) for s in size)):
        raise ConfigError(f"load_video: size must be (width, height) positive ints, got {size!r}")
    if sample_rate is not None and not positive_int(sample_rate):
        raise ConfigError(f"load_video: sample_rate must be a positive int or None, got {sample_rate!r}")
    for arg, value in (("max_frames", max_frames), ("max_pixels", max_pixels)):
        if not positive_int(value):
            raise ConfigError(f"load_video: {arg} must be a positive int, got {value!r}")


def _read_file(path: Path, where: str) -> bytes:
    """Read the whole file: training clips are small, and one code path then serves bytes too."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(where, "file not found") from None
    except IsADirectoryError:
        raise DataError(where, "is a directory, not a video file") from None
    except PermissionError:
        raise DataError(where, "permission denied") from None
    except OSError as e:
        raise DataError(where, f"cannot read file ({_short(e)})") from None


def _open(av: Any, data: bytes, where: str) -> Any:
    container = av.open(io.BytesIO(data), mode="r")
    if not container.streams.video:
        container.close()
        raise DataError(where, "no video stream")
    return container


def _frame_times(
    av: Any, data: bytes, where: str, max_frames: int, max_pixels: int
) -> tuple[np.ndarray, float]:
    """Pass 1: presentation times of all frames from the packets, without decoding; and the frame rate."""
    with _open(av, data, where) as container:
        stream = container.streams.video[0]
        if stream.codec_context is None:  # FFmpeg has no decoder for the codec id in the header
            raise DataError(where, "unsupported or corrupt video codec")
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > max_pixels:
            raise DataError(
                where, f"frames are {width}x{height}, over the {max_pixels}-pixel limit (max_pixels)"
            )
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        source_fps = float(rate) if rate else 0.0
        pts: list[int | None] = []
        for packet in container.demux(stream):
            if packet.size == 0:  # the empty packet that flushes the decoder
                continue
            pts.append(packet.pts)
            if len(pts) > max_frames:
                raise DataError(where, f"more than {max_frames} frames (max_frames)")
        if not pts:
            raise DataError(where, "the video stream has no frames")
        if not source_fps > 0 or not math.isfinite(source_fps):
            raise DataError(where, "the video stream has no frame rate")
        if all(p is not None for p in pts) and stream.time_base is not None:
            # packets come in decode order; with B-frames that is not presentation order
            times = np.sort(np.array(pts, dtype=np.float64)) * float(stream.time_base)
        else:  # raw streams without timestamps: frames are evenly spaced
            times = np.arange(len(pts), dtype=np.float64) / source_fps
    return times, source_fps


def _decode(
    av: Any,
    data: bytes,
    where: str,
    keep: np.ndarray,
    size: tuple[int, int] | None,
    with_audio: bool,
    max_audio_seconds: float,
) -> tuple[np.ndarray, tuple[np.ndarray, int] | None]:
    """Pass 2: decode, converting the kept frames to RGB, and collect the audio as (C, T) float32."""
    wanted: dict[int, list[int]] = {}  # source frame index -> positions in the output
    for pos, index in enumerate(keep.tolist()):
        wanted.setdefault(index, []).append(pos)
    last = int(keep.max())
    out: list[np.ndarray | None] = [None] * len(keep)
    kwargs = {} if size is None else {"width": size[0], "height": size[1], "interpolation": "BICUBIC"}
    with _open(av, data, where) as container:
        vstream = container.streams.video[0]
        astream = container.streams.audio[0] if with_audio and container.streams.audio else None
        streams = [vstream] if astream is None else [vstream, astream]
        resampler = None
        if astream is not None:
            layout = getattr(astream.codec_context, "layout", None)
            if layout is None or not astream.rate:
                raise DataError(
                    where, "the audio stream has no channel layout or sample rate (corrupt header)"
                )
            resampler = av.AudioResampler(format="fltp", layout=layout)
        chunks: list[np.ndarray] = []
        audio_len, audio_rate = 0, int(astream.rate) if astream is not None else 0
        decoded = 0
        for packet in container.demux(*streams):
            if packet.stream.type == "video":
                if decoded > last:
                    continue  # frames past the last kept one need no decoding
                for frame in packet.decode():  # frames come out in presentation order
                    if decoded in wanted:
                        rgb = frame.to_ndarray(format="rgb24", **kwargs)  # (H, W, 3)
                        for pos in wanted[decoded]:
                            out[pos] = rgb
                    decoded += 1
            else:
                for frame in packet.decode():
                    for converted in resampler.resample(frame):  # type: ignore[union-attr]
                        chunk = converted.to_ndarray()  # (C, n) float32, planar
                        chunks.append(chunk)
                        audio_len += chunk.shape[-1]
                    if audio_len > max_audio_seconds * audio_rate:
                        raise DataError(
                            where, f"audio track longer than {max_audio_seconds:g} s (max_audio_seconds)"
                        )
        if resampler is not None:
            chunks.extend(f.to_ndarray() for f in resampler.resample(None))
    if decoded <= last:
        raise DataError(where, f"truncated or corrupt: decoded {decoded} of the {last + 1} frames needed")
    frames = np.stack([f for f in out if f is not None])  # (T, H, W, 3)
    track = None
    if chunks and audio_rate > 0:
        samples = np.concatenate(chunks, axis=-1).astype(np.float32, copy=False)  # (C, T)
        if samples.shape[-1] > 0:
            if not np.isfinite(samples).all():
                raise DataError(where, "audio track holds non-finite samples")
            track = (samples, audio_rate)
    return frames, track


def _to_audio(track: tuple[np.ndarray, int], sample_rate: int | None, mono: bool) -> Audio:
    from polymodal.data.audio import Audio  # soundfile and soxr are loaded only when audio is used

    samples, rate = track
    if mono and samples.shape[0] > 1:
        samples = samples.mean(axis=0, keepdims=True, dtype=np.float32)  # (1, T), as librosa.to_mono
    if sample_rate is not None and sample_rate != rate:
        import soxr

        samples = np.ascontiguousarray(soxr.resample(samples.T, rate, sample_rate, quality="HQ").T)  # (C, T)
        rate = sample_rate
    if mono:
        samples = samples[0]  # (T,)
    return Audio(samples=np.ascontiguousarray(samples, dtype=np.float32), sample_rate=int(rate))


def _short(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    text = text.splitlines()[0].replace(": '<none>'", "")  # PyAV's placeholder for "no file name"
    return text[:160]
