"""The search index on disk: item metadata and vectors in SQLite, the vector index in faiss, in generations.

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

Vectors live in the ``vectors`` table keyed by (model id, content hash) and are committed in batches as
they are computed, independently of generations: they are a cache, so a rerun after a crash, or a file
that comes back, is not embedded again. Thumbnails are stored at build time, so the server reads no
user path, only this database.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from polymodal.errors import ConfigError, DataError, ShapeError
from polymodal.search import ann
from polymodal.search.ann import AnnConfig, AnnInfo
from polymodal.train.checkpoint import atomic_write_bytes, atomic_write_json

FORMAT_VERSION = 1
DB_NAME = "items.sqlite"
POINTER = "CURRENT"
LOCK_NAME = ".lock"
EXACT_FILTER_MAX = 20_000  # a filter matching fewer items than this is answered exactly, over their vectors
COMPACT_TOMBSTONES = 0.2  # HNSW is rebuilt once this fraction of its nodes are removed items
REBUILD_GROWTH = 2.0  # an approximate index is rebuilt (and its recall re-measured) once its size changes 2x

_SCHEMA = """
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

_VISIBLE = "i.added_gen <= :gen AND (i.removed_gen IS NULL OR i.removed_gen > :gen)"


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
        return asdict(self)


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


def _connect(path: Path) -> sqlite3.Connection:
    con = sqlite3.connect(str(path), timeout=60.0, check_same_thread=False, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")  # readers go on while a writer commits batches
    con.execute("PRAGMA synchronous=FULL")  # a commit is on disk before CURRENT can point at it
    return con


@contextmanager
def _tx(con: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: committed on success, rolled back on any exception (a kill rolls back too)."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _gen_name(gen: int) -> str:
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


def _read_generation(root: Path, gen: int) -> GenerationInfo:
    p = root / f"{_gen_name(gen)}.json"
    try:
        return GenerationInfo.from_dict(json.loads(p.read_text()))
    except FileNotFoundError:
        raise DataError(p, "missing: the index is damaged (CURRENT names a generation that is not there)") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(p, f"not a valid generation description ({e})") from None


def _read_ann(path: Path) -> faiss.Index:
    if not path.is_file():
        raise DataError(path, "missing: the index is damaged (CURRENT names a generation that is not there)")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as e:
        raise DataError(path, f"cannot read the vector index ({str(e).splitlines()[0][:120]})") from None


def _row_to_item(row: Sequence[Any]) -> Item:
    return Item(id=row[0], path=row[1], caption=row[2], labels=json.loads(row[3]), hash=row[4],
                model_id=row[5], size=row[6], mtime_ns=row[7])


_ITEM_COLS = "i.id, i.path, i.caption, i.labels, i.hash, i.model_id, i.size, i.mtime_ns"


def _vectors_of(con: sqlite3.Connection, where: str, params: dict[str, Any], dim: int) -> tuple[np.ndarray, np.ndarray]:
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
            self._visible_ids = self._ids_where(_VISIBLE, {})

    @classmethod
    def open(cls, path: str | Path) -> SearchIndex:
        """Open the index folder ``path`` at its committed generation.

        Raises:
            DataError: no index there, no committed build yet, or damaged files (the message names them).
        """
        root = Path(path)
        if not (root / DB_NAME).is_file():
            raise DataError(root, "not a search index (no items.sqlite); build one with `polymodal index build`")
        for attempt in range(3):
            gen = read_pointer(root)
            if gen == 0:
                raise DataError(root, "the index has no completed build yet (a build was interrupted; run it again)")
            try:
                info = _read_generation(root, gen)
                index = _read_ann(root / f"{_gen_name(gen)}.faiss")
                break
            except DataError:
                # Two commits in quick succession can delete this generation between reading CURRENT and
                # opening its files; the pointer then names a newer one.
                if attempt == 2 or read_pointer(root) == gen:
                    raise
        ann.apply_params(index, info.ann)
        return cls(root, info, _connect(root / DB_NAME), index)

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
        """The visible item with this id, or None."""
        with self._lock:
            row = self._con.execute(
                f"SELECT {_ITEM_COLS} FROM items i WHERE i.id = :id AND {_VISIBLE}",
                {"id": int(item_id), "gen": self.generation},
            ).fetchone()
        return _row_to_item(row) if row else None

    def items(self) -> list[Item]:
        """All visible items, by id."""
        with self._lock:
            rows = self._con.execute(
                f"SELECT {_ITEM_COLS} FROM items i WHERE {_VISIBLE} ORDER BY i.id", {"gen": self.generation}
            ).fetchall()
        return [_row_to_item(r) for r in rows]

    def thumbnail(self, item_id: int) -> tuple[bytes, str] | None:
        """(image bytes, mime type) of the thumbnail of a visible item, or None."""
        with self._lock:
            row = self._con.execute(
                f"SELECT t.data, t.mime FROM items i JOIN thumbs t ON t.hash = i.hash WHERE i.id = :id AND {_VISIBLE}",
                {"id": int(item_id), "gen": self.generation},
            ).fetchone()
        return (bytes(row[0]), row[1]) if row else None

    def labels(self) -> list[str]:
        """The distinct labels of visible items, sorted."""
        with self._lock:
            rows = self._con.execute(
                f"SELECT DISTINCT l.label FROM item_labels l JOIN items i ON i.id = l.item_id WHERE {_VISIBLE} "
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
            scores, ids = ann.ann_search(self._index, self.info.ann, q, k, allowed=self._visible_ids)
        return self._hits(scores, ids)

    def _search_filtered(self, q: np.ndarray, k: int, where: ItemFilter) -> tuple[np.ndarray, np.ndarray]:
        sql, params = _filter_sql(where)
        allowed = self._ids_where(sql, params)
        if len(allowed) == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if len(allowed) <= EXACT_FILTER_MAX:
            with self._lock:
                ids, vecs = _vectors_of(self._con, f"{_VISIBLE} AND {sql}", {**params, "gen": self.generation}, self.dim)
            return ann.exact_search(vecs, ids, q, k)
        return ann.ann_search(self._index, self.info.ann, q, k, allowed=allowed)

    def _ids_where(self, sql: str, params: dict[str, Any]) -> np.ndarray:
        with self._lock:
            rows = self._con.execute(
                f"SELECT i.id FROM items i WHERE {_VISIBLE} AND {sql}", {**params, "gen": self.generation}
            ).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def _hits(self, scores: np.ndarray, ids: np.ndarray) -> list[list[Hit]]:
        wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
        meta: dict[int, Item] = {}
        with self._lock:
            for chunk in _chunks(wanted, 500):  # SQLite limits the number of bound parameters
                marks = ",".join("?" * len(chunk))
                for row in self._con.execute(f"SELECT {_ITEM_COLS} FROM items i WHERE i.id IN ({marks})", chunk):
                    meta[row[0]] = _row_to_item(row)
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


def _chunks(seq: Sequence[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(seq), n):
        yield list(seq[i : i + n])


# --- writing ---------------------------------------------------------------------------------------


@dataclass
class NewItem:
    """An item row to insert in the generation being written."""

    path: str
    hash: str
    caption: str | None = None
    labels: list[str] = field(default_factory=list)
    size: int | None = None
    mtime_ns: int | None = None


class IndexWriter:
    """Writes the next generation of an index folder (created if needed); use as a context manager.

    Entering takes the folder's lock, removes what an interrupted writer left, and starts generation
    ``current + 1``. Vectors and thumbnails (:meth:`put_vectors`) are committed at once, generation or not.
    Item changes (:meth:`insert`, :meth:`retire`) become visible only through :meth:`commit`; leaving the
    block without it (an exception) removes them again.

    Args:
        path: the index folder.
        model_id: the model of the vectors being added; None keeps the current generation's.
        dim: vector width; None keeps the current generation's.
        model_dir: recorded so that search can load the model without being told.
        ann_config: the vector index rules; None keeps the stored ones (or the defaults).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        model_id: str | None = None,
        dim: int | None = None,
        model_dir: str | None = None,
        ann_config: AnnConfig | None = None,
    ) -> None:
        self.root = Path(path)
        self._model_id = model_id
        self._dim = dim
        self._model_dir = model_dir
        self._ann_config = ann_config
        self._lock_fd: int | None = None
        self._con: sqlite3.Connection | None = None
        self.previous: GenerationInfo | None = None
        self.gen = 0

    # ------------------------------------------------------------- lifecycle
    def __enter__(self) -> IndexWriter:
        if self.root.exists() and not self.root.is_dir():
            raise DataError(self.root, "exists and is not a folder")
        if self.root.is_dir() and any(self.root.iterdir()) and not (self.root / DB_NAME).is_file():
            raise DataError(self.root, "folder is not empty and is not a search index; choose another --out")
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise ConfigError(f"{self.root}: another process is writing this index (lock {LOCK_NAME})") from None
        try:
            self._con = _connect(self.root / DB_NAME)
            self._con.executescript(_SCHEMA)
            self._con.execute("INSERT OR IGNORE INTO info VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
            current = read_pointer(self.root)
            self.previous = _read_generation(self.root, current) if current else None
            self._recover(current)
            self.gen = current + 1
            self._resolve_settings()
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is not None and self._con is not None:
                self._recover(self.gen - 1)  # undo item changes of the unfinished generation
        finally:
            self._release()

    def _release(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _recover(self, current: int) -> None:
        """Delete rows and files of generations above ``current``: left by a writer that did not commit."""
        with _tx(self._db) as con:
            con.execute("DELETE FROM item_labels WHERE item_id IN (SELECT id FROM items WHERE added_gen > ?)",
                        (current,))
            con.execute("DELETE FROM items WHERE added_gen > ?", (current,))
            con.execute("UPDATE items SET removed_gen = NULL WHERE removed_gen > ?", (current,))
        for f in self.root.glob("gen-*"):
            num = f.name[4:10]
            if num.isdigit() and int(num) > current:
                f.unlink(missing_ok=True)
        for f in self.root.glob(".*.tmp"):
            f.unlink(missing_ok=True)

    def _resolve_settings(self) -> None:
        prev = self.previous
        if self._model_id is None:
            if prev is None:
                raise ConfigError(f"{self.root}: a new index needs a model")
            self._model_id = prev.model_id
        if self._dim is None:
            self._dim = prev.dim if prev else None
        if self._dim is None or self._dim < 1:
            raise ConfigError(f"{self.root}: unknown vector width")
        if self._model_dir is None and prev is not None and prev.model_id == self._model_id:
            self._model_dir = prev.model_dir
        if self._ann_config is None:
            self._ann_config = AnnConfig.from_dict(prev.ann_config) if prev else AnnConfig()

    @property
    def _db(self) -> sqlite3.Connection:
        if self._con is None:
            raise RuntimeError("IndexWriter used outside its `with` block")
        return self._con

    @property
    def model_id(self) -> str:
        assert self._model_id is not None
        return self._model_id

    @property
    def dim(self) -> int:
        assert self._dim is not None
        return self._dim

    # ------------------------------------------------------------- reading the current state
    def visible(self) -> list[Item]:
        """Items of the committed generation."""
        rows = self._db.execute(
            f"SELECT {_ITEM_COLS} FROM items i WHERE {_VISIBLE} ORDER BY i.id", {"gen": self.gen - 1}
        ).fetchall()
        return [_row_to_item(r) for r in rows]

    def cached(self, hashes: Iterable[str]) -> set[str]:
        """The hashes that already have a vector for this writer's model."""
        hs = list(set(hashes))
        out: set[str] = set()
        for chunk in _chunks(hs, 500):
            marks = ",".join("?" * len(chunk))
            out.update(r[0] for r in self._db.execute(
                f"SELECT hash FROM vectors WHERE model_id = ? AND hash IN ({marks})", [self.model_id, *chunk]))
        return out

    # ------------------------------------------------------------- changes
    def put_vectors(self, hashes: Sequence[str], vectors: np.ndarray, thumbs: Sequence[tuple[bytes, str] | None]) -> None:
        """Store (and commit at once) the vectors (N, D) and thumbnails of content hashes."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(hashes), self.dim):
            raise ShapeError(f"vectors: expected ({len(hashes)}, {self.dim}), got {vectors.shape}")
        with _tx(self._db) as con:
            con.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                            [(self.model_id, h, v.tobytes()) for h, v in zip(hashes, vectors)])
            con.executemany("INSERT OR IGNORE INTO thumbs VALUES (?, ?, ?)",
                            [(h, t[1], t[0]) for h, t in zip(hashes, thumbs) if t is not None])

    def insert(self, items: Sequence[NewItem]) -> None:
        """Add item rows to the new generation (their vectors must be stored already)."""
        missing = {it.hash for it in items} - self.cached(it.hash for it in items)
        if missing:
            raise RuntimeError(f"insert: no vector stored for {len(missing)} hash(es)")
        with _tx(self._db) as con:
            for it in items:
                cur = con.execute(
                    "INSERT INTO items (path, caption, labels, hash, model_id, size, mtime_ns, added_gen) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (it.path, it.caption, json.dumps(it.labels), it.hash, self.model_id, it.size, it.mtime_ns,
                     self.gen),
                )
                con.executemany("INSERT INTO item_labels VALUES (?, ?)", [(cur.lastrowid, lb) for lb in it.labels])

    def touch(self, updates: Sequence[tuple[int, int, int]]) -> None:
        """Store a new (size, mtime_ns) for items whose content is unchanged: (id, size, mtime_ns) triples.

        Changed in place, for every generation: the stat is only a hint that spares re-hashing a file.
        """
        with _tx(self._db) as con:
            con.executemany("UPDATE items SET size = ?, mtime_ns = ? WHERE id = ?",
                            [(int(s), int(m), int(i)) for i, s, m in updates])

    def retire(self, ids: Iterable[int]) -> None:
        """Remove visible items from the new generation (older generations still see them)."""
        with _tx(self._db) as con:
            con.executemany("UPDATE items SET removed_gen = ? WHERE id = ? AND removed_gen IS NULL",
                            [(self.gen, int(i)) for i in ids])

    # ------------------------------------------------------------- commit
    def commit(
        self, *, labels: list[str] | None = None, keep_labels: bool = True, rebuild: bool = False
    ) -> GenerationInfo:
        """Update the vector index, write the generation's files, and point ``CURRENT`` at it.

        Args:
            labels: default zero-shot labels to record; None keeps the previous ones (``keep_labels``)
                or falls back to the items' own labels.
            keep_labels: whether ``labels=None`` keeps the previous generation's labels.
            rebuild: rebuild the vector index from the stored vectors (drops HNSW tombstones, re-measures recall).

        Raises:
            ConfigError: the generation would mix vectors of two models.
        """
        con = self._db
        gen = self.gen
        params = {"gen": gen}
        count = con.execute(f"SELECT COUNT(*) FROM items i WHERE {_VISIBLE}", params).fetchone()[0]
        others = con.execute(f"SELECT COUNT(*) FROM items i WHERE {_VISIBLE} AND i.model_id != :m",
                             {**params, "m": self.model_id}).fetchone()[0]
        if others:
            raise ConfigError(
                f"{self.root}: {others} item(s) were embedded by model {self.previous.model_id if self.previous else '?'}"
                f", not {self.model_id}; one index holds one model's vectors (rebuild with `polymodal index build`)"
            )
        index, info, tombstones = self._updated_ann(count, rebuild=rebuild)
        name = _gen_name(gen)
        tmp = self.root / f".{name}.faiss.tmp"
        faiss.write_index(index, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.root / f"{name}.faiss")
        if labels is None and keep_labels and self.previous is not None:
            labels = self.previous.labels
        desc = GenerationInfo(
            generation=gen, model_id=self.model_id, model_dir=self._model_dir, dim=self.dim, count=count,
            tombstones=tombstones, ann=info, ann_config=self._ann_config.to_dict() if self._ann_config else {},
            labels=labels or None, created=time.time(),
        )
        atomic_write_json(self.root / f"{name}.json", desc.to_dict())
        atomic_write_bytes(self.root / POINTER, f"{gen}\n".encode())  # the commit point
        self._after_commit(gen)
        self.previous = desc
        self.gen = gen + 1
        return desc

    def _updated_ann(self, count: int, *, rebuild: bool) -> tuple[faiss.Index, AnnInfo, int]:
        """The new generation's vector index: the previous one changed in place where that is sound,
        else rebuilt from the stored vectors. Returns (index, info, tombstones)."""
        cfg = self._ann_config or AnnConfig()
        prev = self.previous
        kind = ann.choose_kind(count, cfg)
        gen = self.gen
        reuse = (
            not rebuild and prev is not None and prev.model_id == self.model_id and prev.dim == self.dim and prev.ann.kind == kind
            and (kind == "flat" or _within(count, prev.ann.recall_measured_on, REBUILD_GROWTH))
        )
        if reuse and prev is not None:
            index = faiss.read_index(str(self.root / f"{_gen_name(prev.generation)}.faiss"))
            ann.apply_params(index, prev.ann)
            removed = np.array([r[0] for r in self._db.execute(
                "SELECT id FROM items WHERE removed_gen = ?", (gen,))], dtype=np.int64)
            added_ids, added = _vectors_of(self._db, "i.added_gen = :gen", {"gen": gen}, self.dim)
            if not ann.ann_remove(index, kind, removed):
                tombstones = prev.tombstones + len(removed)
            else:
                tombstones = 0
            ann.ann_add(index, added, added_ids)
            if tombstones <= COMPACT_TOMBSTONES * max(1, index.ntotal):
                info = AnnInfo.from_dict({**prev.ann.to_dict(), "ntotal": int(index.ntotal)})
                return index, info, tombstones
        ids, vecs = _vectors_of(self._db, _VISIBLE, {"gen": gen}, self.dim)
        built = ann.build_ann(vecs, ids, cfg, kind=kind)
        return built.index, built.info, 0

    def _after_commit(self, gen: int) -> None:
        """Delete files of generations before the previous one (readers load them whole at open)."""
        for f in self.root.glob("gen-*"):
            num = f.name[4:10]
            if num.isdigit() and int(num) < gen - 1:
                f.unlink(missing_ok=True)

    def compact(self) -> int:
        """Delete rows retired before the committed generation, and vectors no item uses. Returns rows deleted."""
        committed = self.gen - 1
        with _tx(self._db) as con:
            con.execute("DELETE FROM item_labels WHERE item_id IN (SELECT id FROM items WHERE removed_gen <= ?)",
                        (committed,))
            n = con.execute("DELETE FROM items WHERE removed_gen <= ?", (committed,)).rowcount
            n += con.execute("DELETE FROM vectors WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.model_id = "
                             "vectors.model_id AND i.hash = vectors.hash)").rowcount
            n += con.execute("DELETE FROM thumbs WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.hash = thumbs.hash)"
                             ).rowcount
        self._db.execute("VACUUM")
        return n


def _within(n: int, reference: int, factor: float) -> bool:
    return reference > 0 and reference / factor <= n <= reference * factor
