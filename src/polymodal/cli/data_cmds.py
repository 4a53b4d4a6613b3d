"""CLI commands for data: ``polymodal data inspect|preview`` and ``polymodal shards``."""

from __future__ import annotations

import json
from pathlib import Path

import click

SOURCE_HELP = "a .csv/.jsonl/.parquet manifest, a label/file.ext folder, tar shards, or builtin:NAME[:SPLIT]"


@click.group("data")
def data() -> None:
    """Look at a data source: statistics and a contact sheet."""


@data.command("inspect")
@click.argument("source")
@click.option("--json", "as_json", is_flag=True, help="print the statistics as JSON")
def inspect_cmd(source: str, as_json: bool) -> None:
    """Per-modality counts, missing rates, sizes and lengths, labels and bad records of SOURCE.

    SOURCE is a .csv/.jsonl/.parquet manifest, a label/file.ext folder, tar shards, or builtin:NAME[:SPLIT].
    """
    from polymodal.data.inspect import format_stats, inspect_source
    from polymodal.data.sources import open_source

    stats = inspect_source(open_source(source, decode=True))
    click.echo(json.dumps(stats.to_dict(), indent=2, default=str) if as_json else format_stats(stats))


@data.command("preview")
@click.argument("source")
@click.option("--out", default="sheet.png", show_default=True, type=click.Path(dir_okay=False),
              help="PNG file to write")
@click.option("--max-records", default=16, show_default=True, type=click.IntRange(min=1), help="rows")
@click.option("--cell", default=96, show_default=True, type=click.IntRange(min=16), help="row height in pixels")
def preview(source: str, out: str, max_records: int, cell: int) -> None:
    """Write a contact sheet of the first records of SOURCE: images, spectrograms, video frames, texts."""
    from polymodal.data.inspect import contact_sheet
    from polymodal.data.sources import open_source

    src = open_source(source, decode=True)
    sheet = contact_sheet(src, max_records=max_records, cell=cell)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, format="PNG")
    click.echo(f"wrote {out} ({sheet.width}x{sheet.height})")


@click.command("shards")
@click.option("--data", "data_spec", required=True, help=SOURCE_HELP)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="folder for the shards and index.json")
@click.option("--shard-size", default=1000, show_default=True, type=click.IntRange(min=1), help="samples per shard")
@click.option("--overwrite", is_flag=True, help="replace shards already in OUT")
@click.option("--strict", is_flag=True, help="stop at the first bad record instead of skipping it")
@click.option("--json", "as_json", is_flag=True, help="print index.json")
def shards(data_spec: str, out: str, shard_size: int, overwrite: bool, strict: bool, as_json: bool) -> None:
    """Write WebDataset tar shards (original file bytes, one sample per record) and OUT/index.json."""
    from polymodal.data.shards import write_shards
    from polymodal.data.sources import open_source

    # decode=False: files are copied as they are; check=True still decodes each once to skip bad ones.
    index = write_shards(open_source(data_spec, decode=False, check=True, strict=strict), out,
                         shard_size=shard_size, overwrite=overwrite)
    if as_json:
        click.echo(json.dumps(index.to_dict(), indent=2, default=str))
        return
    click.echo(f"wrote {index.records} records in {len(index.shards)} shard(s) to {out}")
    if index.bad:
        click.echo(f"skipped {len(index.bad)} bad record(s):")
        for b in index.bad[:20]:
            click.echo(f"  {b}")
        if len(index.bad) > 20:
            click.echo(f"  ... and {len(index.bad) - 20} more (see {out}/index.json)")


COMMANDS = [data, shards]
