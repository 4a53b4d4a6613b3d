"""Looking at and converting data sources: ``polymodal data inspect|preview|shards``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from polymodal.data.sources import open_source

if TYPE_CHECKING:
    from polymodal.data.inspect import SourceStats
    from polymodal.data.shards import ShardIndex


def inspect(source: str) -> SourceStats:
    """Per-modality counts, missing rates, sizes and lengths, labels and bad records of ``source``."""
    from polymodal.data.inspect import inspect_source

    return inspect_source(open_source(source, decode=True))


@dataclass
class Sheet:
    out: Path
    width: int
    height: int


def preview(source: str, out: str, *, max_records: int = 16, cell: int = 96) -> Sheet:
    """Write a PNG contact sheet of the first records of ``source``."""
    from polymodal.data.inspect import contact_sheet

    sheet = contact_sheet(open_source(source, decode=True), max_records=max_records, cell=cell)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, format="PNG")
    return Sheet(Path(out), sheet.width, sheet.height)


def shards(source: str, out: str, *, shard_size: int = 1000, overwrite: bool = False, strict: bool = False) -> ShardIndex:
    """Write WebDataset tar shards of ``source`` (original file bytes) and ``out/index.json``."""
    from polymodal.data.shards import write_shards

    # decode=False: files are copied as they are; check=True still decodes each once to skip bad ones.
    return write_shards(open_source(source, decode=False, check=True, strict=strict), out, shard_size=shard_size,
                        overwrite=overwrite)
