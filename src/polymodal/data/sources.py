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

Iterating a source yields good records one at a time and lists the skipped ones in ``source.bad``
(a :class:`~polymodal.data.record.BadRecord` naming the file and the problem), so one broken file in
a large folder costs a line in a report, not a crash; ``strict=True`` raises at the first instead.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polymodal.data.decode import FILE_MODALITIES, decode, modality_of
from polymodal.data.record import MODALITIES, BadRecord, Record
from polymodal.errors import ConfigError, DataError

if TYPE_CHECKING:
    from polymodal.data.manifest import RawRow

MANIFEST_SUFFIXES: tuple[str, ...] = (".csv", ".jsonl", ".parquet")
KEY_COLUMN = "id"
LABEL_COLUMN = "label"

# Builtin datasets: name -> (module, loader function, whether the loader needs a split, keyword arguments).
# Resolved on use, so a dataset whose module (or optional dependency) is missing fails only when asked for.
BUILTINS: dict[str, tuple[str, str, bool, dict[str, Any]]] = {
    "openmoji": ("polymodal.data.openmoji", "load_openmoji", False, {}),
    "fsdd": ("polymodal.data.fsdd", "load_fsdd", False, {}),
    "avdigits": ("polymodal.data.avdigits", "load_avdigits", True, {}),
    "shapes": ("polymodal.data.shapes", "load_shapes", True, {"kind": "scenes"}),
    "shapes-vqa": ("polymodal.data.shapes", "load_shapes", True, {"kind": "vqa"}),
    "shapes-clips": ("polymodal.data.shapes", "load_shapes", True, {"kind": "clips"}),
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
    text = str(spec)
    kw: dict[str, Any] = {"decode": decode, "check": check, "strict": strict}
    if text.startswith("builtin:"):
        return BuiltinSource(text, **kw)
    if any(c in text for c in "{*?["):
        return ShardSource(text, **kw)
    path = Path(text)
    if path.is_dir():
        if any(p.suffix == ".tar" for p in path.iterdir() if p.is_file()):
            return ShardSource(text, **kw)
        return FolderSource(text, **kw)
    if path.suffix.lower() == ".tar":
        return ShardSource(text, **kw)
    if path.suffix.lower() in MANIFEST_SUFFIXES:
        return ManifestSource(text, **kw)
    if not path.exists():
        raise DataError(text, "no such file or folder")
    raise DataError(
        text, "not a known source: expected a .csv/.jsonl/.parquet manifest, a folder, .tar shards or builtin:NAME"
    )


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
        parts = spec.split(":")
        if len(parts) not in (2, 3) or parts[0] != "builtin":
            raise ConfigError(f"builtin source must be builtin:NAME or builtin:NAME:SPLIT, got {spec!r}")
        self.name = parts[1]
        self.split = parts[2] if len(parts) == 3 else None
        if self.name not in BUILTINS:
            raise ConfigError(f"unknown builtin dataset {self.name!r}; known: {', '.join(BUILTINS)}")
        if self.split is not None and self.split not in BUILTIN_SPLITS:
            raise ConfigError(f"unknown split {self.split!r} in {spec!r}; use one of {', '.join(BUILTIN_SPLITS)}")

    def _loader(self) -> Callable[..., list[Record]]:
        import importlib

        module, function, _, _ = BUILTINS[self.name]
        try:
            return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"builtin dataset {self.name!r} is not available here ({e})") from None

    def _items(self) -> Iterator[Record | BadRecord]:
        load = self._loader()
        _, _, needs_split, kwargs = BUILTINS[self.name]
        if self.split is not None or not needs_split:
            yield from load(self.split, **kwargs)
        else:
            for split in BUILTIN_SPLITS:
                yield from load(split, **kwargs)

