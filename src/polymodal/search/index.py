"""The search index on disk, and reading it: metadata and vectors in SQLite, the vector index in faiss.

An index is a folder::

    INDEX/
      items.sqlite        items (path, caption, labels, content hash, model id), vectors, thumbnails
      gen-000007.faiss    the vector index of generation 7 (see polymodal.search.ann)
      gen-000007.json     what generation 7 is: model id, dimension, item count, index kind and recall
      CURRENT             "7": the generation readers open; replaced atomically, the commit point
      .lock               held (flock) by the one process writing

Every write (build, add, remove) makes a new generation. Item rows carry ``added_gen`` and ``removed_gen``
and generation ``G`` sees the rows with ``added_gen <= G`` and ``removed_gen`` unset or ``> G``, so a write
can insert and retire rows while readers keep seeing ``G``. The writer writes its faiss file and
description under the new number and only then replaces ``CURRENT`` (write to a temporary name, fsync,
``os.replace``). A crash before that leaves ``CURRENT`` on the old generation, whose rows and files are
untouched; the next writer first deletes what the crashed one left (rows and files above ``CURRENT``).
Writing is :mod:`polymodal.search.writer`; this module holds the format and :class:`SearchIndex`, the reader.

Vectors live in the ``vectors`` table keyed by (model id, content hash) and are committed in batches as
they are computed, independently of generations: they are a cache, so a rerun after a crash, or a file
that comes back, is not embedded again. Thumbnails are stored at build time, so the server reads no
user path, only this database.

Files can disagree after something outside polymodal touched them (a database emptied, replaced by an older
copy, or damaged; a vector index cut short). Readers and writers check on open that the database holds the
committed generation's items, each with its vector, and that the vector index holds as many vectors
(:func:`consistency_problem`); otherwise they refuse, naming the problem and ``polymodal index repair``,
rather than answer with another item's path or add to a half-lost index.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from polymodal.errors import ConfigError, DataError, ShapeError
from polymodal.search.ann import AnnInfo, ann_search, apply_params, exact_search

FORMAT_VERSION = 1
DB_NAME = "items.sqlite"
POINTER = "CURRENT"
LOCK_NAME = ".lock"
EXACT_FILTER_MAX = 20_000  # a filter matching fewer items than this is answered exactly, over their vectors

SCHEMA = """
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS vectors (
    model_id TEXT NOT NULL, hash TEXT NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (model_id, hash));
CREATE TABLE IF NOT EXISTS thumbs (hash TEXT PRIMARY KEY, mime TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL, caption TEXT, labels TEXT NOT NULL DEFAULT '[]',
    hash TEXT NOT NULL, model_id TEXT NOT NULL, size INTEGER, mtime_ns INTEGER,
    added_gen INTEGER NOT NULL, removed_gen INTEGER);
CREATE INDEX IF NOT EXISTS items_path ON items (path);
CREATE INDEX IF NOT EXISTS items_gen ON items (added_gen, removed_gen);
CREATE TABLE IF NOT EXISTS item_labels (item_id INTEGER NOT NULL, label TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS item_labels_label ON item_labels (label, item_id);
CREATE INDEX IF NOT EXISTS item_labels_item ON item_labels (item_id);
"""

VISIBLE_SQL = "i.added_gen <= :gen AND (i.removed_gen IS NULL OR i.removed_gen > :gen)"


# --- records ---------------------------------------------------------------------------------------


@dataclass
class ItemFilter:
    """Metadata filter of a search: items with this label and/or whose path starts with this prefix.

    Args:
        label: keep items that carry this label (exact match).
        path_prefix: keep items whose stored (absolute) path starts with this string.
    """

    label: str | None = None
    path_prefix: str | None = None

    def __post_init__(self) -> None:
        self.label = self.label or None
        self.path_prefix = self.path_prefix or None

    @property
    def active(self) -> bool:
        return self.label is not None or self.path_prefix is not None


@dataclass
class Item:
    """One indexed image and its metadata."""

    id: int
    path: str
    caption: str | None
    labels: list[str]
    hash: str
    model_id: str
    size: int | None = None
    mtime_ns: int | None = None


@dataclass
class Hit:
    """One search result: the item and its cosine similarity to the query."""

    id: int
    path: str
    score: float
    caption: str | None = None
    labels: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        # Written out, not dataclasses.asdict: a server answers 20 of these per query, and asdict's
        # recursive deep copy was 14 % of the event loop's time at 8 clients (py-spy).
        return {"id": self.id, "path": self.path, "score": self.score, "caption": self.caption,
                "labels": list(self.labels)}


@dataclass
class GenerationInfo:
    """What one generation of an index is (``gen-NNNNNN.json``).

    Attributes:
        generation: its number (1 is the first build).
        model_id: id of the model whose vectors it holds (``polymodal.models.io.model_id``).
        model_dir: the folder of that model when the index was written (used when no model is given).
        dim: vector width.
        count: visible items.
        tombstones: removed items still in an HNSW graph (excluded at search).
        ann: the vector index's kind, parameters and measured recall@10.
        ann_config: the choice rules it was built with.
        labels: the default zero-shot labels (given at build), or None to use the items' labels.
        created: unix time of the commit.
        format_version: index format.
    """

    generation: int
    model_id: str
    model_dir: str | None
    dim: int
    count: int
    tombstones: int
    ann: AnnInfo
    ann_config: dict[str, Any]
    labels: list[str] | None = None
    created: float = 0.0
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ann"] = self.ann.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenerationInfo:
        d = dict(d)
        d["ann"] = AnnInfo.from_dict(d["ann"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# --- helpers shared by reader and writer -----------------------------------------------------------


def connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(str(path), timeout=60.0, check_same_thread=False, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")  # readers go on while a writer commits batches
    con.execute("PRAGMA synchronous=FULL")  # a commit is on disk before CURRENT can point at it
    return con


def repair_advice(root: Path) -> str:
    return (f"run `polymodal index repair {root}`: it rebuilds the index from what the database still holds "
            "(images it lost must then be added again)")


def open_db(root: Path) -> sqlite3.Connection:
    """Connect to the index's database; a damaged file is a DataError naming it, not an sqlite3 traceback."""
    path = root / DB_NAME
    if path.is_file() and path.stat().st_size == 0:  # checked first: connecting would write a header into it
        raise DataError(path, f"empty file (0 bytes): the database was emptied; {repair_advice(root)}")
    con = None
    try:
        con = connect(path)
        con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # reads the header and schema pages
    except sqlite3.DatabaseError as e:
        if con is not None:
            con.close()
        raise DataError(path, f"not a readable SQLite database ({e}); {repair_advice(root)}") from None
    return con


def consistency_problem(con: sqlite3.Connection, info: GenerationInfo, vectors: faiss.Index | None = None) -> str | None:
    """What makes the database (and the vector index ``vectors``, if given) disagree with generation ``info``.

    Checks: the tables exist; the database was written at this generation or later (an older copy put back
    would show a past state); it holds ``info.count`` visible items, each with its stored vector; the vector
    index holds ``count + tombstones`` vectors of width ``dim``. Returns None when everything agrees.
    """
    name = f"{generation_name(info.generation)}.json"
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"info", "items", "vectors", "item_labels"} <= tables:
            return (f"{DB_NAME} holds no index tables, but {name} lists {info.count} items: the database was "
                    "emptied or replaced")
        row = con.execute("SELECT value FROM info WHERE key = 'generation'").fetchone()
        if row is not None and int(row[0]) < info.generation:  # indexes written before the key have none
            return (f"{DB_NAME} was last written at generation {row[0]}, before the committed generation "
                    f"{info.generation}: it is an older copy")
        params = {"gen": info.generation}
        count = con.execute(f"SELECT COUNT(*) FROM items i WHERE {VISIBLE_SQL}", params).fetchone()[0]
        if count != info.count:
            return (f"{DB_NAME} holds {count} items of generation {info.generation}, but {name} lists "
                    f"{info.count} items: the database was emptied or replaced")
        embedded = con.execute(
            f"SELECT COUNT(*) FROM items i JOIN vectors v ON v.model_id = i.model_id AND v.hash = i.hash "
            f"WHERE {VISIBLE_SQL}", params).fetchone()[0]
        if embedded != count:
            return f"{count - embedded} of the {count} items of generation {info.generation} have no stored vector"
    except (sqlite3.DatabaseError, ValueError) as e:
        return f"{DB_NAME} cannot be read ({e})"
    if vectors is not None and (vectors.ntotal != info.count + info.tombstones or vectors.d != info.dim):
        return (f"{generation_name(info.generation)}.faiss holds {vectors.ntotal} vectors of width {vectors.d}, "
                f"but {name} lists {info.count + info.tombstones} of width {info.dim}")
    return None


def writer_active(root: Path) -> bool:
    """Whether a writer holds the index's lock now (its half-written state can look inconsistent)."""
    import fcntl
    import os

    try:
        fd = os.open(root / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the shared lock, if taken
    return False


@contextmanager
def transaction(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: committed on success, rolled back on any exception (a kill rolls back too)."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def generation_name(gen: int) -> str:
    return f"gen-{gen:06d}"


def read_pointer(root: Path) -> int:
    """The committed generation of ``root``; 0 if nothing was ever committed."""
    p = root / POINTER
    if not p.is_file():
        return 0
    text = p.read_text().strip()
    if not text.isdigit():
        raise DataError(p, f"not a generation number: {text[:40]!r}")
    return int(text)


def read_generation(root: Path, gen: int) -> GenerationInfo:
    p = root / f"{generation_name(gen)}.json"
    try:
        return GenerationInfo.from_dict(json.loads(p.read_text()))
    except FileNotFoundError:
        raise DataError(p, "missing: the index is damaged (CURRENT names a generation that is not there); "
                           + repair_advice(root)) from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise DataError(p, f"not a valid generation description ({e}); {repair_advice(root)}") from None


def read_ann(path: Path) -> faiss.Index:
    """The faiss index in ``path`` (``INDEX/gen-N.faiss``); a missing or damaged file is a DataError."""
    if not path.is_file():
        raise DataError(path, "missing: the index is damaged (CURRENT names a generation that is not there); "
                              + repair_advice(path.parent))
    try:
        return faiss.read_index(str(path))
    except RuntimeError as e:
        raise DataError(path, f"cannot read the vector index ({str(e).splitlines()[0][:120]}); "
                              + repair_advice(path.parent)) from None


def row_to_item(row: Sequence[Any]) -> Item:
    return Item(id=row[0], path=row[1], caption=row[2], labels=json.loads(row[3]), hash=row[4],
                model_id=row[5], size=row[6], mtime_ns=row[7])


ITEM_COLUMNS = "i.id, i.path, i.caption, i.labels, i.hash, i.model_id, i.size, i.mtime_ns"


def vectors_where(con: sqlite3.Connection, where: str, params: dict[str, Any], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids (N,), vectors (N, D)) of the items matching ``where``, joined to their vectors."""
    rows = con.execute(
        f"SELECT i.id, v.vector FROM items i JOIN vectors v ON v.model_id = i.model_id AND v.hash = i.hash "
        f"WHERE {where} ORDER BY i.id", params,
    ).fetchall()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)  # (N, D)
    return ids, vecs


# --- reading ---------------------------------------------------------------------------------------


class SearchIndex:
    """A read-only view of the committed generation of an index folder.

    Open with :meth:`open`. Safe to share between threads (the server does): SQLite access is serialised
    by a lock, faiss searches are read-only.
    """

    def __init__(self, root: Path, gen: GenerationInfo, con: sqlite3.Connection, index: faiss.Index) -> None:
        self.root = root
        self.info = gen
        self._con = con
        self._index = index
        self._lock = threading.Lock()
        self._visible_ids: np.ndarray | None = None
        if gen.tombstones:
            self._visible_ids = self._ids_where(VISIBLE_SQL, {})

    @classmethod
    def open(cls, path: str | Path) -> SearchIndex:
        """Open the index folder ``path`` at its committed generation.

        Raises:
            DataError: no index there, no committed build yet, or damaged files (the message names them).
        """
        root = Path(path)
        if not (root / DB_NAME).is_file():
            if (root / POINTER).is_file():
                raise DataError(root, f"{DB_NAME} is missing; {repair_advice(root)}")
            raise DataError(root, "not a search index (no items.sqlite); build one with `polymodal index build`")
        for attempt in range(3):
            gen = read_pointer(root)
            if gen == 0:
                raise DataError(root, "the index has no completed build yet (a build was interrupted; run it again)")
            try:
                info = read_generation(root, gen)
                index = read_ann(root / f"{generation_name(gen)}.faiss")
                con = open_db(root)
                problem = consistency_problem(con, info, index)
                if problem is not None:
                    con.close()
                    raise DataError(root, f"{problem}; " + ("a writer is changing the index now: try again when "
                                                            "it is done" if writer_active(root) else repair_advice(root)))
                break
            except DataError:
                # Two commits in quick succession can delete this generation between reading CURRENT and
                # opening its files; the pointer then names a newer one.
                if attempt == 2 or read_pointer(root) == gen:
                    raise
        apply_params(index, info.ann)
        return cls(root, info, con, index)

    # ------------------------------------------------------------- properties
    @property
    def generation(self) -> int:
        return self.info.generation

    @property
    def model_id(self) -> str:
        return self.info.model_id

    @property
    def dim(self) -> int:
        return self.info.dim

    def __len__(self) -> int:
        return self.info.count

    def is_stale(self) -> bool:
        """True once another process has committed a newer generation."""
        try:
            return read_pointer(self.root) != self.generation
        except (OSError, DataError):
            return False

    def check_model(self, model_id: str | None, *, model_name: str = "the query model") -> None:
        """Refuse a model other than the one that built the index, naming both.

        Raises:
            ConfigError: ``model_id`` differs from the index's (or is unknown).
        """
        if model_id != self.model_id:
            built = f"{self.model_id}" + (f" ({self.info.model_dir})" if self.info.model_dir else "")
            raise ConfigError(
                f"{self.root}: this index was built with model {built}, but {model_name} has model id "
                f"{model_id}; query with the model that built it, or rebuild the index with "
                f"`polymodal index build --model DIR ...`"
            )

    # ------------------------------------------------------------- metadata
    def get(self, item_id: int) -> Item | None:
        """The visible item with this id, or None (also for an id outside SQLite's 64-bit range)."""
        if not _is_int64(item_id):
            return None
        with self._lock:
            row = self._con.execute(
                f"SELECT {ITEM_COLUMNS} FROM items i WHERE i.id = :id AND {VISIBLE_SQL}",
                {"id": int(item_id), "gen": self.generation},
            ).fetchone()
        return row_to_item(row) if row else None

    def items(self) -> list[Item]:
        """All visible items, by id."""
        with self._lock:
            rows = self._con.execute(
                f"SELECT {ITEM_COLUMNS} FROM items i WHERE {VISIBLE_SQL} ORDER BY i.id", {"gen": self.generation}
            ).fetchall()
        return [row_to_item(r) for r in rows]

    def thumbnail(self, item_id: int) -> tuple[bytes, str] | None:
        """(image bytes, mime type) of the thumbnail of a visible item, or None."""
        if not _is_int64(item_id):
            return None
        with self._lock:
            row = self._con.execute(
                f"SELECT t.data, t.mime FROM items i JOIN thumbs t ON t.hash = i.hash WHERE i.id = :id AND {VISIBLE_SQL}",
                {"id": int(item_id), "gen": self.generation},
            ).fetchone()
        return (bytes(row[0]), row[1]) if row else None

    def labels(self) -> list[str]:
        """The distinct labels of visible items, sorted."""
        with self._lock:
            rows = self._con.execute(
                f"SELECT DISTINCT l.label FROM item_labels l JOIN items i ON i.id = l.item_id WHERE {VISIBLE_SQL} "
                "ORDER BY l.label", {"gen": self.generation},
            ).fetchall()
        return [r[0] for r in rows]

    def default_labels(self) -> list[str]:
        """Zero-shot labels to use when a request gives none: those given at build, else the items' labels."""
        return list(self.info.labels) if self.info.labels else self.labels()

    # ------------------------------------------------------------- search
    def search(self, queries: np.ndarray, *, k: int = 10, where: ItemFilter | None = None) -> list[list[Hit]]:
        """Top-``k`` visible items per query vector, best first.

        Args:
            queries: (Q, D) or (D,) float32 query embeddings from the index's model (L2-normalised).
            k: results per query.
            where: metadata filter; small matching sets are searched exactly, large ones through the ANN
                index with an id selector.

        Raises:
            ShapeError: the query width is not the index's.
        """
        q = np.ascontiguousarray(np.atleast_2d(np.asarray(queries, dtype=np.float32)))  # (Q, D)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ShapeError(f"queries: expected shape (Q, {self.dim}), got {tuple(np.shape(queries))}")
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        if self.info.count == 0:
            return [[] for _ in range(len(q))]
        if where is not None and where.active:
            scores, ids = self._search_filtered(q, k, where)
        else:
            scores, ids = ann_search(self._index, self.info.ann, q, k, allowed=self._visible_ids)
        return self._hits(scores, ids)

    def _search_filtered(self, q: np.ndarray, k: int, where: ItemFilter) -> tuple[np.ndarray, np.ndarray]:
        sql, params = _filter_sql(where)
        allowed = self._ids_where(sql, params)
        if len(allowed) == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if len(allowed) <= EXACT_FILTER_MAX:
            with self._lock:
                ids, vecs = vectors_where(self._con, f"{VISIBLE_SQL} AND {sql}", {**params, "gen": self.generation}, self.dim)
            return exact_search(vecs, ids, q, k)
        return ann_search(self._index, self.info.ann, q, k, allowed=allowed)

    def _ids_where(self, sql: str, params: dict[str, Any]) -> np.ndarray:
        with self._lock:
            rows = self._con.execute(
                f"SELECT i.id FROM items i WHERE {VISIBLE_SQL} AND {sql}", {**params, "gen": self.generation}
            ).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def _hits(self, scores: np.ndarray, ids: np.ndarray) -> list[list[Hit]]:
        wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
        meta: dict[int, Item] = {}
        with self._lock:
            for chunk in chunks(wanted, 500):  # SQLite limits the number of bound parameters
                marks = ",".join("?" * len(chunk))
                for row in self._con.execute(f"SELECT {ITEM_COLUMNS} FROM items i WHERE i.id IN ({marks})", chunk):
                    meta[row[0]] = row_to_item(row)
        out = []
        for srow, irow in zip(scores, ids):
            hits = []
            for s, i in zip(srow, irow):
                item = meta.get(int(i))
                if item is not None:
                    hits.append(Hit(id=item.id, path=item.path, score=float(s), caption=item.caption, labels=item.labels))
            out.append(hits)
        return out

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def __enter__(self) -> SearchIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_int64(value: int) -> bool:
    """Whether SQLite can bind ``value``: binding an int outside int64 raises OverflowError, not "no row"."""
    return -(2**63) <= int(value) < 2**63


def _filter_sql(where: ItemFilter) -> tuple[str, dict[str, Any]]:
    parts: list[str] = ["1"]
    params: dict[str, Any] = {}
    if where.label is not None:
        parts.append("EXISTS (SELECT 1 FROM item_labels l WHERE l.item_id = i.id AND l.label = :label)")
        params["label"] = where.label
    if where.path_prefix is not None:
        # substr compares characters exactly; LIKE would treat % and _ in paths as wildcards.
        parts.append("substr(i.path, 1, :plen) = :prefix")
        params["prefix"] = where.path_prefix
        params["plen"] = len(where.path_prefix)
    return " AND ".join(parts), params


def chunks(seq: Sequence[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(seq), n):
        yield list(seq[i : i + n])
