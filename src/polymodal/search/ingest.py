"""From image files to index items: hash each file, embed only what changed, commit one generation.

Files are read, hashed, decoded, preprocessed and thumbnailed by worker threads
(:func:`~polymodal.embed.ordered_map`) while the image tower runs on the previous batch; at most two
batches of prepared images wait at a time, so memory does not grow with the folder. Results are taken in
input order, so a build gives the same ids, vectors and order as with ``BuildConfig(workers=0)``, which
does every step inline.

A file's identity is its content hash (SHA-256 of its bytes). A file whose size and modification time are
the ones stored for its path is taken as unchanged without being read (as ``rsync`` and ``git`` do); any
other file is hashed, and only hashes with no stored vector for this model are decoded and embedded.
Vectors are committed batch by batch as they are computed (``IndexWriter.put_vectors``), so an interrupted
build loses at most one batch of work: the rerun finds the rest by hash. The items themselves appear in one
step, when the generation is committed, so readers see the whole build or none of it.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from polymodal.data.images import DEFAULT_MAX_PIXELS, load_image
from polymodal.embed import decode_size, default_workers, encode_prepared, image_paths, ordered_map
from polymodal.errors import ConfigError, DataError
from polymodal.search.ann import AnnConfig
from polymodal.search.index import Item
from polymodal.search.writer import IndexWriter, NewItem

Progress = Callable[[str], None]


@dataclass
class Source:
    """One image to index and its metadata.

    Args:
        path: the image file.
        caption: optional text stored with it (shown in results).
        labels: labels for filtering (``--label``) and the default zero-shot label list.
    """

    path: Path
    caption: str | None = None
    labels: list[str] = field(default_factory=list)


@dataclass
class BuildConfig:
    """How files are embedded.

    Args:
        batch_size: images per forward pass, and per committed batch of vectors.
        thumb_size: longest side of the stored thumbnails, in pixels.
        max_pixels: larger images are skipped as bad (decompression-bomb guard of ``load_image``).
        strict: stop at the first unreadable file instead of skipping it.
        workers: threads that hash, decode, preprocess and thumbnail files ahead of the tower
            (None: :func:`~polymodal.embed.default_workers`; 0: everything inline, one file after another).
        worker_processes: use forked processes instead of threads (slower on 2 cores: see docs/search.md).
    """

    batch_size: int = 32
    thumb_size: int = 192
    max_pixels: int = DEFAULT_MAX_PIXELS
    strict: bool = False
    workers: int | None = None
    worker_processes: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if not 16 <= self.thumb_size <= 1024:
            raise ConfigError(f"thumb_size must be in 16..1024, got {self.thumb_size}")
        if self.max_pixels < 1:
            raise ConfigError(f"max_pixels must be >= 1, got {self.max_pixels}")


@dataclass
class BuildReport:
    """What one write did.

    Attributes:
        index: the index folder.
        generation: the generation committed.
        count: items in it.
        added: new paths.
        updated: paths whose content or metadata changed.
        removed: items removed.
        unchanged: items kept as they were.
        embedded: images run through the model in this call.
        reused: changed or new items whose vector was already stored (same content seen before).
        bad: files skipped, each "path: problem".
        ann: kind, parameters and recall@10 of the vector index.
        seconds: wall time.
        notes: what a repair found and did (empty for other writes).
    """

    index: str
    generation: int
    count: int
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    embedded: int = 0
    reused: int = 0
    bad: list[str] = field(default_factory=list)
    ann: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        a = self.ann
        recall = f", recall@10 {a['recall_at_10']:.3f}" if a.get("kind") not in (None, "flat") else ""
        return (f"{self.index}: generation {self.generation}, {self.count} items ({self.added} added, "
                f"{self.updated} updated, {self.removed} removed, {self.unchanged} unchanged); embedded "
                f"{self.embedded}, reused {self.reused} stored vectors; {a.get('kind', '?')} index{recall}; "
                f"{len(self.bad)} bad file(s); {self.seconds:.1f} s")


# --- sources ---------------------------------------------------------------------------------------


def sources_from_images(items: Sequence[str | Path]) -> list[Source]:
    """Image files, and folders expanded to their images; an image in a subfolder gets its folder's name as label."""
    out = []
    for item in items:
        root = Path(item)
        for p in image_paths([root]):
            labels = [p.parent.name] if root.is_dir() and p.parent != root else []
            out.append(Source(path=p, labels=labels))
    return out


def sources_from_manifest(path: str | Path) -> tuple[list[Source], list[str]]:
    """The images of a CSV/JSONL/Parquet manifest (``image``, ``text``, optional ``label`` columns), and its bad rows."""
    from polymodal.data.manifest import read_pairs

    pairs = read_pairs(path, check_images=False)
    sources = [
        Source(path=Path(r.image), caption=r.text, labels=[] if r.label in (None, "") else [str(r.label)])
        for r in pairs.records
    ]
    return sources, [str(b) for b in pairs.bad]


# --- writing ---------------------------------------------------------------------------------------


def update_index(
    model: Any,
    index_dir: str | Path,
    sources: Sequence[Source],
    *,
    sync: bool,
    labels: list[str] | None = None,
    config: BuildConfig | None = None,
    ann_config: AnnConfig | None = None,
    model_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> BuildReport:
    """Add or update ``sources`` in the index at ``index_dir`` (created if missing) and commit a generation.

    Args:
        model: a polymodal model with ``encode_image``, ``config.embed_dim`` and ``model_id`` (as
            ``polymodal.load`` returns).
        index_dir: the index folder.
        sources: the images and their metadata.
        sync: True (``index build``): the index afterwards holds exactly ``sources``, items of other paths
            are removed. False (``index add``): other items stay.
        labels: default zero-shot labels to store (None keeps the stored ones or uses the items' labels).
        config: embedding settings.
        ann_config: vector index rules (None keeps the stored ones).
        model_dir: the model's folder, recorded so that search and serve can load it.
        progress: called with one line per committed batch of vectors.

    Raises:
        ConfigError: the model has no id, or (``add``) it is not the model that built the index.
        DataError: with ``config.strict``, the first unreadable file.
    """
    t0 = time.perf_counter()
    config = config or BuildConfig()
    say = progress or (lambda _msg: None)
    model_id = getattr(model, "model_id", None)
    if not model_id:
        raise ConfigError("the model has no model_id; load it from its folder with polymodal.load(DIR)")
    dim = int(model.config.embed_dim)
    report_bad: list[str] = []
    with IndexWriter(index_dir, model_id=model_id, dim=dim, model_dir=None if model_dir is None else
                     os.path.abspath(model_dir), ann_config=ann_config) as w:
        prev = w.previous
        if not sync and prev is not None and prev.model_id != model_id:
            raise ConfigError(
                f"{index_dir}: the index was built with model {prev.model_id}, this model is {model_id}; "
                "`index add` cannot mix models (use `index build` to re-embed everything with the new model)")
        if sync and prev is not None and prev.model_id != model_id:
            say(f"model changed ({prev.model_id} -> {model_id}): every item is embedded again")
        current = {it.path: it for it in w.visible()}
        plan = _plan(sources, current, model_id, config, report_bad)
        if config.workers is None:
            config = replace(config, workers=default_workers())
        to_embed = list({h: p for p, h in plan.needs_vector.items()}.items())  # (hash, path), one per hash
        cached = w.cached(h for h, _ in to_embed)
        missing = [(h, p) for h, p in to_embed if h not in cached]
        failed = _embed(model, w, missing, config, say, report_bad)
        rows = [row for row in plan.rows if row.hash not in failed]
        retire = set(plan.retire)
        if sync:
            kept = {row.path for row in plan.rows} | plan.unchanged_paths | plan.bad_paths
            retire |= {it.id for p, it in current.items() if p not in kept}
        retire |= {current[p].id for p in plan.bad_paths if p in current}
        w.touch(plan.touch)
        w.retire(sorted(retire))
        w.insert(rows)
        desc = w.commit(labels=labels)
    report = BuildReport(
        index=str(index_dir), generation=desc.generation, count=desc.count,
        added=sum(1 for r in rows if r.path not in current),
        updated=sum(1 for r in rows if r.path in current),
        removed=len(retire) - sum(1 for r in rows if r.path in current),
        unchanged=len(plan.unchanged_paths), embedded=len(missing) - len(failed),
        reused=len({r.hash for r in rows} & cached), bad=report_bad, ann=desc.ann.to_dict(),
        seconds=round(time.perf_counter() - t0, 2),
    )
    return report


def remove_items(
    index_dir: str | Path, *, ids: Sequence[int] = (), paths: Sequence[str | Path] = ()
) -> BuildReport:
    """Remove items by id, or by path (a folder removes every item under it), and commit a generation.

    Raises:
        DataError: an id or path that matches no item.
    """
    t0 = time.perf_counter()
    with IndexWriter(index_dir) as w:
        current = w.visible()
        by_id = {it.id: it for it in current}
        chosen: set[int] = set()
        for i in ids:
            if int(i) not in by_id:
                raise DataError(index_dir, f"no item with id {i}")
            chosen.add(int(i))
        for p in paths:
            chosen |= _ids_under(current, p, index_dir)
        w.retire(sorted(chosen))
        desc = w.commit()
    report = BuildReport(index=str(index_dir), generation=desc.generation, count=desc.count, removed=len(chosen),
                         unchanged=desc.count, ann=desc.ann.to_dict(), seconds=round(time.perf_counter() - t0, 2))
    return report


def compact_index(index_dir: str | Path) -> BuildReport:
    """Drop removed rows and unused vectors, rebuild the vector index (re-measuring its recall), commit."""
    t0 = time.perf_counter()
    with IndexWriter(index_dir) as w:
        w.compact()
        desc = w.commit(rebuild=True)
    return BuildReport(index=str(index_dir), generation=desc.generation, count=desc.count, unchanged=desc.count,
                       ann=desc.ann.to_dict(), seconds=round(time.perf_counter() - t0, 2))


def repair_index(index_dir: str | Path) -> BuildReport:
    """Make an index whose files disagree consistent again, from what its database still holds.

    The vector index is rebuilt from the stored vectors of the items the database holds; items without a
    vector are removed. An unreadable database is moved aside and replaced by an empty one. Items the
    database lost cannot come back from the vector index (it holds no paths): the notes say how many, and
    they must be added again (``index build`` reuses any vectors still stored). A consistent index is left
    as it is (no new generation).

    Raises:
        DataError: nothing is left to rebuild from (no description and no stored items).
    """
    t0 = time.perf_counter()
    with IndexWriter(index_dir, repair=True) as w:
        prev = w.previous
        if w.problem is None and not w.notes and prev is not None:
            return BuildReport(index=str(index_dir), generation=prev.generation, count=prev.count,
                               unchanged=prev.count, ann=prev.ann.to_dict(), seconds=round(time.perf_counter() - t0, 2),
                               notes=[f"consistent at generation {prev.generation}: nothing to repair"])
        unembedded = w.unembedded()
        w.retire(unembedded)
        desc = w.commit(rebuild=True)
    notes = [*w.notes, *([f"found: {w.problem}"] if w.problem else [])]
    if unembedded:
        notes.append(f"removed {len(unembedded)} item(s) that had no stored vector")
    lost = (prev.count - desc.count - len(unembedded)) if prev is not None else 0
    if lost > 0:
        notes.append(f"{lost} item(s) of generation {prev.generation if prev else '?'} are not in the database any "
                     f"more: add their images again (`polymodal index build --out {index_dir} ...` or `index add`)")
    return BuildReport(index=str(index_dir), generation=desc.generation, count=desc.count, removed=len(unembedded),
                       unchanged=desc.count, ann=desc.ann.to_dict(), seconds=round(time.perf_counter() - t0, 2),
                       notes=notes)


# --- steps -----------------------------------------------------------------------------------------


@dataclass
class _Plan:
    rows: list[NewItem] = field(default_factory=list)  # items to insert in the new generation
    retire: list[int] = field(default_factory=list)  # old rows they replace
    needs_vector: dict[str, str] = field(default_factory=dict)  # path -> hash, for rows that need a vector
    unchanged_paths: set[str] = field(default_factory=set)
    touch: list[tuple[int, int, int]] = field(default_factory=list)  # (id, size, mtime_ns) of touched files
    bad_paths: set[str] = field(default_factory=set)


def _plan(sources: Sequence[Source], current: dict[str, Item], model_id: str, config: BuildConfig,
          bad: list[str]) -> _Plan:
    """Decide, per source, whether it is unchanged, changed in metadata only, or needs a vector."""
    plan = _Plan()
    seen: set[str] = set()
    unique: list[tuple[Source, str]] = []
    for src in sources:
        path = os.path.abspath(src.path)
        if path not in seen:
            seen.add(path)
            unique.append((src, path))

    def look(entry: tuple[Source, str]) -> tuple[os.stat_result, str] | OSError:
        """(stat, content hash) of one file; the stored hash when its size and mtime are the stored ones."""
        path = entry[1]
        try:
            st = os.stat(path)
            old = current.get(path)
            same_stat = old is not None and old.size == st.st_size and old.mtime_ns == st.st_mtime_ns
            return st, old.hash if same_stat and old is not None else _hash_file(path)
        except OSError as e:
            return e

    workers = default_workers() if config.workers is None else config.workers
    for (src, path), found in zip(unique, ordered_map(look, unique, workers=workers, ahead=4 * max(1, workers))):
        if isinstance(found, OSError):
            _bad(bad, path, f"cannot read file ({found.strerror or found})", config)
            plan.bad_paths.add(path)
            continue
        st, digest = found
        old = current.get(path)
        same_stat = old is not None and old.size == st.st_size and old.mtime_ns == st.st_mtime_ns
        labels = list(dict.fromkeys(str(x) for x in src.labels))
        if old is not None and old.hash == digest and old.model_id == model_id:
            if old.caption == src.caption and old.labels == labels:
                plan.unchanged_paths.add(path)
                if not same_stat:  # touched but identical: remember the new stat so it is not hashed again
                    plan.touch.append((old.id, st.st_size, st.st_mtime_ns))
                continue
        plan.rows.append(NewItem(path=path, hash=digest, caption=src.caption, labels=labels, size=st.st_size,
                                 mtime_ns=st.st_mtime_ns))
        plan.needs_vector[path] = digest
        if old is not None:
            plan.retire.append(old.id)
    return plan


@dataclass
class _Prepared:
    """One file made ready for the tower by a worker: input tensor and thumbnail, or its problem."""

    hash: str
    path: str
    pixels: torch.Tensor | Image.Image | None = None
    thumb: tuple[bytes, str] | None = None
    problem: str | None = None


def _preparer(model: Any, config: BuildConfig) -> Callable[[tuple[str, str]], _Prepared]:
    """The per-file work of a build, run by the workers: read, check the hash, decode, preprocess, thumbnail."""
    preprocess = getattr(model, "preprocess", None)
    # Decoded as `polymodal embed` decodes (a JPEG reduced to what the model needs), so an index's vectors
    # are embed's vectors of the same files. The reduced image also serves the thumbnail when it is at least
    # the thumbnail's size on its longer side, which it always is when the model needs more (192 px
    # thumbnails, 256 px for the aligner's crop); a larger thumb_size decodes the file again for it.
    min_size = decode_size(model)
    thumb_min = (1, config.thumb_size)
    thumb_more = min_size is not None and config.thumb_size > max(min_size)  # reduced images may be too small

    def prepare(todo: tuple[str, str]) -> _Prepared:
        digest, path = todo
        try:
            data = Path(path).read_bytes()
            if _digest(data) != digest:
                raise DataError(path, "file changed while the index was being built; run the build again")
            im = load_image(data, max_pixels=config.max_pixels, name=path, min_size=min_size)
            thumb_src = im
            if thumb_more and max(im.size) < config.thumb_size:
                thumb_src = load_image(data, max_pixels=config.max_pixels, name=path, min_size=thumb_min)
        except OSError as e:
            return _Prepared(digest, path, problem=f"cannot read file ({e.strerror or e})")
        except DataError as e:
            return _Prepared(digest, path, problem=e.problem)
        pixels = preprocess([im])[0] if preprocess is not None else im  # (3, H, W), or the image itself
        return _Prepared(digest, path, pixels, make_thumbnail(thumb_src, config.thumb_size))

    return prepare


def _embed(model: Any, w: IndexWriter, todo: list[tuple[str, str]], config: BuildConfig, say: Progress,
           bad: list[str]) -> set[str]:
    """Embed the (hash, path) pairs in batches, committing each batch; returns the hashes that failed.

    Files are prepared by ``config.workers`` workers, up to two batches ahead of the tower.
    """
    failed: set[str] = set()
    model.eval()
    done = 0
    batch: list[_Prepared] = []

    def flush() -> None:
        nonlocal done
        vecs = encode_prepared(model, [p.pixels for p in batch])  # type: ignore[misc]  # (B, D)
        w.put_vectors([p.hash for p in batch], vecs, [p.thumb for p in batch])
        done += len(batch)
        batch.clear()
        say(f"embedded {done}/{len(todo)} images")

    prepared = ordered_map(_preparer(model, config), todo, workers=config.workers or 0,
                           ahead=2 * config.batch_size, processes=config.worker_processes)
    for p in prepared:
        if p.problem is not None:
            _bad(bad, p.path, p.problem, config)
            failed.add(p.hash)
            continue
        batch.append(p)
        if len(batch) == config.batch_size:
            flush()
    if batch:
        flush()
    return failed


def make_thumbnail(image: Image.Image, size: int) -> tuple[bytes, str]:
    """A JPEG of ``image`` with its longest side at most ``size``: (bytes, mime type)."""
    thumb = image.copy()
    # reducing_gap=1: box-average down by an integer factor first, then resample the last step. Bilinear
    # (Pillow widens its triangle filter by the scale, so it still averages every pixel it shrinks from)
    # takes 0.5 ms of a core for a 320x240 source where Lanczos takes 1.3 ms, a fifth of the per-file
    # work beside the tower; at 192 px the two are hard to tell apart.
    thumb.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=1.0)
    buf = io.BytesIO()
    thumb.convert("RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue(), "image/jpeg"


def _ids_under(items: list[Item], path: str | Path, index_dir: str | Path) -> set[int]:
    target = os.path.abspath(path)
    out = {it.id for it in items if it.path == target or it.path.startswith(target.rstrip(os.sep) + os.sep)}
    if not out:
        raise DataError(path, f"no item of {index_dir} has this path or lies under it")
    return out


def _hash_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _bad(bad: list[str], path: str, problem: str, config: BuildConfig) -> None:
    if config.strict:
        raise DataError(path, problem)
    bad.append(f"{path}: {problem}")
