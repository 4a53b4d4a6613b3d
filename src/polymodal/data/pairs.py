"""Image-text pairs for the aligner, from the built-in OpenMoji set or a user's manifest.

A source is a built-in set (``builtin:openmoji``; the same emoji drawn by Twemoji or Noto,
``builtin:twemoji``/``builtin:noto``; the evaluation photographs, ``builtin:photos``; generated shapes scenes
with their captions, ``builtin:shapes``) or a path to a
``.csv``/``.jsonl``/``.parquet`` manifest with ``image`` and ``text`` columns (image paths relative to the manifest). Rows that cannot be used are skipped, counted and
kept in ``PairSet.bad`` so the run's report can name them; ``strict=True`` makes the first one an error.

A manifest's optional ``split`` column (``train``, ``val`` or ``test``) puts each row in a split; without
it, rows are assigned by a hash of the image path relative to the manifest (about 75/10/15 per cent,
stable when the folder moves or rows are added). :func:`split_sizes` says which, and how many rows each
split has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from polymodal.data.captions import caption_variants
from polymodal.data.images import ImageFiles, image_content_hash, load_image
from polymodal.data.record import BadRecord, Record
from polymodal.errors import ConfigError, DataError

if TYPE_CHECKING:
    from polymodal.data.manifest import PairsSource

SPLITS = ("train", "val", "test")
# Scenes per split of builtin:shapes as pairs (dataset seed 0): enough fresh scenes that image-text
# matching is learnt as a rule, not memorised (docs/flava.md).
SHAPES_PAIR_SIZES: dict[str, int] = {"train": 16000, "val": 1000, "test": 1000}
SPLIT_COLUMN = "split"  # a manifest column that chooses each row's split


@dataclass
class PairSet:
    """Images, their caption variants (the first is the plain caption used for evaluation) and labels.

    ``images`` of a manifest are :class:`~polymodal.data.images.ImageFiles`, decoded when read and
    never kept, so memory does not grow with the photos' pixels; built-in sets of small images are lists.
    """

    name: str
    images: Sequence[Image.Image]
    captions: list[list[str]]
    keys: list[str]
    labels: dict[str, list[str]] = field(default_factory=dict)  # label kind -> one label per image
    classes: dict[str, list[str]] = field(default_factory=dict)  # label kind -> every class, where the set defines them
    bad: list[BadRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def texts(self) -> list[str]:
        """One caption per image, the plain one."""
        return [c[0] for c in self.captions]

    def take(self, indices: Sequence[int]) -> PairSet:
        """The pairs at ``indices``, in that order (image files stay undecoded); no bad records."""
        images = (self.images.take(indices) if isinstance(self.images, ImageFiles)
                  else [self.images[i] for i in indices])
        # replace() keeps any other field (the set's name, what it defines) as it is.
        return replace(self, images=images, captions=[self.captions[i] for i in indices],
                       keys=[self.keys[i] for i in indices],
                       labels={k: [v[i] for i in indices] for k, v in self.labels.items()}, bad=[])


def concat_pairs(*sets: PairSet, name: str | None = None) -> PairSet:
    """One pair set of several, in order (e.g. train and val for a refit); label kinds all sets share are kept."""
    if not sets:
        raise ConfigError("concat_pairs: no pair sets given")
    kinds = [k for k in sets[0].labels if all(k in s.labels for s in sets)]
    return PairSet(
        name=name or "+".join(s.name for s in sets),
        images=_concat_images([s.images for s in sets]),
        captions=[c for s in sets for c in s.captions],
        keys=[k for s in sets for k in s.keys],
        labels={k: [v for s in sets for v in s.labels[k]] for k in kinds},
        classes={k: sorted({c for s in sets for c in s.classes.get(k, [])}) for k in kinds
                 if any(k in s.classes for s in sets)},
        bad=[b for s in sets for b in s.bad],
    )


def _concat_images(parts: list[Sequence[Image.Image]]) -> Sequence[Image.Image]:
    files = [p for p in parts if isinstance(p, ImageFiles)]
    if len(files) == len(parts):  # still undecoded (a manifest's train and val, for a refit)
        return ImageFiles.concat(files)
    return [im for p in parts for im in p]


def _openmoji(split: str | None, style: str = "openmoji") -> PairSet:
    """OpenMoji's emoji, drawn by OpenMoji or in another style (``twemoji``, ``noto``: data/emoji_styles.py)."""
    from polymodal.data.emoji_styles import load_emoji_style
    from polymodal.data.openmoji import OPENMOJI_GROUPS, load_openmoji, openmoji_subgroups

    # Tags that spell a group or subgroup name are dropped: those names are zero-shot targets.
    banned = {n.lower().replace("-", " ") for n in (*OPENMOJI_GROUPS, *openmoji_subgroups())}
    records = load_openmoji(split) if style == "openmoji" else load_emoji_style(style, split)
    return PairSet(
        name=f"{style}:{split or 'all'}",
        images=[r.image for r in records],
        captions=[caption_variants(r.text or "", r.extra["tags"], banned=banned) for r in records],
        keys=[r.key for r in records],
        labels={"group": [r.extra["group"] for r in records], "subgroup": [r.extra["subgroup"] for r in records]},
    )


def _shapes(split: str | None) -> PairSet:
    """Generated scenes (data/shapes.py, dataset seed 0) with their captions ("a red circle left of a blue square")."""
    from polymodal.data.shapes import load_shapes

    splits = SPLITS if split is None else (split,)
    records = [r for s in splits for r in load_shapes(s, n=SHAPES_PAIR_SIZES[s], kind="scenes")]
    return PairSet(
        name=f"shapes:{split or 'all'}",
        images=[r.image for r in records],
        captions=[[r.text or ""] for r in records],
        keys=[r.key for r in records],
        labels={"count": [str(len(r.extra["scene"]["shapes"])) for r in records]},
    )


def _photos(split: str | None) -> PairSet:
    """The evaluation photographs (data/photos.py): captions are their own descriptions, labels everyday names."""
    from polymodal.data.photos import load_photos, photo_labels

    records = load_photos(split)
    return PairSet(
        name=f"photos:{split or 'all'}",
        images=[r.image for r in records],
        captions=[[r.text or ""] for r in records],
        keys=[r.key for r in records],
        labels={"label": [str(r.label) for r in records]},
        classes={"label": photo_labels()},  # zero-shot chooses among all 84, whatever the split holds
    )


@dataclass
class SplitSizes:
    """A manifest's rows per split (before its images are checked), and what assigned them."""

    sizes: dict[str, int]
    by_column: bool  # the manifest's split column; else a hash of each image path
    unassigned: int = 0  # rows whose split cell names no split (bad rows)

    def describe(self) -> str:
        sizes = ", ".join(f"{s} {n}" for s, n in self.sizes.items())
        if self.unassigned:
            sizes += f", none {self.unassigned} (a split cell that is not train, val or test)"
        how = ("by its split column" if self.by_column
               else "by a hash of each image path (a 'split' column chooses them instead)")
        return f"rows per split: {sizes}; assigned {how}"


def split_sizes(path: str | Path) -> SplitSizes:
    """How many rows of the manifest at ``path`` fall in each split, without decoding any image."""
    from polymodal.data.manifest import read_pairs

    source = read_pairs(path, check_images=False)
    sizes = {s: len(_select(source, s, bad=[], strict=False)) for s in SPLITS}
    return SplitSizes(sizes, by_column=_has_split_column(source.records),
                      unassigned=len(source.records) - sum(sizes.values()))


def _has_split_column(records: list[Record]) -> bool:
    return any(SPLIT_COLUMN in r.extra for r in records)


def _select(source: PairsSource, split: str | None, *, bad: list[BadRecord], strict: bool) -> list[Record]:
    """The records of one split (``None``: all); a split cell that names no split is a bad row."""
    from polymodal.data.manifest import bad_file

    if split is None:
        return source.records
    if not _has_split_column(source.records):  # by a hash of the relative image path: stable when it moves
        return source.split(split)  # type: ignore[arg-type]
    chosen = []
    for r in source.records:
        value = r.extra.get(SPLIT_COLUMN)
        if value == split:
            chosen.append(r)
        elif value not in SPLITS:  # would be in no split: said, not dropped
            problem = f"split {value!r} is not one of {', '.join(SPLITS)}"
            if strict:
                raise DataError(r.source, problem)
            bad.append(bad_file(r, r.source, problem))
    return chosen


def _manifest(path: Path, split: str | None, *, strict: bool, max_pixels: int) -> PairSet:
    from polymodal.data.manifest import bad_file, read_pairs

    source = read_pairs(path, strict=strict, check_images=False)
    bad = list(source.bad)
    paths: list[Path] = []
    hashes: list[str] = []
    captions, keys, labels = [], [], []
    for r in _select(source, split, bad=bad, strict=strict):
        try:
            # Decoded once to find the bad files and hash the pixels (the feature cache's key), then let go.
            hashes.append(image_content_hash(load_image(r.image, max_pixels=max_pixels)))
        except DataError as e:
            if strict:
                raise
            bad.append(bad_file(r, r.image, e.problem))
            continue
        paths.append(r.image)
        captions.append(caption_variants(r.text or "", [], n_tag_variants=0)[:1])
        keys.append(r.key)
        labels.append("" if r.label is None else str(r.label))
    return PairSet(
        name=f"{path.name}:{split or 'all'}",
        images=ImageFiles(paths, max_pixels=max_pixels, hashes=hashes),
        captions=captions,
        keys=keys,
        labels={"label": labels} if any(labels) else {},
        bad=bad,
    )


def load_pairs(source: str, split: str | None = None, *, strict: bool = False, max_pixels: int = 64_000_000) -> PairSet:
    """Load the pairs of one split (``train``/``val``/``test``, or ``None`` for all).

    ``source`` is read by the one data grammar (:func:`polymodal.data.sources.parse_source`); a source that
    holds no image-text pairs (``builtin:fsdd``, a folder) is refused with a line saying what it is.
    """
    from polymodal.data.sources import require_source

    if split is not None and split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    spec = require_source(source, command="the pair loader", needs="image-text pairs",
                          kinds=("manifest",))
    if spec.split is not None:  # builtin:NAME:SPLIT
        if split is not None and split != spec.split:
            raise ConfigError(f"{source} is the {spec.split} split; the {split} split was asked for "
                              f"(give {source.rpartition(':')[0]})")
        split = spec.split
    if spec.name in ("openmoji", "twemoji", "noto"):
        return _openmoji(split, spec.name)
    if spec.name == "photos":
        return _photos(split)
    if spec.name == "shapes":
        return _shapes(split)
    assert spec.path is not None
    if not spec.path.exists():
        raise DataError(spec.path, "no such manifest file")
    return _manifest(spec.path, split, strict=strict, max_pixels=max_pixels)
