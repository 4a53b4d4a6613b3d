"""WebDataset-style tar shards: write them from any source, read them back as a stream.

Layout (the one the ``webdataset`` library reads, Aizman et al. 2019): each shard
``DIR/shard-000000.tar`` holds consecutive samples; a sample is the tar members that share a key,
``00000042.jpg`` (the original file bytes, never re-encoded), ``00000042.txt`` (UTF-8 text),
``00000042.wav``/``.flac``, ``00000042.mp4`` and ``00000042.json`` (``{"key", "label", "source",
"extra"}``: the record's own key and the fields that are not modalities). Tar keys are running numbers,
since WebDataset splits a member name at its first dot and record keys may hold dots. ``DIR/index.json``
lists the shards with their sample counts and SHA-256, the total, and the records that were skipped;
it is written last, so a folder with an index holds a complete set.

Reading streams each shard in one pass (no seeks, flat memory) and groups members into samples
the way ``webdataset`` does, and also notices what ``tarfile`` lets pass silently: a shard that is
truncated or has a damaged member header (see :func:`read_shard`). :class:`ShardStream` is an
``IterableDataset`` that splits the shards across ranks (``polymodal.core.distributed``) and DataLoader
workers, *by shard*: each shard is read by exactly one worker of one rank, so an epoch sees every sample
once. Samples are mixed by a seeded shuffle buffer.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import io
import json
import logging
import os
import random
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from polymodal.core import distributed
from polymodal.data.decode import FILE_MODALITIES, SUFFIXES, decode, decode_text, modality_of, read_bytes
from polymodal.data.record import MODALITIES, BadRecord, Record
from polymodal.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SHARD_NAME = "shard-{:06d}.tar"
INDEX_NAME = "index.json"
INDEX_FORMAT = "polymodal.shards/1"
KEY_DIGITS = 8  # tar keys 00000000, 00000001, ...: sort in write order up to 10^8 samples

# What a damaged tar stream can raise inside the tarfile module.
_TAR_ERRORS = (tarfile.TarError, OSError, EOFError, ValueError, UnicodeError, zlib.error)


# ---------------------------------------------------------------------------------------------------
# Finding shards
# ---------------------------------------------------------------------------------------------------


def shard_paths(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """The shard files a spec names, in order.

    Args:
        spec: a folder (the shards listed in its ``index.json``, else its ``*.tar`` sorted by name), one
            ``.tar`` file, a brace pattern (``dir/shard-{000000..000009}.tar``), a glob (``dir/*.tar``),
            or a list of shard paths.

    Raises:
        DataError: nothing matches, or a named shard does not exist (the error names it).
    """
    if not isinstance(spec, str | Path):
        paths = [Path(p) for p in spec]
    else:
        text = str(spec)
        if "{" in text and "}" in text:
            import braceexpand  # a dependency of webdataset

            paths = [Path(p) for p in braceexpand.braceexpand(text)]
        elif any(c in text for c in "*?["):
            paths = [Path(p) for p in sorted(glob.glob(text))]
            if not paths:
                raise DataError(text, "no shard matches this pattern")
        elif Path(text).is_dir():
            paths = _folder_shards(Path(text))
        else:
            paths = [Path(text)]
    for p in paths:
        if not p.is_file():
            raise DataError(p, "shard not found" if not p.exists() else "shard is not a file")
    if not paths:
        raise DataError(str(spec), "no shards")
    return paths


def _folder_shards(folder: Path) -> list[Path]:
    index = folder / INDEX_NAME
    if index.is_file():
        return [folder / s.name for s in read_index(index).shards]
    paths = sorted(p for p in folder.iterdir() if p.suffix == ".tar" and p.is_file())
    if not paths:
        raise DataError(folder, f"no .tar shards and no {INDEX_NAME} in this folder")
    return paths


# ---------------------------------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardInfo:
    """One shard: file name (relative to the index), samples, SHA-256 of the file and its size in bytes."""

    name: str
    count: int
    sha256: str
    bytes: int


@dataclass
class ShardIndex:
    """What ``index.json`` holds.

    Attributes:
        shards: the shards in order.
        records: total samples (the sum of the counts).
        modalities: how many samples carry each modality.
        bad: records of the source that were skipped while writing.
        source: the source the shards were written from.
    """

    shards: list[ShardInfo] = field(default_factory=list)
    records: int = 0
    modalities: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))
    bad: list[BadRecord] = field(default_factory=list)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": INDEX_FORMAT,
            "records": self.records,
            "shards": [dataclasses.asdict(s) for s in self.shards],
            "modalities": self.modalities,
            "bad": [b.to_dict() for b in self.bad],
            "source": self.source,
        }


def read_index(path: str | Path) -> ShardIndex:
    """Read a shard folder's ``index.json`` (the file, or the folder holding it).

    Raises:
        DataError: the file is missing, not JSON, or not a polymodal shard index.
    """
    path = Path(path)
    if path.is_dir():
        path = path / INDEX_NAME
    try:
        data = json.loads(read_bytes(path).decode("utf-8"))
        if data.get("format") != INDEX_FORMAT:
            raise DataError(path, f"not a polymodal shard index (format {data.get('format')!r})")
        return ShardIndex(
            shards=[ShardInfo(**s) for s in data["shards"]],
            records=int(data["records"]),
            modalities=dict(data.get("modalities", {})),
            bad=[BadRecord(**b) for b in data.get("bad", [])],
            source=str(data.get("source", "")),
        )
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as e:
        raise DataError(path, f"damaged shard index ({type(e).__name__}: {str(e)[:100]})") from None


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------


def write_shards(
    records: Iterable[Record], out: str | Path, *, shard_size: int = 1000, overwrite: bool = False
) -> ShardIndex:
    """Write records as tar shards ``out/shard-000000.tar``, ... and ``out/index.json``.

    File-backed modalities (a record holding paths, as sources opened with ``decode=False`` give) are
    copied byte for byte; decoded ones are encoded losslessly (images as PNG, audio as 32-bit float WAV).

    Args:
        records: the records, e.g. a :class:`~polymodal.data.sources.Source`; when it has a ``bad``
            list (a Source does), the skipped records are written to the index.
        out: the folder to write; created if missing.
        shard_size: samples per shard (the last shard may hold fewer).
        overwrite: replace the shards and index already in ``out``; otherwise they are an error.

    Returns:
        The :class:`ShardIndex` that was written.

    Raises:
        ConfigError: ``shard_size`` is not a positive int, or ``out`` already holds shards.
        DataError: a record's file cannot be read.
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size <= 0:
        raise ConfigError(f"shard_size must be a positive int, got {shard_size!r}")
    import webdataset as wds

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    old = sorted(out.glob("shard-*.tar")) + ([out / INDEX_NAME] if (out / INDEX_NAME).exists() else [])
    if old and not overwrite:
        raise ConfigError(f"{out} already holds shards ({old[0].name}, ...); pass overwrite=True (--overwrite)")
    for p in old:
        p.unlink()

    index = ShardIndex(source=str(getattr(records, "spec", "")))
    writer: Any = None
    tmp = out / ".writing.tar"
    count = 0

    def close_shard() -> None:
        nonlocal writer, count
        writer.close()
        name = SHARD_NAME.format(len(index.shards))
        os.replace(tmp, out / name)  # a shard appears under its name only when complete
        index.shards.append(ShardInfo(name, count, _sha256(out / name), (out / name).stat().st_size))
        writer, count = None, 0

    for record in records:
        sample = record_to_sample(record, f"{index.records:0{KEY_DIGITS}d}")
        if writer is None:
            # mtime fixed: the same records give byte-identical shards, so their hashes can be compared.
            writer = wds.TarWriter(str(tmp), encoder=False, mtime=0)
        writer.write(sample)
        count += 1
        index.records += 1
        for m, present in record.present().items():
            index.modalities[m] += int(present)
        if count == shard_size:
            close_shard()
    if writer is not None:
        close_shard()
    index.bad = list(getattr(records, "bad", []))
    (out / INDEX_NAME).write_text(json.dumps(index.to_dict(), indent=1, default=str) + "\n")
    return index


def record_to_sample(record: Record, key: str) -> dict[str, Any]:
    """The tar members of one record: ``{"__key__": key, "png": bytes, "txt": bytes, "json": bytes, ...}``.

    Args:
        record: the record; file modalities may be paths (copied as they are), raw bytes, or decoded
            values (a ``PIL.Image`` is stored as PNG, an ``Audio`` as float WAV).
        key: the tar key (no dots).

    Raises:
        DataError: a file cannot be read.
        ConfigError: a decoded value that cannot be stored (e.g. a decoded video).
    """
    sample: dict[str, Any] = {"__key__": key}
    for modality in FILE_MODALITIES:
        value = getattr(record, modality)
        if value is not None:
            ext, data = _encode(modality, value)
            sample[ext] = data
    if record.text is not None:
        sample["txt"] = record.text.encode("utf-8")
    meta = {"key": record.key, "label": record.label, "source": record.source, "extra": record.extra}
    sample["json"] = json.dumps(meta, default=str).encode("utf-8")
    return sample


def _encode(modality: str, value: Any) -> tuple[str, bytes]:
    """(member extension, bytes) of one file modality."""
    if isinstance(value, str | Path):
        path = Path(value)
        suffix = path.suffix.lower()
        # A known suffix of this modality names the member; otherwise "image.dat" keeps the modality.
        ext = suffix[1:] if suffix in SUFFIXES[modality] else f"{modality}.{suffix[1:] or 'bin'}"
        return ext, read_bytes(path)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"{modality}.bin", bytes(value)  # decoders identify the format from the content
    if modality == "image" and isinstance(value, Image.Image):
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return "png", buf.getvalue()
    if modality == "audio" and hasattr(value, "samples") and hasattr(value, "sample_rate"):
        import soundfile

        buf = io.BytesIO()
        samples = value.samples.T if value.samples.ndim == 2 else value.samples  # soundfile wants (T, C)
        soundfile.write(buf, samples, value.sample_rate, format="WAV", subtype="FLOAT")
        return "wav", buf.getvalue()
    raise ConfigError(
        f"cannot store a decoded {modality} ({type(value).__name__}) in a shard; open the source with "
        "decode=False so records carry file paths"
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------
# Reading one shard
# ---------------------------------------------------------------------------------------------------


def read_shard(path: str | Path, *, decode: bool = True, check: bool = True) -> Iterator[Record | BadRecord]:
    """The samples of one shard, in order, as records (or bad records naming the member and problem).

    A sample that cannot be decoded gives a :class:`BadRecord` naming ``shard.tar:member``; a shard that
    is damaged part way gives the good samples before the damage, then one :class:`BadRecord` naming
    the shard.

    Args:
        path: the ``.tar`` file.
        decode: decode members into images, audio, video and text; ``False`` keeps the raw bytes
            (text is always decoded).
        check: with ``decode=False``, still decode each member once, so bad ones are found.
    """
    shard = str(path)
    try:
        for sample in _tar_samples(shard):
            try:
                yield sample_to_record(sample, shard, decode=decode, check=check)
            except DataError as e:
                yield BadRecord(source=e.path or shard, problem=e.problem)
    except DataError as e:
        yield BadRecord(source=e.path or shard, problem=e.problem)


def _tar_samples(shard: str) -> Iterator[dict[str, Any]]:
    """Raw samples (``{"__key__": key, ext: bytes, ...}``) of one uncompressed tar shard, streamed.

    Members are grouped into samples as WebDataset groups them (``webdataset.tariterators``:
    consecutive members with the same key, the key being the name up to the first dot of its last
    path part). We iterate the tar ourselves rather than through ``webdataset.WebDataset`` for one
    reason: Python's ``tarfile`` ends iteration *silently* at a damaged or truncated member header once
    past the first member, which would drop the rest of a shard without a word. After the last member
    we therefore check that only the end-of-archive marker (at least two zero blocks) follows.
    Every failure is a :class:`DataError` naming the shard (or the member).
    """
    from webdataset.tariterators import base_plus_ext

    path = Path(shard)
    if not path.is_file():
        raise DataError(shard, "shard not found" if not path.exists() else "shard is not a file")
    try:
        with open(path, "rb") as f:
            tar = tarfile.open(fileobj=f, mode="r|")  # a stream: one pass, no seeks, flat memory
            sample: dict[str, Any] | None = None
            for info in tar:
                if not info.isreg():
                    continue
                key, ext = base_plus_ext(info.name)
                if key is None or (key.startswith("__") and key.endswith("__")):
                    continue  # no extension, or WebDataset metadata
                member = tar.extractfile(info)
                data = member.read() if member is not None else b""
                tar.members = []  # type: ignore[attr-defined]  # tarfile keeps every TarInfo; shards can be big
                if sample is None or key != sample["__key__"]:
                    if sample is not None:
                        yield sample
                    sample = {"__key__": key}
                ext = ext.lower()
                if ext in sample:
                    raise DataError(f"{shard}:{info.name}", f"a second {ext!r} member for the key {key!r}")
                sample[ext] = data
            if sample is not None:
                yield sample
            end = tar.offset  # where tarfile stopped: the end-of-archive marker, or a damaged header
            f.seek(end)
            rest = f.read()
    except _TAR_ERRORS as e:
        problem = (str(e).strip() or type(e).__name__)[:160]
        raise DataError(shard, f"damaged tar shard ({type(e).__name__}: {problem})") from None
    if rest.strip(b"\0"):
        raise DataError(shard, f"damaged tar shard: unreadable member header at byte {end}; the rest is lost")
    if len(rest) < 2 * tarfile.BLOCKSIZE:
        raise DataError(shard, "truncated tar shard: it ends without the end-of-archive marker")


def sample_to_record(sample: dict[str, Any], shard: str, *, decode: bool = True, check: bool = True) -> Record:
    """Turn one raw WebDataset sample into a :class:`Record`.

    Members are routed by extension (``png`` -> image, ``wav`` -> audio, ``image.dat`` -> image, ...);
    unknown extensions are ignored. ``Record.source`` is ``"<shard>:<tar key>"``.

    Args:
        sample: ``{"__key__": str, ext: bytes, ...}``.
        shard: the shard's path, for messages.
        decode: decode the members (else keep bytes).
        check: with ``decode=False``, decode once anyway to validate.

    Raises:
        DataError: a member cannot be decoded, the JSON is not an object, or the sample has no modality;
            ``error.path`` is ``"<shard>:<member>"``.
    """
    key = str(sample.get("__key__", ""))
    values: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    for ext, data in sample.items():
        if ext.startswith("__"):
            continue
        name = f"{shard}:{key}.{ext}"
        if ext == "json":
            meta = _meta(data, name)
            continue
        head = ext.split(".")[0]
        modality = modality_of(ext) or (head if head in FILE_MODALITIES else None)
        if modality is None:
            continue  # a member this reader does not know, e.g. a cached feature
        if modality in values:
            raise DataError(name, f"a second {modality} member in sample {key!r}")
        if modality == "text":
            values["text"] = decode_text(data, name=name)
        elif decode:
            values[modality] = _decode(modality, data, name)
        else:
            if check:
                _decode(modality, data, name)
            values[modality] = data
    if not values:
        raise DataError(f"{shard}:{key}", "sample has no image, text, audio or video member")
    extra = meta.get("extra", {})
    return Record(
        **values,
        label=meta.get("label"),
        key=str(meta.get("key", key)),
        source=f"{shard}:{key}",
        extra=extra if isinstance(extra, dict) else {"extra": extra},
    )


def _decode(modality: str, data: bytes, name: str) -> Any:
    return decode(modality, data, name=name)


def _meta(data: bytes, name: str) -> dict[str, Any]:
    try:
        meta = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(name, f"not valid JSON ({type(e).__name__})") from None
    if not isinstance(meta, dict):
        raise DataError(name, f"not a JSON object (got {type(meta).__name__})")
    return meta


# ---------------------------------------------------------------------------------------------------
# Streaming over workers and ranks
# ---------------------------------------------------------------------------------------------------


class ShardStream(IterableDataset):  # type: ignore[type-arg]
    """Records streamed from tar shards, split by shard over ranks and DataLoader workers, shuffled.

    Consumer ``c = rank * num_workers + worker`` of ``C = world_size * num_workers`` reads the shards
    ``i`` with ``i % C == c`` of the (per-epoch, seeded) shard order, so an epoch yields every good sample
    exactly once over all consumers. Give at least ``C`` shards, or some consumers get none; under
    ``torch.distributed``, ranks with unequal sample counts need the usual care (e.g. equal shard sizes).
    Bad samples are skipped, logged, and listed in ``bad`` (in the process that read them).

    Args:
        shards: anything :func:`shard_paths` takes.
        decode: decode members (``False``: records hold raw bytes; text is always decoded).
        shuffle_buffer: samples held in the shuffle buffer; 0 keeps shard order and sample order.
            With a buffer, the shard order is also permuted every epoch.
        seed: seed of both shuffles; the stream is a function of (seed, epoch, rank, worker).
        split_by_rank: give each ``polymodal.core.distributed`` rank its own shards.
        split_by_worker: give each DataLoader worker its own shards.
        strict: raise :class:`DataError` at the first bad sample instead of skipping it.
    """

    def __init__(
        self,
        shards: str | Path | Sequence[str | Path],
        *,
        decode: bool = True,
        shuffle_buffer: int = 0,
        seed: int = 0,
        split_by_rank: bool = True,
        split_by_worker: bool = True,
        strict: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(shuffle_buffer, bool) or not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
            raise ConfigError(f"shuffle_buffer must be an int >= 0, got {shuffle_buffer!r}")
        self.shards = shard_paths(shards)
        self.decode = decode
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.split_by_rank = split_by_rank
        self.split_by_worker = split_by_worker
        self.strict = strict
        self.epoch = 0
        self.bad: list[BadRecord] = []

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch, which reseeds both shuffles (call before each epoch's DataLoader iterator)."""
        self.epoch = int(epoch)

    def consumer(self) -> tuple[int, int]:
        """(this consumer's index, number of consumers) for the current rank and DataLoader worker."""
        rank, world = (distributed.rank(), distributed.world_size()) if self.split_by_rank else (0, 1)
        info = get_worker_info() if self.split_by_worker else None
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return rank * workers + worker, world * workers

    def my_shards(self) -> list[Path]:
        """The shards this consumer reads this epoch, in reading order."""
        order = list(self.shards)
        if self.shuffle_buffer > 0:
            # The same permutation on every consumer (it depends on seed and epoch only), so the split
            # below is still a partition.
            random.Random(f"shards-{self.seed}-{self.epoch}").shuffle(order)
        c, n = self.consumer()
        return order[c::n]

    def __iter__(self) -> Iterator[Record]:
        self.bad = []
        c, _ = self.consumer()
        records = self._records(self.my_shards())
        if self.shuffle_buffer > 0:
            rng = random.Random(f"samples-{self.seed}-{self.epoch}-{c}")
            records = shuffled(records, self.shuffle_buffer, rng)
        yield from records

    def _records(self, shards: list[Path]) -> Iterator[Record]:
        for shard in shards:
            for item in read_shard(shard, decode=self.decode, check=False):
                if isinstance(item, Record):
                    yield item
                elif self.strict:
                    raise DataError(item.source, item.problem)
                else:
                    log.warning("skipped %s", item)
                    self.bad.append(item)


def shuffled(items: Iterable[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """Shuffle a stream through a buffer of ``size`` items (WebDataset's ``shuffle``; each item once).

    Once the buffer is full, each new item replaces a uniformly chosen buffered one, which is yielded;
    at the end the rest of the buffer is yielded in random order.
    """
    buf: list[Any] = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = rng.randrange(size)
        yield buf[j]
        buf[j] = item
    rng.shuffle(buf)
    yield from buf


def collate_records(batch: list[Record]) -> list[Record]:
    """A DataLoader ``collate_fn`` that keeps records as a list (for tensors, see ``data.collate``)."""
    return batch

