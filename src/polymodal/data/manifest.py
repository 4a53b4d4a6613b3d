"""Read an image-caption manifest (CSV, JSONL or Parquet) into records, keeping an account of bad rows.

A manifest has one row per pair: an image path (relative to the manifest's folder, or absolute) and a
caption, plus optional ``label``/``id`` columns and any others, which are carried along in
``Record.extra``. Rows that cannot be used (missing image, image that does not decode, empty caption,
text that is not UTF-8) are skipped and listed as :class:`~polymodal.data.record.BadRecord`, so a
few broken files in a large folder cost a warning, not a crash; ``strict=True`` turns the first bad
row into an error instead. Mistakes that affect every row (unknown format, wrong column name) always
raise :class:`~polymodal.errors.DataError` at once.

CSV follows RFC 4180 strictly, because a lenient reader loses data without a word: one unclosed
quote would swallow every later row into one caption. Every row must have as many cells as the
header (put a caption holding commas in double quotes, and double a quote inside it: ``""``); a row
with more or fewer cells, a quote that never closes, or text after a closing quote is a bad row named
by its physical line, and reading goes on at the next line. A cell may be any length.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from polymodal.data.images import DEFAULT_MAX_PIXELS, load_image
from polymodal.data.record import BadRecord, Record
from polymodal.data.splits import DEFAULT_SALT, Split, select_split
from polymodal.errors import DataError

SUFFIXES: tuple[str, ...] = (".csv", ".jsonl", ".parquet")


@dataclass
class PairsSource:
    """The usable pairs of a manifest and the rows that were skipped.

    Attributes:
        manifest: the manifest file, as an absolute path.
        records: one :class:`Record` per good row: ``image`` is the absolute image path, ``text`` the
            caption, ``key`` the ``id`` column (or the row number), ``source`` ``"<manifest>:<line>"``
            (``"<manifest>:<row>"`` for Parquet, which has no lines).
        bad: one :class:`BadRecord` per skipped row, naming the image file (or the manifest row).
    """

    manifest: Path
    records: list[Record] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def split(
        self, split: Split, *, val: float = 0.1, test: float = 0.15, salt: str = DEFAULT_SALT
    ) -> list[Record]:
        """The records in one split, by :func:`polymodal.data.splits.split_of` of the image path.

        The key is the image path relative to the manifest's folder (POSIX separators), so the split
        survives moving the whole dataset folder, reordering rows and adding or removing rows.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.
            val: validation fraction.
            test: test fraction.
            salt: hash salt.
        """
        root = self.manifest.parent
        return select_split(
            self.records, split, key=lambda r: _relative_key(r.image, root), val=val, test=test, salt=salt
        )


def read_pairs(
    path: str | Path,
    *,
    image_col: str = "image",
    text_col: str = "text",
    label_col: str = "label",
    id_col: str = "id",
    strict: bool = False,
    check_images: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> PairsSource:
    """Read image-caption pairs from a ``.csv``, ``.jsonl`` or ``.parquet`` manifest.

    Row numbers (``BadRecord.row``, the default key) count data records from 0: the CSV header and
    blank lines are not counted. Line numbers (``BadRecord.line``, the ``:<line>`` of ``source``) are
    the physical lines of a CSV or JSONL file, from 1, where the record starts.

    Args:
        path: the manifest file; its suffix picks the format.
        image_col: column holding the image path (relative to the manifest's folder, or absolute).
        text_col: column holding the caption.
        label_col: column copied to ``Record.label`` where present (optional column).
        id_col: column used as ``Record.key`` where present (optional); otherwise the row number.
        strict: raise :class:`DataError` at the first bad row instead of skipping it.
        check_images: decode each image once with :func:`load_image` to validate it; set ``False``
            for very large manifests (a missing file is still detected, by a cheap ``stat``).
        max_pixels: size limit passed to :func:`load_image` when checking images.

    Returns:
        A :class:`PairsSource` with the good records and the skipped rows.

    Raises:
        DataError: the manifest is missing, unreadable, of an unknown format, or lacks the image or
            text column (the message lists the columns found); with ``strict``, any bad row.
    """
    manifest = Path(os.path.abspath(path))
    suffix = manifest.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(path, f"unknown manifest format {suffix or '(no suffix)'!r}; use one of {', '.join(SUFFIXES)}")
    if not manifest.is_file():
        raise DataError(path, "manifest not found" if not manifest.exists() else "manifest is not a file")

    reader = {".csv": _read_csv, ".jsonl": _read_jsonl, ".parquet": _read_parquet}[suffix]
    columns, rows = reader(manifest)
    missing = [c for c in (image_col, text_col) if c not in columns]
    if missing:
        found = ", ".join(columns) if columns else "(none)"
        raise DataError(path, f"no column {missing[0]!r}; columns found: {found}")

    out = PairsSource(manifest=manifest)
    root = manifest.parent
    special = {image_col, text_col, label_col, id_col}
    for raw in rows:
        record_or_bad = _row_to_record(
            raw, row_source(manifest, raw), root, image_col=image_col, text_col=text_col, label_col=label_col,
            id_col=id_col, special=special, check_images=check_images, max_pixels=max_pixels,
        )
        if isinstance(record_or_bad, BadRecord):
            if strict:
                raise DataError(record_or_bad.source, f"{record_or_bad.problem} ({record_or_bad.position} of "
                                                      f"{manifest.name})")
            out.bad.append(record_or_bad)
        else:
            out.records.append(record_or_bad)
    return out


# --- one row -------------------------------------------------------------------------------------


def _row_to_record(
    raw: RawRow,
    source: str,
    root: Path,
    *,
    image_col: str,
    text_col: str,
    label_col: str,
    id_col: str,
    special: set[str],
    check_images: bool,
    max_pixels: int,
) -> Record | BadRecord:
    """Validate one row; a string ``raw.data`` is a problem the reader already found (bad JSON, bad bytes)."""
    row, i = raw.data, raw.row

    def bad(problem: str, where: str = source) -> BadRecord:
        return BadRecord(source=where, problem=problem, row=i, line=raw.line)

    if isinstance(row, str):
        return bad(row)

    for col, value in row.items():
        if col != image_col and isinstance(value, str) and _has_undecodable(value):
            return bad(f"column {col!r} is not valid UTF-8")

    raw_path = row.get(image_col)
    if isinstance(raw_path, bytes):  # Parquet binary column
        raw_path = os.fsdecode(raw_path)
    if not isinstance(raw_path, str) or not raw_path.strip():
        return bad(f"empty image path (column {image_col!r})")
    image = Path(os.path.normpath(root / raw_path.strip()))  # absolute paths stay as they are

    text = row.get(text_col)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return bad(f"column {text_col!r} is not valid UTF-8")
    if not isinstance(text, str) or not text.strip():
        return bad("empty caption")

    if check_images:
        try:
            load_image(image, max_pixels=max_pixels)
        except DataError as e:
            return bad(e.problem, str(image))
    elif not image.is_file():
        return bad("file not found", str(image))

    key = row.get(id_col)
    return Record(
        image=image,
        text=text,
        label=row.get(label_col),
        key=str(key) if key is not None and str(key) != "" else str(i),
        source=source,
        extra={k: v for k, v in row.items() if k not in special},
    )


def _has_undecodable(value: str) -> bool:
    """True where text carries lone surrogates: bytes that were not UTF-8 (read with surrogateescape)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _relative_key(image: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(image, root)).as_posix()
    except ValueError:  # another drive on Windows
        return Path(image).as_posix()


# --- one reader per format: each returns (columns, iterator of RawRow) ----------------------------


class RawRow(NamedTuple):
    """One data record as a format reader found it, before any column is checked."""

    row: int  # data records from 0; the header and blank lines are not counted
    line: int | None  # physical line (from 1) where the record starts; None for Parquet
    data: dict[str, Any] | str  # column -> value, or the problem the reader found


Rows = Iterator[RawRow]


def row_source(manifest: Path, raw: RawRow) -> str:
    """``"<manifest>:<line>"``, the editor's way to name a place; Parquet has rows, not lines."""
    return f"{manifest}:{raw.row if raw.line is None else raw.line}"


def bad_file(record: Record, where: str | Path, problem: str) -> BadRecord:
    """A good row whose file turned out unusable later, named by the file and the row's place.

    The inverse of :func:`row_source`: the number after the last ``:`` of ``record.source`` is a
    line, or a row for Parquet.
    """
    manifest, _, number = record.source.rpartition(":")
    n = int(number) if number.isdigit() else None
    if manifest.lower().endswith(".parquet"):
        return BadRecord(source=str(where), problem=problem, row=n)
    return BadRecord(source=str(where), problem=problem, line=n)


# Python's csv module stops at 131,072 characters a cell and fails the whole file there; JSONL and
# Parquet have no such limit, so CSV gets none either (the largest a C long holds on every platform).
_CSV_FIELD_LIMIT = 2**31 - 1


def _read_csv(manifest: Path) -> tuple[list[str], Rows]:
    # surrogateescape keeps going past non-UTF-8 bytes, so one bad row does not sink the file;
    # utf-8-sig drops the byte-order mark that spreadsheet programs write.
    try:
        text = manifest.read_text(encoding="utf-8-sig", errors="surrogateescape")
    except OSError as e:
        raise DataError(manifest, f"cannot read manifest ({e.strerror or e})") from None
    lines = list(io.StringIO(text, newline=""))  # physical lines, ends kept: \n, \r\n or \r
    previous_limit = csv.field_size_limit(_CSV_FIELD_LIMIT)
    try:
        records = list(_csv_records(lines))
    finally:
        csv.field_size_limit(previous_limit)  # the limit is process-wide: leave it as found
    if not records:
        raise DataError(manifest, "empty manifest (no header row)")
    first, header = records[0]
    if isinstance(header, str):
        raise DataError(manifest, f"header (line {first}): {header}")
    rows = [RawRow(i, line, cells if isinstance(cells, str) else dict(zip(header, cells, strict=True)))
            for i, (line, cells) in enumerate(records[1:])]
    return header, iter(rows)


def _csv_records(lines: list[str]) -> Iterator[tuple[int, list[str] | str]]:
    """(first line, cells or problem) per record, blank lines left out; the first is the header.

    The reader is strict, and after a malformed record it starts again on the line after the one
    where that record began, so a stray quote costs its own row, not every row up to the next quote.
    A record that runs over several lines and has the wrong number of cells is taken for the same
    mistake (a quote closed rows later) and gets the same restart.
    """
    width: int | None = None  # cells in the header, once it is read
    start = 0  # index in ``lines`` where the current reader began
    while start < len(lines):
        reader = csv.reader(itertools.islice(lines, start, None), strict=True)
        done = 0  # lines this reader consumed before the current record
        try:
            for cells in reader:
                first, last = start + done + 1, start + reader.line_num
                done = reader.line_num
                if not cells:
                    continue
                if width is None:
                    width = len(cells)
                elif len(cells) != width:
                    yield first, _cell_count_problem(len(cells), width, first, last)
                    if last > first:
                        start = first  # resume on the line after the one where it began
                        break
                    continue
                yield first, cells
            else:
                return
        except csv.Error as e:
            first = start + done + 1
            yield first, _csv_problem(str(e))
            start = first


def _cell_count_problem(cells: int, width: int, first: int, last: int) -> str:
    problem = f"{cells} cells where the header has {width}"
    if last > first:
        return f"{problem}; a quoted cell runs from line {first} to line {last} (a quote that closes too late?)"
    return problem + (" (an unquoted comma in a cell?)" if cells > width else "")


def _csv_problem(error: str) -> str:
    """The csv module's complaint, in words that say how to fix the row."""
    if "unexpected end of data" in error:
        return "a quote opened on this line never closes (it would swallow every later row)"
    if "expected after" in error:
        return "text after a closing quote (write a quote inside a quoted cell as \"\")"
    return f"not valid CSV ({error})"


def _read_jsonl(manifest: Path) -> tuple[list[str], Rows]:
    try:
        data = manifest.read_bytes()
    except OSError as e:
        raise DataError(manifest, f"cannot read manifest ({e.strerror or e})") from None
    columns: dict[str, None] = {}  # insertion-ordered set: the order keys first appear in
    rows: list[RawRow] = []
    # bytes.splitlines ends lines at \n, \r\n and \r only, as an editor counts them.
    for line_no, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        obj = _json_object(line)
        if isinstance(obj, dict):
            columns.update(dict.fromkeys(obj))
        rows.append(RawRow(len(rows), line_no, obj))
    return list(columns), iter(rows)


def _json_object(line: bytes) -> dict[str, Any] | str:
    """One JSONL line as an object, or what is wrong with it."""
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return "line is not valid UTF-8"
    except json.JSONDecodeError as e:
        return f"not valid JSON ({e.msg})"
    if not isinstance(obj, dict):
        return f"not a JSON object (got {type(obj).__name__})"
    return obj


def _read_parquet(manifest: Path) -> tuple[list[str], Rows]:
    try:
        import pyarrow.parquet as pq  # optional dependency, only needed for this format
    except ImportError:
        raise DataError(
            manifest, "reading .parquet needs pyarrow: pip install 'polymodal[parquet]' (or pyarrow)"
        ) from None
    try:
        table = pq.read_table(manifest)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for damaged files
        raise DataError(manifest, f"not a valid Parquet file ({str(e).splitlines()[0][:120]})") from None
    columns = list(table.column_names)
    data = {c: table.column(c).to_pylist() for c in columns}
    rows = [RawRow(i, None, {c: data[c][i] for c in columns}) for i in range(table.num_rows)]
    return columns, iter(rows)
