"""The Free Spoken Digit Dataset (FSDD), vendored: 3,000 spoken digits, 6 speakers, 8 kHz.

The clips ship inside the package as lossless FLAC in ``assets/fsdd/fsdd.zip`` (CC BY-SA 4.0; see
``assets/fsdd/README.md`` for attribution and ``scripts/vendor_fsdd.py`` for how it was made), so this
loader never touches the network.

Splits, by the recording number ``index`` (0-49) that every (digit, speaker) pair has:

- ``"test"``: index 0-4, the dataset's official test split (300 clips);
- ``"val"``: index 5-9, carved from the official train part (300 clips);
- ``"train"``: index 10-49 (2,400 clips).

Every split holds every speaker and digit, so this is a split across repetitions, not across speakers;
:mod:`polymodal.data.avdigits` splits by speaker instead.
"""

from __future__ import annotations

import csv
import functools
import io
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np

from polymodal.data.audio import Audio, load_audio
from polymodal.data.record import Record
from polymodal.errors import ConfigError, DataError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = ["FSDD_SAMPLE_RATE", "FSDD_SPEAKERS", "FSDD_SPLITS", "fsdd_split", "load_fsdd"]

FSDD_SAMPLE_RATE = 8000
FSDD_SPEAKERS: tuple[str, ...] = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
FSDD_SPLITS: tuple[str, ...] = ("train", "val", "test")
_CLIPS = 3000  # 6 speakers x 10 digits x 50 recordings
_NAME = re.compile(r"^(?P<digit>[0-9])_(?P<speaker>[a-z]+)_(?P<index>[0-9]+)$")


def fsdd_split(index: int) -> str:
    """The split of a recording by its number: test 0-4 (official), val 5-9, train the rest."""
    if index < 5:
        return "test"
    if index < 10:
        return "val"
    return "train"


@dataclass(frozen=True)
class _Clip:
    name: str  # file stem, e.g. "7_jackson_32"
    digit: int
    speaker: str
    index: int
    samples: np.ndarray  # float32 (T,), never handed out: records get copies


def _archive() -> Traversable:
    return resources.files("polymodal.data").joinpath("assets", "fsdd", "fsdd.zip")


def _archive_path() -> str:
    return str(_archive())


@functools.lru_cache(maxsize=2)
def _clips(sample_rate: int) -> tuple[_Clip, ...]:
    """Decode and check every clip of the vendored zip (cached: about a second for all 3,000)."""
    where = _archive_path()
    try:
        with _archive().open("rb") as handle:
            archive = zipfile.ZipFile(io.BytesIO(handle.read()))
    except (OSError, zipfile.BadZipFile) as error:
        raise DataError(where, f"cannot open the vendored FSDD archive: {error}") from None
    with archive:
        try:
            rows = list(csv.DictReader(io.TextIOWrapper(archive.open("manifest.csv"), encoding="utf-8")))
        except KeyError:
            raise DataError(where, "manifest.csv is missing from the archive") from None
        if len(rows) != _CLIPS:
            raise DataError(where, f"manifest.csv lists {len(rows)} clips, expected {_CLIPS}")
        clips = []
        for row in rows:
            name = row["name"]
            member = f"{name}.flac"
            if _NAME.match(name) is None:
                raise DataError(f"{where}:manifest.csv", f"bad clip name {name!r}")
            try:
                data = archive.read(member)
            except KeyError:
                raise DataError(where, f"{member} is listed in manifest.csv but missing") from None
            audio = load_audio(data, name=f"{where}:{member}")
            if audio.num_frames != int(row["frames"]) or audio.sample_rate != FSDD_SAMPLE_RATE:
                raise DataError(
                    f"{where}:{member}",
                    f"decoded {audio.num_frames} frames at {audio.sample_rate} Hz, "
                    f"manifest says {row['frames']} at {FSDD_SAMPLE_RATE} Hz",
                )
            if sample_rate != FSDD_SAMPLE_RATE:
                audio = load_audio(data, name=f"{where}:{member}", sample_rate=sample_rate)
            clips.append(_Clip(name, int(row["digit"]), row["speaker"], int(row["index"]), audio.samples))
    clips.sort(key=lambda c: (c.digit, c.speaker, c.index))
    return tuple(clips)


def load_fsdd(
    split: str | None = None, *, sample_rate: int | None = None, speakers: Sequence[str] | None = None
) -> list[Record]:
    """Load FSDD clips as records.

    Args:
        split: "train", "val" or "test" (see the module docstring); ``None`` loads all 3,000 clips.
        sample_rate: resample to this rate (soxr, high quality); ``None`` keeps the native 8 kHz.
        speakers: keep only these speakers (names from :data:`FSDD_SPEAKERS`); ``None`` keeps all.

    Returns:
        Records sorted by (digit, speaker, index): ``audio`` an :class:`~polymodal.data.audio.Audio`
        (mono float32; each record owns its samples), ``label`` the digit as an int, ``key`` the file stem
        (``"7_jackson_32"``), ``extra`` ``{"speaker": str, "index": int, "split": str}``.

    Raises:
        ConfigError: unknown split or speaker, or a bad sample rate.
        DataError: the vendored archive is missing or damaged.
    """
    if split is not None and split not in FSDD_SPLITS:
        raise ConfigError(f"split must be one of {FSDD_SPLITS} or None, got {split!r}")
    if sample_rate is not None and (
        isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0
    ):
        raise ConfigError(f"sample_rate must be a positive int or None, got {sample_rate!r}")
    if isinstance(speakers, str):
        raise ConfigError(f"speakers must be a sequence of names, not the string {speakers!r}")
    wanted = set(FSDD_SPEAKERS if speakers is None else speakers)
    unknown = sorted(wanted - set(FSDD_SPEAKERS))
    if unknown:
        raise ConfigError(f"unknown FSDD speakers {unknown}; known: {FSDD_SPEAKERS}")
    rate = sample_rate or FSDD_SAMPLE_RATE
    where = _archive_path()
    records = []
    for clip in _clips(rate):
        clip_split = fsdd_split(clip.index)
        if (split is not None and clip_split != split) or clip.speaker not in wanted:
            continue
        records.append(
            Record(
                audio=Audio(samples=clip.samples.copy(), sample_rate=rate),
                label=clip.digit,
                key=clip.name,
                source=f"{where}:{clip.name}.flac",
                extra={"speaker": clip.speaker, "index": clip.index, "split": clip_split},
            )
        )
    return records
