"""A user's folder of labelled files as the train, val and test splits of a classifier
(``polymodal fuse train --data videos/``).

Two layouts, told apart by a ``train`` folder at the top:

- ``ROOT/train/LABEL/FILE``, ``ROOT/val/LABEL/FILE`` and ``ROOT/test/LABEL/FILE``: the splits as given.
- ``ROOT/LABEL/FILE`` (``cat/clip01.mp4``, or ``cat/001.png`` + ``cat/001.wav`` for one record of two
  modalities): each record goes to a split by a hash of its key ``LABEL/STEM``, 10 % to val, 10 % to test,
  the rest to train (:func:`split_of`). The hash depends on nothing but the key, so adding or removing
  files never moves the others between splits, and no file is in two splits.

Records are read one at a time through ``read`` (the classifier passes
:func:`polymodal.models.classifier_inputs.read_compact`, which keeps only the frames and audio the model
reads), so a folder of long videos does not have to fit in memory. A file that cannot be read, or one
that sits outside a label folder, is skipped and listed in :attr:`LabelledFolder.bad` with its path and
the problem; the caller reports them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from polymodal.data.decode import modality_of
from polymodal.data.record import BadRecord, Record
from polymodal.data.sources import FolderSource
from polymodal.errors import ConfigError, DataError

__all__ = ["SPLITS", "LabelledFolder", "folder_modalities", "load_labelled_folder", "split_of"]

SPLITS: tuple[str, ...] = ("train", "val", "test")
HELD_OUT = 0.1  # the fraction of a one-level folder that goes to val, and again to test


def split_of(key: str) -> str:
    """The split of a record of a one-level folder: the first 64 bits of SHA-256 of its key as a number
    ``u`` in [0, 1); val below 0.1, test below 0.2, train above."""
    u = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
    return "val" if u < HELD_OUT else "test" if u < 2 * HELD_OUT else "train"


@dataclass
class LabelledFolder:
    """The records of the splits asked for, and what was skipped.

    Attributes:
        splits: records per split, labels as their folder names.
        bad: files skipped (unreadable, or not inside a label folder), each with the problem.
        layout: ``"splits"`` (train/val/test folders) or ``"hashed"`` (one level of label folders).
    """

    splits: dict[str, list[Record]]
    bad: list[BadRecord] = field(default_factory=list)
    layout: str = "hashed"


def folder_modalities(root: str | Path) -> set[str]:
    """The modalities of the files under ``root`` (from their suffixes; nothing is decoded)."""
    found: set[str] = set()
    for _, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found.update(m for f in files if not f.startswith(".") and (m := modality_of(Path(f).suffix)) is not None)
    return found


def load_labelled_folder(
    root: str | Path, splits: Iterable[str] = SPLITS, *, read: Callable[[Record], Record] | None = None
) -> LabelledFolder:
    """Read the ``splits`` of a labelled folder (see the module docstring for its two layouts).

    Args:
        root: the folder.
        splits: which of "train", "val" and "test" to read.
        read: turns a record whose files are paths into the record to keep (decoded); a
            :class:`DataError` it raises skips the record. ``None`` keeps the paths.

    Raises:
        ConfigError: an unknown split name.
        DataError: ``root`` is not a folder, or a split asked for has no readable record (naming the
            folder and, for the one-level layout, how the split was drawn).
    """
    wanted = list(splits)
    if unknown := [s for s in wanted if s not in SPLITS]:
        raise ConfigError(f"unknown split(s) {unknown}; a labelled folder has {', '.join(SPLITS)}")
    base = Path(os.path.abspath(root))
    if not base.is_dir():
        raise DataError(str(root), "no such folder" if not base.exists() else "not a folder")
    out = LabelledFolder({s: [] for s in wanted}, layout="splits" if (base / "train").is_dir() else "hashed")

    def keep(split: str, record: Record) -> None:
        if record.label is None:
            out.bad.append(BadRecord(source=record.source or "", problem="not inside a label folder (LABEL/FILE)"))
            return
        try:
            out.splits[split].append(read(record) if read is not None else record)
        except DataError as e:
            out.bad.append(BadRecord(source=str(e.path or record.source or record.key), problem=e.problem))

    if out.layout == "splits":
        for split in wanted:
            if not (base / split).is_dir():
                raise DataError(str(base / split), f"no {split}/ folder beside train/ (a train/val/test layout needs each split it is asked for)")
            source = FolderSource(str(base / split), decode=False, check=False)
            for record in source:
                keep(split, record)
            out.bad.extend(source.bad)
    else:
        source = FolderSource(str(base), decode=False, check=False)
        for record in source:
            split = split_of(record.key or "")
            if split in out.splits:
                keep(split, record)
        out.bad.extend(source.bad)
    for split, records in out.splits.items():
        if not records:
            how = (f"{split}/" if out.layout == "splits"
                   else f"the {HELD_OUT:.0%} of LABEL/FILE records a hash of their name puts in {split}")
            raise DataError(str(base), f"no readable {split} records ({how}); {len(out.bad)} file(s) skipped"
                            + ("" if out.layout == "splits" else "; with few files, give train/, val/ and test/ folders"))
    return out
