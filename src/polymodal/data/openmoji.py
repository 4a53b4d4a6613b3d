"""OpenMoji 17.0.0: 2,464 emoji images with captions, vendored in the package for offline tests and demos.

The data lives in ``polymodal/data/assets/openmoji/`` (see its README.md for attribution, licence
CC BY-SA 4.0, and exactly what was changed): one zip of 72x72 PNGs and one CSV of annotations. It is
read through ``importlib.resources``, so it works from a wheel as well as from a checkout, and never
touches the network.

Splits come from :func:`polymodal.data.splits.split_of` of the hexcode with the default fractions
(val 0.10, test 0.15) and salt ``"polymodal-v1"``: 1,857 train, 245 val, 362 test.
"""

from __future__ import annotations

import contextlib
import csv
import io
import zipfile
from dataclasses import dataclass
from functools import cache
from importlib import resources

from polymodal.data.images import load_image
from polymodal.data.record import Record
from polymodal.data.splits import SPLITS, split_of
from polymodal.errors import ConfigError, DataError

# Unicode emoji groups in catalogue order, then the two OpenMoji additions (extra Unicode symbols
# and OpenMoji's own icons in the private-use area).
OPENMOJI_GROUPS: tuple[str, ...] = (
    "smileys-emotion",
    "people-body",
    "component",
    "animals-nature",
    "food-drink",
    "travel-places",
    "activities",
    "objects",
    "symbols",
    "flags",
    "extras-openmoji",
    "extras-unicode",
)
OPENMOJI_VERSION = "17.0.0"
OPENMOJI_COUNT = 2464
_ASSETS = ("assets", "openmoji")
_ZIP = "openmoji72.zip"
_CSV = "openmoji.csv"


@dataclass(frozen=True)
class _Entry:
    """One row of the vendored CSV."""

    hexcode: str
    emoji: str
    annotation: str
    tags: tuple[str, ...]
    group: str
    subgroup: str


def load_openmoji(split: str | None = None, *, decode: bool = True) -> list[Record]:
    """Load the vendored OpenMoji images as records, optionally one split only.

    Each record has ``image`` (a 72x72 RGB ``PIL.Image``, transparency composited on white),
    ``text`` (the annotation, e.g. ``"grinning face"``), ``label`` (the group, one of
    :data:`OPENMOJI_GROUPS`), ``key`` (the hexcode, e.g. ``"1F600"``), ``source``
    (``"openmoji72.zip:<hexcode>.png"``) and ``extra`` with ``tags`` (list of str), ``group``,
    ``subgroup``, ``annotation`` and ``emoji``. Order is the OpenMoji catalogue order.

    Args:
        split: ``None`` for all 2,464 images, or ``"train"``, ``"val"`` or ``"test"``
            (hash split of the hexcode, see module docstring).
        decode: ``False`` leaves ``image`` as ``None`` (the annotations alone, e.g. for another style).

    Returns:
        A new list of new records on every call (the images are decoded each time, about 1 s).

    Raises:
        ConfigError: an unknown split name.
    """
    if split is not None and split not in SPLITS:
        raise ConfigError(f"split must be None or one of {', '.join(SPLITS)}, got {split!r}")
    entries = [e for e in _entries() if split is None or split_of(e.hexcode) == split]
    records = []
    # Without decoding, the 5.6 MB archive is not read at all.
    with _open_zip() if decode else contextlib.nullcontext() as z:
        for e in entries:
            name = f"{e.hexcode}.png"
            image = load_image(z.read(name), name=f"{_ZIP}:{name}") if z is not None else None
            records.append(
                Record(
                    image=image,
                    text=e.annotation,
                    label=e.group,
                    key=e.hexcode,
                    source=f"{_ZIP}:{name}",
                    extra={
                        "tags": list(e.tags),
                        "group": e.group,
                        "subgroup": e.subgroup,
                        "annotation": e.annotation,
                        "emoji": e.emoji,
                    },
                )
            )
    return records


def openmoji_subgroups(group: str | None = None) -> list[str]:
    """The subgroups (e.g. ``"face-smiling"``) of one group, or of all groups, in catalogue order.

    Args:
        group: one of :data:`OPENMOJI_GROUPS`, or ``None`` for every subgroup.

    Raises:
        ConfigError: an unknown group.
    """
    if group is not None and group not in OPENMOJI_GROUPS:
        raise ConfigError(f"unknown OpenMoji group {group!r}; groups: {', '.join(OPENMOJI_GROUPS)}")
    seen: dict[str, None] = {}
    for e in _entries():
        if group is None or e.group == group:
            seen[e.subgroup] = None
    return list(seen)


def _asset(name: str) -> resources.abc.Traversable:
    return resources.files("polymodal.data").joinpath(*_ASSETS, name)


@cache
def _entries() -> tuple[_Entry, ...]:
    """The parsed CSV; cached because it is immutable and used by every call."""
    text = _asset(_CSV).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    if len(rows) != OPENMOJI_COUNT:
        raise DataError(str(_asset(_CSV)), f"expected {OPENMOJI_COUNT} rows, found {len(rows)}; reinstall polymodal")
    return tuple(
        _Entry(
            hexcode=r["hexcode"],
            emoji=r["emoji"],
            annotation=r["annotation"],
            tags=tuple(t.strip() for t in r["tags"].split(",") if t.strip()),
            group=r["group"],
            subgroup=r["subgroup"],
        )
        for r in rows
    )


def _open_zip() -> zipfile.ZipFile:
    # Read the archive into memory once: 5.6 MB, and it avoids needing a real file path
    # (resources may live inside a zipped wheel).
    return zipfile.ZipFile(io.BytesIO(_asset(_ZIP).read_bytes()))
