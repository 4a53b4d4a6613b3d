"""Look at a source before training on it: statistics per modality, and a contact sheet.

:func:`inspect_source` makes one pass over a :class:`~polymodal.data.sources.Source` and counts what
is there and what is missing: records per modality and missing rates (the lecture's "missing data" is a
property of the dataset to measure, not an afterthought), image sizes, audio lengths, video frame counts,
text lengths in words, labels, and the records that were skipped with the reason. :func:`contact_sheet`
draws the first records as one PNG: image thumbnails, log-mel spectrograms of the audio, a strip of video
frames and the text, one row per record.
"""

from __future__ import annotations

import math
import statistics
import textwrap
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from polymodal.data.decode import decode
from polymodal.data.record import MODALITIES, BadRecord, Record
from polymodal.data.sources import Source
from polymodal.errors import ConfigError, DataError

# ---------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Five numbers of a distribution (``p50`` is the median)."""

    count: int
    min: float
    p50: float
    mean: float
    max: float

    @staticmethod
    def of(values: list[float]) -> Summary | None:
        """The summary of ``values``, or ``None`` when there are none."""
        if not values:
            return None
        return Summary(len(values), float(min(values)), float(statistics.median(values)),
                       float(statistics.fmean(values)), float(max(values)))

    def to_dict(self) -> dict[str, float]:
        return {"count": self.count, "min": self.min, "p50": self.p50, "mean": self.mean, "max": self.max}


@dataclass
class SourceStats:
    """What :func:`inspect_source` found.

    Attributes:
        source: the source's spec.
        records: good records.
        bad: skipped records, each naming its file and the problem.
        present: per modality, the records that carry it.
        image_width, image_height: pixel sizes of the images.
        image_sizes: ``"WxH"`` -> count, most common first (at most ``top`` entries).
        audio_seconds: audio lengths; ``audio_rates``: sample rate -> count.
        video_frames: frames in each video's source stream; ``video_seconds``: their durations.
        text_words: text lengths in words (whitespace-separated).
        labels: label (as text) -> count, most common first; records without one are ``unlabelled``.
        ignored: files a folder source left out because no modality reads their type.
    """

    source: str
    records: int = 0
    bad: list[BadRecord] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    present: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))
    image_width: Summary | None = None
    image_height: Summary | None = None
    image_sizes: dict[str, int] = field(default_factory=dict)
    audio_seconds: Summary | None = None
    audio_rates: dict[str, int] = field(default_factory=dict)
    video_frames: Summary | None = None
    video_seconds: Summary | None = None
    text_words: Summary | None = None
    labels: dict[str, int] = field(default_factory=dict)
    unlabelled: int = 0

    @property
    def missing_rate(self) -> dict[str, float]:
        """Per modality, the fraction of good records without it (0 when there are no records)."""
        return {m: (1.0 - self.present[m] / self.records) if self.records else 0.0 for m in MODALITIES}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``records`` (good count), ``bad`` (one entry per skipped record), and the stats."""

        def s(x: Summary | None) -> dict[str, float] | None:
            return None if x is None else x.to_dict()

        return {
            "source": self.source,
            "records": self.records,
            "bad": [b.to_dict() for b in self.bad],
            "ignored": self.ignored,
            "present": self.present,
            "missing_rate": self.missing_rate,
            "image": {"width": s(self.image_width), "height": s(self.image_height), "sizes": self.image_sizes},
            "audio": {"seconds": s(self.audio_seconds), "sample_rates": self.audio_rates},
            "video": {"frames": s(self.video_frames), "seconds": s(self.video_seconds)},
            "text": {"words": s(self.text_words)},
            "labels": self.labels,
            "unlabelled": self.unlabelled,
        }


def inspect_source(source: Source, *, top: int = 20) -> SourceStats:
    """One pass over a source, counting modalities, sizes, lengths and labels.

    Open the source with ``decode=True`` to get sizes and lengths (records that carry paths are counted
    as present, without sizes).

    Args:
        source: the source (its ``bad`` list after the pass goes into the stats).
        top: how many image sizes and labels to keep, most common first.

    Returns:
        The :class:`SourceStats`.
    """
    stats = SourceStats(source=source.spec)
    widths: list[float] = []
    heights: list[float] = []
    sizes: Counter[str] = Counter()
    seconds: list[float] = []
    rates: Counter[str] = Counter()
    frames: list[float] = []
    video_seconds: list[float] = []
    words: list[float] = []
    labels: Counter[str] = Counter()
    for record in source:
        stats.records += 1
        for m, present in record.present().items():
            stats.present[m] += int(present)
        if isinstance(record.image, Image.Image):
            w, h = record.image.size
            widths.append(w)
            heights.append(h)
            sizes[f"{w}x{h}"] += 1
        if hasattr(record.audio, "duration"):
            seconds.append(float(record.audio.duration))
            rates[str(record.audio.sample_rate)] += 1
        if hasattr(record.video, "num_source_frames"):
            frames.append(float(record.video.num_source_frames))
            video_seconds.append(float(record.video.duration))
        if isinstance(record.text, str):
            words.append(float(len(record.text.split())))
        if record.label is None:
            stats.unlabelled += 1
        else:
            labels[str(record.label)] += 1
    stats.bad = list(source.bad)
    stats.ignored = [str(p) for p in source.ignored]
    stats.image_width, stats.image_height = Summary.of(widths), Summary.of(heights)
    stats.image_sizes = dict(sizes.most_common(top))
    stats.audio_seconds, stats.audio_rates = Summary.of(seconds), dict(rates.most_common())
    stats.video_frames, stats.video_seconds = Summary.of(frames), Summary.of(video_seconds)
    stats.text_words = Summary.of(words)
    stats.labels = dict(labels.most_common(top))
    return stats


def format_stats(stats: SourceStats, *, max_bad: int = 20) -> str:
    """The stats as a short plain-text report (what ``polymodal data inspect`` prints)."""

    def summary(name: str, s: Summary | None, unit: str = "") -> str:
        if s is None:
            return f"{name:<14} -"
        return (f"{name:<14} min {_num(s.min)}{unit}  median {_num(s.p50)}{unit}  mean {_num(s.mean)}{unit}  "
                f"max {_num(s.max)}{unit}  (n={s.count})")

    lines = [f"source: {stats.source}", f"records: {stats.records} good, {len(stats.bad)} bad"]
    if stats.ignored:
        types = sorted({PurePath(p).suffix.lower() or "(no suffix)" for p in stats.ignored})
        lines.append(f"ignored: {len(stats.ignored)} file(s) of a type no modality reads ({', '.join(types)})")
    lines += ["", f"{'modality':<10}{'present':>9}{'missing':>10}"]
    for m in MODALITIES:
        lines.append(f"{m:<10}{stats.present[m]:>9}{stats.missing_rate[m]:>10.1%}")
    lines.append("")
    lines.append(summary("image width", stats.image_width, " px"))
    lines.append(summary("image height", stats.image_height, " px"))
    if stats.image_sizes:
        lines.append("image sizes    " + ", ".join(f"{k} ({v})" for k, v in list(stats.image_sizes.items())[:5]))
    lines.append(summary("audio", stats.audio_seconds, " s"))
    if stats.audio_rates:
        lines.append("audio rates    " + ", ".join(f"{k} Hz ({v})" for k, v in stats.audio_rates.items()))
    lines.append(summary("video frames", stats.video_frames))
    lines.append(summary("video", stats.video_seconds, " s"))
    lines.append(summary("text words", stats.text_words))
    if stats.labels:
        lines.append(f"labels         {len(stats.labels)} shown, {stats.unlabelled} unlabelled: "
                     + ", ".join(f"{k} ({v})" for k, v in stats.labels.items()))
    for title, items in ((f"bad records ({len(stats.bad)}):", [str(b) for b in stats.bad]),
                         (f"ignored files ({len(stats.ignored)}):", stats.ignored)):
        if items:
            lines += ["", title, *(f"  {x}" for x in items[:max_bad])]
            if len(items) > max_bad:
                lines.append(f"  ... and {len(items) - max_bad} more (use --json for all)")
    return "\n".join(lines)


def _num(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.3g}"


# ---------------------------------------------------------------------------------------------------
# Contact sheet
# ---------------------------------------------------------------------------------------------------

_BG = (255, 255, 255)
_EMPTY = (225, 225, 225)  # a cell whose modality is missing in this record
_INK = (20, 20, 20)


def contact_sheet(records: Iterable[Record], *, max_records: int = 16, cell: int = 96, frames: int = 4) -> Image.Image:
    """Draw records as a grid, one row each: image, spectrogram, video frames, then key, label and text.

    Only the columns of modalities that some record has are drawn; a missing modality is a grey cell.
    Records that carry paths or bytes are decoded here.

    Args:
        records: the records; the first ``max_records`` are drawn.
        max_records: rows at most.
        cell: the height of a row and the width of one image or frame, in pixels.
        frames: video frames per row, spread evenly over the clip's kept frames.

    Returns:
        An RGB image.

    Raises:
        ConfigError: a size argument is not a positive int.
    """
    for name, value in (("max_records", max_records), ("cell", cell), ("frames", frames)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"contact_sheet: {name} must be a positive int, got {value!r}")
    rows: list[Record] = []
    for r in records:
        rows.append(r)
        if len(rows) == max_records:
            break
    widths = {"image": cell, "audio": 2 * cell, "video": frames * cell, "text": 4 * cell}
    columns = [m for m in ("image", "audio", "video") if any(getattr(r, m) is not None for r in rows)] + ["text"]
    pad = 4
    width = sum(widths[c] for c in columns) + pad * (len(columns) + 1)
    sheet = Image.new("RGB", (width, max(1, len(rows)) * (cell + pad) + pad), _BG)
    font = _font(max(10, cell // 8))
    for i, record in enumerate(rows):
        x, y = pad, pad + i * (cell + pad)
        for c in columns:
            box = (widths[c], cell)
            tile = _text_tile(record, box, font) if c == "text" else _tile(c, getattr(record, c), box, frames, font)
            sheet.paste(tile, (x, y))
            x += widths[c] + pad
    return sheet


def _tile(modality: str, value: Any, box: tuple[int, int], frames: int, font: Any) -> Image.Image:
    if value is None:
        return _note(f"no {modality}", box, _EMPTY, font)
    if not isinstance(value, Image.Image) and not hasattr(value, "samples") and not hasattr(value, "frames"):
        try:
            value = decode(modality, value)  # a path or bytes
        except DataError:
            return _note("cannot decode", box, (255, 200, 200), font)
    if modality == "image":
        return _fit(value.convert("RGB"), box)
    if modality == "audio":
        return _spectrogram(value.samples, value.sample_rate, box)
    return _strip(value.frames, box, frames)


def _note(text: str, box: tuple[int, int], colour: tuple[int, int, int], font: Any) -> Image.Image:
    """A plain cell saying why there is nothing to show."""
    tile = Image.new("RGB", box, colour)
    ImageDraw.Draw(tile).text((4, 2), text, fill=(120, 120, 120), font=font)
    return tile


def _fit(im: Image.Image, box: tuple[int, int]) -> Image.Image:
    """``im`` scaled to fit ``box`` (aspect kept), centred on a light background."""
    tile = Image.new("RGB", box, _EMPTY)
    small = ImageOps.contain(im, box)
    tile.paste(small, ((box[0] - small.width) // 2, (box[1] - small.height) // 2))
    return tile


def _spectrogram(samples: np.ndarray, sample_rate: int, box: tuple[int, int]) -> Image.Image:
    """A log-mel spectrogram (low frequencies at the bottom) in the magma colour map."""
    import torch
    from matplotlib import colormaps

    from polymodal.data.audio import MelConfig, MelSpectrogram, log_mel

    wave = samples.mean(axis=0) if samples.ndim == 2 else samples  # (T,)
    n_fft = 512 if sample_rate <= 16000 else 1024
    if len(wave) <= n_fft:  # reflect padding needs more samples than half a window
        wave = np.pad(wave, (0, n_fft + 1 - len(wave)))
    config = MelConfig(sample_rate=sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=64)
    with torch.no_grad():
        mel = MelSpectrogram(config)(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))
        db: np.ndarray = log_mel(mel).numpy()  # (n_mels, frames), at most 80 dB below the peak
    unit = (db - db.min()) / max(float(db.max() - db.min()), 1e-6)
    rgba = np.asarray(colormaps["magma"](unit[::-1]))  # (n_mels, frames, 4), low frequencies at the bottom
    rgb = (rgba[..., :3] * 255).astype(np.uint8)
    return Image.fromarray(rgb).resize(box, Image.Resampling.BILINEAR)


def _strip(video_frames: np.ndarray, box: tuple[int, int], n: int) -> Image.Image:
    """``n`` frames spread evenly over the clip, side by side."""
    tile = Image.new("RGB", box, _EMPTY)
    total = len(video_frames)
    if total == 0:
        return tile
    w = box[0] // n
    for k in range(n):
        i = min(total - 1, math.floor((k + 0.5) * total / n))
        tile.paste(_fit(Image.fromarray(video_frames[i]), (w, box[1])), (k * w, 0))
    return tile


def _text_tile(record: Record, box: tuple[int, int], font: Any) -> Image.Image:
    tile = Image.new("RGB", box, _BG)
    draw = ImageDraw.Draw(tile)
    size = getattr(font, "size", 10)
    chars = max(8, int(box[0] / (0.6 * size)))  # a rough average glyph width
    head = record.key + ("" if record.label is None else f"  [{record.label}]")
    lines = [head[:chars]] + (textwrap.wrap(record.text or "", chars) if record.text is not None else ["(no text)"])
    max_lines = max(1, box[1] // (size + 2))
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [lines[max_lines - 1][: chars - 1] + "…"]
    for j, line in enumerate(lines):
        draw.text((2, 1 + j * (size + 2)), line, fill=_INK if j else (90, 90, 160), font=font)
    return tile


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 ships a scalable default font
    except TypeError:
        return ImageFont.load_default()
