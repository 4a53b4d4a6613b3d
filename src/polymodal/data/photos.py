"""Real photographs with everyday labels, for measuring zero-shot beyond emoji (``builtin:photos``).

222 photographs over 84 basic-level labels ("cat"-level: "bird", "apple", "guitar", "truck"), chosen
from the photograph stamps of Tux Paint (Debian's ``tuxpaint-stamps-default``, GPL-2): objects and
animals photographed and cut out of their background, which the vendored JPEGs put on white.
``polymodal/data/assets/photos/`` holds the images, the labels (``photos.csv``: image, label, the stamp
it came from and the stamp's own description), the licence and README; ``scripts/build_photo_set.py``
builds them. This set is for evaluation only: nothing trains on it.

Splits are a hash of the file name (val 0.4, test 0.6): settings are chosen on val, test is read once.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from functools import cache
from importlib import resources

from polymodal.data.images import load_image
from polymodal.data.record import Record
from polymodal.data.splits import SPLITS, split_of
from polymodal.errors import ConfigError

PHOTO_VAL_FRACTION = 0.4  # no training split: every photo is held out
PHOTO_TEST_FRACTION = 0.6


@dataclass(frozen=True)
class _Photo:
    image: str  # entry in photos.zip, "<label>/<stamp>.jpg"
    label: str
    source: str  # the Tux Paint stamp
    description: str  # the stamp's own English description, e.g. "A white kitten."


def _asset(name: str) -> resources.abc.Traversable:
    return resources.files("polymodal.data").joinpath("assets", "photos", name)


@cache
def _photos() -> tuple[_Photo, ...]:
    rows = csv.DictReader(io.StringIO(_asset("photos.csv").read_text(encoding="utf-8")))
    return tuple(_Photo(r["image"], r["label"], r["source"], r["description"]) for r in rows)


def photo_split(image: str) -> str:
    """The split of one photo (its zip entry name): ``"val"`` or ``"test"``."""
    return split_of(image, val=PHOTO_VAL_FRACTION, test=PHOTO_TEST_FRACTION)


def photo_labels() -> list[str]:
    """Every label of the set, in file order: the class list zero-shot chooses from."""
    return list(dict.fromkeys(p.label for p in _photos()))


def load_photos(split: str | None = None) -> list[Record]:
    """The photos as records: ``image`` (RGB), ``text`` (the stamp's description), ``label``, ``key``.

    Args:
        split: ``None`` for all, ``"val"`` or ``"test"`` (``"train"`` is empty: nothing trains on photos).

    Raises:
        ConfigError: an unknown split.
    """
    if split is not None and split not in SPLITS:
        raise ConfigError(f"split must be None or one of {', '.join(SPLITS)}, got {split!r}")
    chosen = [p for p in _photos() if split is None or photo_split(p.image) == split]
    with zipfile.ZipFile(io.BytesIO(_asset("photos.zip").read_bytes())) as z:
        return [
            Record(image=load_image(z.read(p.image), name=f"photos.zip:{p.image}"), text=p.description,
                   label=p.label, key=p.image, source=f"photos.zip:{p.image}",
                   extra={"stamp": p.source})
            for p in chosen
        ]
