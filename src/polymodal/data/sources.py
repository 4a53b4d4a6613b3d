"""Sources: where multimodal records come from, behind one interface.

``open_source(spec)`` turns a string into a :class:`Source`:

- a manifest (``.csv``, ``.jsonl``, ``.parquet``) with any of the columns ``image``, ``text``,
  ``audio``, ``video`` (paths relative to the manifest's folder, or absolute; ``text`` is the text itself),
  ``label`` and ``id``; other columns go to ``Record.extra``. Each modality may be empty in any row;
  a row with none is bad.
- a folder in the ``label/file.ext`` layout (as torchvision's ``ImageFolder``): the modality comes from
  the suffix (see :data:`polymodal.data.decode.SUFFIXES`), the label from the first folder level, and
  files with the same stem in the same folder (``cat/001.jpg`` + ``cat/001.txt``) form one record.
- tar shards written by :func:`polymodal.data.shards.write_shards`: a folder holding ``*.tar``, one
  ``.tar`` file, a brace pattern (``shards/shard-{000000..000009}.tar``) or a glob.
- ``builtin:NAME`` or ``builtin:NAME:SPLIT`` for the vendored datasets (:data:`BUILTINS`).

This is the one grammar of every ``--data`` in the command line: :func:`parse_source` reads a spec into a
:class:`SourceSpec` (which kind, which path or builtin, what it holds) without reading any data, and
:func:`require_source` turns "this command cannot use that data" into one clear line
("train needs image-text pairs; builtin:fsdd is audio with labels"). :func:`open_source` and the
loaders of pairs (:func:`polymodal.data.pairs.load_pairs`) go through it.

Iterating a source yields good records one at a time and lists the skipped ones in ``source.bad``
(a :class:`~polymodal.data.record.BadRecord` naming the file and the problem), so one broken file in
a large folder costs a line in a report, not a crash; ``strict=True`` raises at the first instead.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from polymodal.data.decode import FILE_MODALITIES, decode, modality_of
from polymodal.data.record import MODALITIES, BadRecord, Record
from polymodal.errors import ConfigError, DataError

if TYPE_CHECKING:
    from polymodal.data.manifest import RawRow

MANIFEST_SUFFIXES: tuple[str, ...] = (".csv", ".jsonl", ".parquet")
KEY_COLUMN = "id"
LABEL_COLUMN = "label"



@dataclass(frozen=True)
class Builtin:
    """A vendored or generated dataset, resolved on use (its module, or an optional dependency of it, may be
    missing: it fails only when asked for).

    Attributes:
        module: the module of its loader.
        function: the loader, called as ``function(split=SPLIT, **kwargs)``.
        needs_split: the loader needs a split (all splits are read in order when the spec names none).
        holds: what its records are, for messages ("image-text pairs", "audio with labels").
        pairs: its records are image-text pairs (what the dual encoders train and evaluate on).
        kwargs: more keyword arguments of the loader.
    """

    module: str
    function: str
    needs_split: bool
    holds: str
    pairs: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)


BUILTINS: dict[str, Builtin] = {
    "openmoji": Builtin("polymodal.data.openmoji", "load_openmoji", False,
                        "image-text pairs (OpenMoji emoji with groups)", pairs=True),
    "twemoji": Builtin("polymodal.data.emoji_styles", "load_emoji_style", False,
                       "image-text pairs (OpenMoji's emoji drawn by Twemoji)", pairs=True, kwargs={"style": "twemoji"}),
    "noto": Builtin("polymodal.data.emoji_styles", "load_emoji_style", False,
                    "image-text pairs (OpenMoji's emoji drawn by Noto)", pairs=True, kwargs={"style": "noto"}),
    "photos": Builtin("polymodal.data.photos", "load_photos", False,
                      "image-text pairs (photographs with everyday labels; val and test only)", pairs=True),
    "fsdd": Builtin("polymodal.data.fsdd", "load_fsdd", False, "audio with labels (spoken digits)"),
    "avdigits": Builtin("polymodal.data.avdigits", "load_avdigits", True, "images and audio with labels (digits)"),
    "avclips": Builtin("polymodal.data.avclips", "load_avclips", True,
                       "MP4 video clips with sound and labels (direction x tone sweep)"),
    "shapes": Builtin("polymodal.data.shapes", "load_shapes", True, "generated scenes: image, caption and sound",
                      pairs=True, kwargs={"kind": "scenes"}),
    "shapes-vqa": Builtin("polymodal.data.shapes", "load_shapes", True,
                          "generated scenes with questions and answers (VQA)", kwargs={"kind": "vqa"}),
    "shapes-clips": Builtin("polymodal.data.shapes", "load_shapes", True,
                            "generated video clips with sound, captions and directions", kwargs={"kind": "clips"}),
}
BUILTIN_SPLITS: tuple[str, ...] = ("train", "val", "test")


class Source(ABC):
    """Records from somewhere, and an account of those that could not be read.

    Iterate it (``for record in source``) for the good records; after a full pass, ``source.bad``
    lists the skipped ones. Each pass starts a fresh account.

    Attributes:
        spec: what the source was opened from, as given.
        decode: records carry decoded values (``PIL.Image``, ``Audio``, video, ``str``) rather than paths.
        check: with ``decode=False``, still decode each file once to find the bad ones.
        strict: raise :class:`DataError` at the first bad record instead of skipping it.
        bad: the records skipped by the latest pass.
        ignored: files the latest pass left out because no modality reads their type (a folder's
            ``notes.docx``); not records, so not bad, but listed so that nothing is dropped unsaid.
    """

    def __init__(self, spec: str, *, decode: bool = True, check: bool = True, strict: bool = False) -> None:
        self.spec = spec
        self.decode = decode
        self.check = check
        self.strict = strict
        self.bad: list[BadRecord] = []
        self.ignored: list[Path] = []

    @abstractmethod
    def _items(self) -> Iterator[Record | BadRecord]:
        """Good records and skipped ones, in source order."""

    def __iter__(self) -> Iterator[Record]:
        self.bad = []
        for item in self._items():
            if isinstance(item, BadRecord):
                if self.strict:
                    raise DataError(item.source, item.problem if item.position is None
                                    else f"{item.problem} ({item.position})")
                self.bad.append(item)
            else:
                yield item

    def load(self) -> list[Record]:
        """All good records in a list (``source.bad`` then holds the skipped ones)."""
        return list(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r}, decode={self.decode})"

    # Shared by the file-based sources: one file of one modality, decoded, checked or just stat'ed.
    def _file_value(self, modality: str, path: Path) -> Any:
        if self.decode:
            return decode(modality, path)
        if self.check:
            decode(modality, path)
        elif not path.is_file():
            raise DataError(path, "file not found" if not path.exists() else "not a file")
        return path


def open_source(
    spec: str | Path, *, decode: bool = True, check: bool = True, strict: bool = False
) -> Source:
    """Open a manifest, a folder, tar shards or a builtin dataset by name (see the module docstring).

    Args:
        spec: ``path/to/manifest.csv|.jsonl|.parquet``, ``path/to/folder``, ``path/to/shards/`` (a folder
            holding ``*.tar``), ``shard-{000000..000009}.tar``, ``one.tar``, or ``builtin:NAME[:SPLIT]``.
        decode: decode every file as records are read (``False``: records carry file paths, or the raw
            bytes for shards).
        check: with ``decode=False``, still decode each file once so bad files are found and skipped.
        strict: raise at the first bad record instead of skipping it.

    Returns:
        A :class:`ManifestSource`, :class:`FolderSource`, :class:`ShardSource` or :class:`BuiltinSource`.

    Raises:
        DataError: the path does not exist or is not a known kind of source.
        ConfigError: an unknown builtin name or split.
    """
    parsed = parse_source(spec)
    kw: dict[str, Any] = {"decode": decode, "check": check, "strict": strict}
    cls = {"builtin": BuiltinSource, "shards": ShardSource, "folder": FolderSource, "manifest": ManifestSource}
    return cls[parsed.kind](parsed.text, **kw)  # type: ignore[abstract]


SourceKind = Literal["builtin", "manifest", "folder", "shards"]
SOURCE_GRAMMAR = "a .csv/.jsonl/.parquet manifest, a label/file.ext folder, tar shards, or builtin:NAME[:SPLIT]"


@dataclass(frozen=True)
class SourceSpec:
    """A ``--data`` spec read by :func:`parse_source`: what kind of source it names, nothing read yet.

    Attributes:
        text: the spec as given.
        kind: ``"builtin"``, ``"manifest"``, ``"folder"`` or ``"shards"``.
        path: the manifest, folder or shard spec (``None`` for a builtin).
        name: the builtin's name (``None`` otherwise).
        split: the builtin's split (``builtin:NAME:SPLIT``), else ``None``.
    """

    text: str
    kind: SourceKind
    path: Path | None = None
    name: str | None = None
    split: str | None = None

    @property
    def builtin(self) -> Builtin | None:
        return None if self.name is None else BUILTINS[self.name]

    @property
    def pairs(self) -> bool:
        """Whether it can hold image-text pairs: a manifest (image and text columns) or a pair builtin."""
        return self.kind == "manifest" or (self.builtin is not None and self.builtin.pairs)

    def describe(self) -> str:
        """What the spec names, for messages: "builtin:fsdd is audio with labels"."""
        if self.builtin is not None:
            return f"{self.text} is {self.builtin.holds}"
        what = {"manifest": "a manifest", "folder": "a label/file.ext folder", "shards": "tar shards"}[self.kind]
        return f"{self.text} is {what}"


def parse_source(spec: str | Path) -> SourceSpec:
    """Read a data spec (the module docstring's grammar) without reading any data.

    Raises:
        DataError: a path that does not exist or is no known kind of source.
        ConfigError: a malformed ``builtin:`` spec, an unknown builtin name or split.
    """
    text = str(spec)
    if text.startswith("builtin:"):
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[1]:
            raise ConfigError(f"builtin source must be builtin:NAME or builtin:NAME:SPLIT, got {text!r}")
        if parts[1] not in BUILTINS:
            raise ConfigError(f"unknown builtin dataset {parts[1]!r}; known: {', '.join(BUILTINS)}")
        split = parts[2] if len(parts) == 3 else None
        if split is not None and split not in BUILTIN_SPLITS:
            raise ConfigError(f"unknown split {split!r} in {text!r}; use one of {', '.join(BUILTIN_SPLITS)}")
        return SourceSpec(text, "builtin", name=parts[1], split=split)
    if any(c in text for c in "{*?["):
        return SourceSpec(text, "shards", path=Path(text))
    path = Path(text)
    if path.is_dir():
        if any(p.suffix == ".tar" for p in path.iterdir() if p.is_file()):
            return SourceSpec(text, "shards", path=path)
        return SourceSpec(text, "folder", path=path)
    if path.suffix.lower() == ".tar":
        return SourceSpec(text, "shards", path=path)
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return SourceSpec(text, "manifest", path=path)
    if not path.exists():
        raise DataError(text, "no such file or folder")
    raise DataError(text, f"not a known source: expected {SOURCE_GRAMMAR}")


def require_source(
    spec: str | Path | SourceSpec,
    *,
    command: str,
    needs: str,
    kinds: Collection[str] = (),
    builtins: Collection[str] | None = None,
) -> SourceSpec:
    """``spec`` parsed, or one clear line saying why ``command`` cannot use it.

    Args:
        command: the command, for the message ("train", "index build").
        needs: what it needs ("image-text pairs").
        kinds: the path kinds it reads (``"manifest"``, ``"folder"``, ``"shards"``).
        builtins: the builtin names it reads (``None``: those holding image-text pairs).

    Raises:
        ConfigError: "train needs image-text pairs; builtin:fsdd is audio with labels (give ...)".
    """
    parsed = spec if isinstance(spec, SourceSpec) else parse_source(spec)
    names = [n for n, b in BUILTINS.items() if b.pairs] if builtins is None else list(builtins)
    if parsed.kind == "builtin" and parsed.name in names or parsed.kind != "builtin" and parsed.kind in kinds:
        return parsed
    accepted = [{"manifest": "a .csv/.jsonl/.parquet manifest", "folder": "a folder of files",
                 "shards": "tar shards"}[k] for k in kinds] + [f"builtin:{n}" for n in names]
    raise ConfigError(f"{command} needs {needs}; {parsed.describe()} (give {_either(accepted)})")


def _either(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


# ---------------------------------------------------------------------------------------------------
# Manifests
# ---------------------------------------------------------------------------------------------------


class ManifestSource(Source):
    """A CSV, JSONL or Parquet manifest with any of the columns image, text, audio, video, label, id.

    Row numbers (``BadRecord.row``, the default key) count data records from 0, and line numbers
    (``BadRecord.line``, the ``:<line>`` in ``Record.source``) are physical lines from 1, as
    :func:`polymodal.data.manifest.read_pairs` has them; the CSV rules are that module's.
    """

    def __init__(self, spec: str, **kw: Any) -> None:
        super().__init__(spec, **kw)
        self.path = Path(os.path.abspath(spec))
        suffix = self.path.suffix.lower()
        if suffix not in MANIFEST_SUFFIXES:
            raise DataError(spec, f"unknown manifest format {suffix or '(no suffix)'!r}; use one of "
                                  f"{', '.join(MANIFEST_SUFFIXES)}")
        if not self.path.is_file():
            raise DataError(spec, "manifest not found" if not self.path.exists() else "manifest is not a file")

    def _items(self) -> Iterator[Record | BadRecord]:
        # The per-format readers of the image-text manifest: one parser per format in the codebase.
        from polymodal.data.manifest import _read_csv, _read_jsonl, _read_parquet, row_source

        reader = {".csv": _read_csv, ".jsonl": _read_jsonl, ".parquet": _read_parquet}[self.path.suffix.lower()]
        columns, rows = reader(self.path)
        if not any(m in columns for m in MODALITIES):
            found = ", ".join(columns) if columns else "(none)"
            raise DataError(self.spec, f"no modality column (image, text, audio or video); columns found: {found}")
        for raw_row in rows:
            yield self._row(raw_row, row_source(self.path, raw_row))

    def _row(self, raw_row: RawRow, source: str) -> Record | BadRecord:
        row, i, line = raw_row.data, raw_row.row, raw_row.line

        def bad(problem: str, where: str = source) -> BadRecord:
            return BadRecord(source=where, problem=problem, row=i, line=line)

        if isinstance(row, str):  # the reader already found the problem (bad JSON, bad bytes, bad CSV)
            return bad(row)
        values: dict[str, Any] = {}
        for col, value in row.items():
            if isinstance(value, str) and _has_surrogates(value):
                return bad(f"column {col!r} is not valid UTF-8")
        for modality in FILE_MODALITIES:
            raw = row.get(modality)
            if isinstance(raw, bytes):  # Parquet binary column
                raw = os.fsdecode(raw)
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                continue  # this modality is missing in this row
            if not isinstance(raw, str):
                return bad(f"column {modality!r} must be a file path, got {type(raw).__name__}")
            if "\0" in raw:  # no file system allows it; Path() would raise ValueError deep inside a decoder
                return bad(f"column {modality!r} holds a NUL byte")
            path = Path(os.path.normpath(self.path.parent / raw.strip()))  # absolute paths stay as they are
            try:
                values[modality] = self._file_value(modality, path)
            except DataError as e:
                return bad(e.problem, str(path))
        text = row.get("text")
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                return bad("column 'text' is not valid UTF-8")
        if text is not None and not isinstance(text, str):
            return bad(f"column 'text' must be a string, got {type(text).__name__}")
        if text is not None and text.strip():
            values["text"] = text
        if not values:
            return bad("no modality: image, text, audio and video are all empty")
        key = row.get(KEY_COLUMN)
        label = row.get(LABEL_COLUMN)
        return Record(
            **values,
            label=None if label == "" else label,
            key=str(key) if key is not None and str(key) != "" else str(i),
            source=source,
            extra={k: v for k, v in row.items() if k not in (*MODALITIES, KEY_COLUMN, LABEL_COLUMN)},
        )


def _has_surrogates(value: str) -> bool:
    """True where text carries lone surrogates: bytes that were not UTF-8 (read with surrogateescape)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# ---------------------------------------------------------------------------------------------------
# Folders: label/file.ext
# ---------------------------------------------------------------------------------------------------


class FolderSource(Source):
    """A folder of files in the ``label/file.ext`` layout; see the module docstring.

    Files are visited in sorted order; hidden files and folders (a leading ``.``) and files with an
    unknown suffix are left out (the latter are listed in ``ignored`` after a pass, and by ``data inspect``). The key is the path
    relative to the root without its suffix (``"cat/001"``); ``source`` is the first file of the record.
    """

    def __init__(self, spec: str, **kw: Any) -> None:
        super().__init__(spec, **kw)
        self.root = Path(os.path.abspath(spec))
        if not self.root.is_dir():
            raise DataError(spec, "no such folder" if not self.root.exists() else "not a folder")

    def _groups(self) -> Iterator[tuple[str, list[Path]]]:
        """(key, files) per record, in sorted order; one folder in memory at a time."""
        self.ignored = []
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel = Path(folder).relative_to(self.root)
            groups: dict[str, list[Path]] = {}
            for name in sorted(f for f in files if not f.startswith(".")):
                path = Path(folder) / name
                if modality_of(path.suffix) is None:
                    self.ignored.append(path)
                    continue
                groups.setdefault((rel / path.stem).as_posix(), []).append(path)
            yield from groups.items()

    def _items(self) -> Iterator[Record | BadRecord]:
        for key, files in self._groups():
            yield self._group(key, files)

    def _group(self, key: str, files: list[Path]) -> Record | BadRecord:
        values: dict[str, Any] = {}
        for path in files:
            modality = modality_of(path.suffix)
            assert modality is not None  # unknown suffixes were filtered out
            if modality in values:
                return BadRecord(source=str(path), problem=f"two {modality} files for the record {key!r}")
            try:
                if modality == "text":
                    values["text"] = decode("text", path)
                else:
                    values[modality] = self._file_value(modality, path)
            except DataError as e:
                return BadRecord(source=str(path), problem=e.problem)
        parts = key.split("/")
        return Record(**values, label=parts[0] if len(parts) > 1 else None, key=key, source=str(files[0]))


# ---------------------------------------------------------------------------------------------------
# Tar shards
# ---------------------------------------------------------------------------------------------------


class ShardSource(Source):
    """WebDataset-style tar shards, read in order in this process (for a shuffled, split stream over
    DataLoader workers and ranks use :class:`polymodal.data.shards.ShardStream`).

    A sample whose member cannot be decoded is a bad record naming ``shard.tar:member``; a shard that
    cannot be read past some point is a bad record naming the shard (its earlier samples are kept).
    """

    def __init__(self, spec: str, **kw: Any) -> None:
        super().__init__(spec, **kw)
        from polymodal.data.shards import shard_paths

        self.shards = shard_paths(spec)

    def _items(self) -> Iterator[Record | BadRecord]:
        from polymodal.data.shards import read_shard

        for shard in self.shards:
            yield from read_shard(shard, decode=self.decode, check=self.check)


# ---------------------------------------------------------------------------------------------------
# Builtin datasets
# ---------------------------------------------------------------------------------------------------


class BuiltinSource(Source):
    """A vendored or generated dataset by name: ``builtin:openmoji``, ``builtin:fsdd:test``,
    ``builtin:avdigits:train``, ``builtin:shapes:val`` (also ``shapes-vqa`` and ``shapes-clips``, the
    generator's defaults: 1,000 records per split, seed 0).

    Builtin records are always decoded in memory (``decode`` does not apply). A dataset that needs a
    split (``avdigits``, ``shapes``) gives all its splits in order when none is named.
    """

    def __init__(self, spec: str, **kw: Any) -> None:
        super().__init__(spec, **kw)
        parsed = parse_source(spec)
        if parsed.kind != "builtin" or parsed.name is None:
            raise ConfigError(f"builtin source must be builtin:NAME or builtin:NAME:SPLIT, got {spec!r}")
        self.name = parsed.name
        self.split = parsed.split

    def _loader(self) -> Callable[..., list[Record]]:
        import importlib

        info = BUILTINS[self.name]
        try:
            return getattr(importlib.import_module(info.module), info.function)  # type: ignore[no-any-return]
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"builtin dataset {self.name!r} is not available here ({e})") from None

    def _items(self) -> Iterator[Record | BadRecord]:
        load = self._loader()
        info = BUILTINS[self.name]
        if self.split is not None or not info.needs_split:
            yield from load(split=self.split, **info.kwargs)
        else:
            for split in BUILTIN_SPLITS:
                yield from load(split=split, **info.kwargs)
