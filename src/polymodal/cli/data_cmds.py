"""``polymodal data inspect|preview|shards`` (the top-level ``shards`` is an alias of ``data shards``)."""

from __future__ import annotations

import click

from polymodal.cli.options import data_option, echo_json, json_option, out_option


@click.group("data")
def data() -> None:
    """Look at a data source (statistics, a contact sheet) and write it as tar shards."""


def _source(source: str | None, data: str | None) -> str:
    """SOURCE given as the argument or as --data (one of them)."""
    if bool(source) == bool(data):
        raise click.UsageError("give the data as SOURCE or as --data SOURCE (one of them)")
    return str(source or data)


@data.command("inspect")
@click.argument("source", required=False)
@data_option("the data to inspect (or give it as SOURCE)")
@json_option
def inspect_cmd(source: str | None, data: str | None, as_json: bool) -> None:
    """Per-modality counts, missing rates, sizes and lengths, labels and bad records of SOURCE.

    SOURCE is a .csv/.jsonl/.parquet manifest, a label/file.ext folder, tar shards, or builtin:NAME[:SPLIT].
    """
    from polymodal.data.inspect import format_stats
    from polymodal.recipes import data as recipe

    stats = recipe.inspect(_source(source, data))
    if as_json:
        echo_json(stats.to_dict())
    else:
        click.echo(format_stats(stats))


@data.command("preview")
@click.argument("source", required=False)
@data_option("the data to show (or give it as SOURCE)")
@out_option("PNG file to write", default="sheet.png", folder=False)
@click.option("--max-records", default=16, show_default=True, type=click.IntRange(min=1), help="rows")
@click.option("--cell", default=96, show_default=True, type=click.IntRange(min=16), help="row height in pixels")
def preview(source: str | None, data: str | None, out: str, max_records: int, cell: int) -> None:
    """Write a contact sheet of the first records of SOURCE: images, spectrograms, video frames, texts."""
    from polymodal.recipes import data as recipe

    sheet = recipe.preview(_source(source, data), out, max_records=max_records, cell=cell)
    click.echo(f"wrote {sheet.out} ({sheet.width}x{sheet.height})")


@data.command("shards")
@data_option("the data to write", required=True)
@out_option("folder for the shards and index.json")
@click.option("--shard-size", default=1000, show_default=True, type=click.IntRange(min=1), help="samples per shard")
@click.option("--overwrite", is_flag=True, help="replace shards already in OUT")
@click.option("--strict", is_flag=True, help="stop at the first bad record instead of skipping it")
@json_option
def shards(data: str, out: str, shard_size: int, overwrite: bool, strict: bool, as_json: bool) -> None:
    """Write WebDataset tar shards (original file bytes, one sample per record) and OUT/index.json."""
    from polymodal.recipes import data as recipe

    index = recipe.shards(data, out, shard_size=shard_size, overwrite=overwrite, strict=strict)
    if as_json:
        echo_json(index.to_dict())
        return
    click.echo(f"wrote {index.records} records in {len(index.shards)} shard(s) to {out}")
    if index.bad:
        click.echo(f"skipped {len(index.bad)} bad record(s):")
        for b in index.bad[:20]:
            click.echo(f"  {b}")
        if len(index.bad) > 20:
            click.echo(f"  ... and {len(index.bad) - 20} more (see {out}/index.json)")


COMMANDS = [data]
ALIASES = {"shards": (data, shards)}
