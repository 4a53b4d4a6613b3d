"""CLI commands of cross-modal search: ``index build|add|remove|info|compact|repair``, ``search``, ``serve``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from polymodal.cli.options import data_option, json_option, model_option, out_option, quiet_option, stderr_log

SEARCH_EXTRA = "pip install 'polymodal[search]' (`make setup` installs it)"


def _require_search_extra(command: str, modules: tuple[str, ...] = ("faiss",)) -> None:
    """One line naming the extra to install when the search dependencies are missing, not an ImportError."""
    import importlib

    from polymodal.errors import ConfigError

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            package = {"faiss": "faiss-cpu"}.get(name, name)
            raise ConfigError(f"{command} needs {package}, which is not installed: {SEARCH_EXTRA}") from None


def _require_model(model_dir: str | None, command: str) -> None:
    if model_dir is not None:
        from polymodal.recipes.common import require_model

        require_model(model_dir, command=command)


def _labels(labels: str | None, labels_file: str | None) -> list[str] | None:
    if labels and labels_file:
        raise click.UsageError("give --labels or --labels-file, not both")
    if labels_file:
        return [s.strip() for s in Path(labels_file).read_text(encoding="utf-8").splitlines() if s.strip()]
    if labels:
        return [s.strip() for s in labels.split(",") if s.strip()]
    return None


def _sources(images: tuple[str, ...], data: str | None, command: str):
    from polymodal.data.sources import require_source
    from polymodal.search.ingest import sources_from_images, sources_from_manifest

    if bool(images) == bool(data):
        raise click.UsageError("give exactly one of --images or --data")
    if data:
        spec = require_source(data, command=command, needs="image files on disk", kinds=("manifest", "folder"),
                              builtins=())
        if spec.kind == "folder":
            return sources_from_images([data]), []
        return sources_from_manifest(data)
    return sources_from_images(list(images)), []


def _update(index_dir, model_dir, images, data, *, sync, labels, labels_file, batch_size, strict, exact_max,
            hnsw_max, as_json, quiet) -> None:
    command = "index build" if sync else "index add"
    _require_search_extra(command)
    _require_model(model_dir, command)
    from polymodal.models.io import load
    from polymodal.search.ann import AnnConfig
    from polymodal.search.index import SearchIndex
    from polymodal.search.ingest import BuildConfig, update_index

    if model_dir is None:  # `index add` without --model: the model that built the index
        with SearchIndex.open(index_dir) as idx:
            model_dir = idx.info.model_dir
        if model_dir is None or not Path(model_dir).is_dir():
            raise click.UsageError(f"the index's recorded model folder ({model_dir}) is not there; pass --model DIR")
    sources, bad_rows = _sources(images, data, command)
    ann_cfg = None
    if exact_max is not None or hnsw_max is not None:
        base = AnnConfig()
        ann_cfg = AnnConfig(exact_max=exact_max if exact_max is not None else base.exact_max,
                            hnsw_max=hnsw_max if hnsw_max is not None else max(base.hnsw_max, exact_max or 0))
    report = update_index(
        load(model_dir), index_dir, sources, sync=sync, labels=_labels(labels, labels_file),
        config=BuildConfig(batch_size=batch_size, strict=strict), ann_config=ann_cfg, model_dir=model_dir,
        progress=stderr_log(quiet, as_json),
    )
    report.bad = bad_rows + report.bad
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(report.summary())
    for b in report.bad[:20]:
        click.echo(f"  skipped {b}", err=True)
    if len(report.bad) > 20:
        click.echo(f"  ... and {len(report.bad) - 20} more (see --json)", err=True)


_build_options = [
    click.option("--images", multiple=True, type=click.Path(), help="image files or folders (repeat)"),
    data_option("images with captions and labels: a manifest (image, text, label columns) or a folder"),
    click.option("--labels", default=None, help='default zero-shot labels, comma-separated ("cat,dog")'),
    click.option("--labels-file", type=click.Path(exists=True, dir_okay=False), help="default labels, one per line"),
    click.option("--batch-size", default=32, show_default=True, help="images per forward pass and per saved batch"),
    click.option("--strict", is_flag=True, help="stop at the first unreadable image instead of skipping it"),
    click.option("--exact-max", type=int, default=None, help="use exact search below this many items [50000]"),
    click.option("--hnsw-max", type=int, default=None, help="use HNSW below this many items, IVF above [300000]"),
    json_option,
    quiet_option,
]


def _with_build_options(f):
    for opt in reversed(_build_options):
        f = opt(f)
    return f


@click.group("index")
def index_group() -> None:
    """Build and update a search index (faiss vectors + SQLite metadata)."""


@index_group.command("build")
@model_option("image-text model folder")
@out_option("index folder (created or updated)")
@_with_build_options
def index_build(model_dir, out, images, data, labels, labels_file, batch_size, strict, exact_max, hnsw_max,
                as_json, quiet):
    """Make INDEX hold exactly these images: new and changed files are embedded, missing ones removed.

    Rerunning is cheap: unchanged files are skipped and vectors already computed (also by an interrupted
    build) are reused by content hash.
    """
    _update(out, model_dir, images, data, sync=True, labels=labels, labels_file=labels_file,
            batch_size=batch_size, strict=strict, exact_max=exact_max, hnsw_max=hnsw_max, as_json=as_json, quiet=quiet)


@index_group.command("add")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False))
@model_option("image-text model folder (default: the one that built the index)", required=False)
@_with_build_options
def index_add(index_dir, model_dir, images, data, labels, labels_file, batch_size, strict, exact_max, hnsw_max,
              as_json, quiet):
    """Add or update images in INDEX without touching its other items."""
    _update(index_dir, model_dir, images, data, sync=False, labels=labels, labels_file=labels_file,
            batch_size=batch_size, strict=strict, exact_max=exact_max, hnsw_max=hnsw_max, as_json=as_json, quiet=quiet)


@index_group.command("remove")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--id", "ids", multiple=True, type=int, help="item id to remove (repeat)")
@json_option
def index_remove(index_dir, paths, ids, as_json):
    """Remove items from INDEX by id or by path (a folder removes everything under it)."""
    _require_search_extra("index remove")
    from polymodal.search.ingest import remove_items

    if not paths and not ids:
        raise click.UsageError("give item paths or --id")
    report = remove_items(index_dir, ids=ids, paths=paths)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())


@index_group.command("compact")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False))
def index_compact(index_dir):
    """Drop removed items and unused vectors, and rebuild the vector index (re-measuring its recall)."""
    _require_search_extra("index compact")
    from polymodal.search.ingest import compact_index

    click.echo(compact_index(index_dir).summary())


@index_group.command("repair")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False))
def index_repair(index_dir):
    """Make INDEX consistent again after its files were emptied, damaged or replaced.

    Rebuilds the vector index from the items and vectors the database still holds (an unreadable database
    is moved aside). Items the database lost must be added again; a consistent index is left as it is.
    """
    _require_search_extra("index repair")
    from polymodal.search.ingest import repair_index

    report = repair_index(index_dir)
    for note in report.notes:
        click.echo(note, err=True)
    click.echo(report.summary())


@index_group.command("info")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False))
@json_option
def index_info(index_dir, as_json):
    """Show the committed generation: items, model id, vector index kind and its measured recall@10."""
    _require_search_extra("index info")
    from polymodal.search.index import SearchIndex

    with SearchIndex.open(index_dir) as idx:
        d = idx.info.to_dict()
        d["labels"] = idx.labels()
    if as_json:
        click.echo(json.dumps(d, indent=2))
        return
    a = d["ann"]
    click.echo(f"{index_dir}: generation {d['generation']}, {d['count']} items, model {d['model_id']} "
               f"({d['model_dir']}), dim {d['dim']}")
    click.echo(f"vector index: {a['kind']} {a['params']}, recall@10 {a['recall_at_10']:.3f}"
               + (f" (measured on {a['recall_measured_on']} items, {a['recall_queries']} queries)"
                  if a["kind"] != "flat" else " (exact)"))
    if d["tombstones"]:
        click.echo(f"removed items awaiting compaction: {d['tombstones']}")
    click.echo(f"labels: {', '.join(d['labels'][:30]) or '(none)'}")


@click.command()
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("query", required=False)
@click.option("--image", type=click.Path(exists=True, dir_okay=False), help="query image (image → image)")
@click.option("--texts", type=click.Path(exists=True, dir_okay=False),
              help="rank these candidate texts (one per line) for --image (image → text)")
@click.option("-k", "--k", "k", default=10, show_default=True, help="number of results")
@click.option("--label", default=None, help="only items with this label")
@click.option("--path-prefix", default=None, help="only items whose path starts with this (made absolute)")
@model_option("image-text model folder (default: the one that built the index; another model is refused)",
              required=False)
@json_option
def search(index_dir, query, image, texts, k, label, path_prefix, model_dir, as_json):
    """Search INDEX: by text (QUERY), by image (--image), or rank texts for an image (--image --texts).

    With --json: a JSON list of hits, best first.
    """
    _require_search_extra("search")
    _require_model(model_dir, "search")
    from polymodal.search.index import ItemFilter
    from polymodal.search.query import Searcher

    if texts and not image:
        raise click.UsageError("--texts ranks candidate texts for an image: give --image too")
    if bool(query) == bool(image):
        raise click.UsageError("give a QUERY text or --image (not both)")
    if path_prefix:
        keep_sep = path_prefix.endswith(("/", os.sep))
        path_prefix = os.path.abspath(path_prefix) + (os.sep if keep_sep else "")
    where = ItemFilter(label=label, path_prefix=path_prefix)
    searcher = Searcher.open(index_dir, model_dir)
    try:
        if texts:
            candidates = [s for s in Path(texts).read_text(encoding="utf-8").splitlines() if s.strip()]
            hits = [h.to_dict() for h in searcher.texts_for_image(image, candidates, k=k)]
        elif image:
            hits = [h.to_dict() for h in searcher.by_image(image, k=k, where=where)]
        else:
            hits = [h.to_dict() for h in searcher.by_text(query, k=k, where=where)]
    finally:
        searcher.close()
    if as_json:
        click.echo(json.dumps(hits, indent=2))
        return
    for h in hits:
        what = h["text"] if texts else h["path"] + (f"  [{', '.join(h['labels'])}]" if h["labels"] else "")
        click.echo(f"{h['score']:7.4f}  {h['id']:>6}  {what}")
    if not hits:
        click.echo("(no results)", err=True)


@click.command()
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind (loopback by default)")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@model_option("image-text model folder (default: the one that built the index)", required=False)
@click.option("--max-upload-mb", default=10.0, show_default=True, help="largest accepted upload")
@click.option("--max-pixels", default=40_000_000, show_default=True, help="largest accepted upload width*height")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME",
              help="also answer requests whose Host is NAME (repeat); by default only the bound address's names")
def serve(index_dir, host, port, model_dir, max_upload_mb, max_pixels, allow_hosts):
    """Serve INDEX over HTTP: a web page at / and a JSON API (spec at /openapi.json)."""
    _require_search_extra("serve", ("faiss", "fastapi", "uvicorn"))
    _require_model(model_dir, "serve")
    from polymodal.search.server import ServerConfig, hosts_for_bind, open_searcher, serve_searcher
    from polymodal.search.uploads import UploadLimits

    limits = UploadLimits(max_bytes=int(max_upload_mb * 1024 * 1024), max_pixels=max_pixels)
    hosts, any_ip = hosts_for_bind(host, tuple(allow_hosts))
    config = ServerConfig(uploads=limits, allowed_hosts=hosts, allow_ip_hosts=any_ip)
    searcher, config = open_searcher(index_dir, model_dir, config)  # a broken index is an error line, not "serving"
    click.echo(f"serving {index_dir} on http://{host}:{port}/  (Ctrl-C stops; answers to Host: "
               f"{', '.join(hosts)}{', any IP address' if any_ip else ''})", err=True)
    sys.stderr.flush()
    serve_searcher(searcher, host=host, port=port, config=config)


COMMANDS = [index_group, search, serve]
