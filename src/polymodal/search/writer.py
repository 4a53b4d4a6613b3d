"""Writing the next generation of a search index: recover, stage item changes, update faiss, swap CURRENT.

The on-disk layout and the generation rules are described in :mod:`polymodal.search.index`. A writer
holds the folder's lock (``flock``, released by the kernel if the process dies), so there is one writer at a
time; readers never take it.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from polymodal.core.checkpoint import atomic_write_bytes, atomic_write_json
from polymodal.errors import ConfigError, DataError, ShapeError
from polymodal.search.ann import AnnConfig, AnnInfo, ann_add, ann_remove, apply_params, build_ann, choose_kind
from polymodal.search.index import (
    DB_NAME,
    FORMAT_VERSION,
    ITEM_COLUMNS,
    LOCK_NAME,
    POINTER,
    SCHEMA,
    VISIBLE_SQL,
    GenerationInfo,
    Item,
    chunks,
    connect,
    consistency_problem,
    generation_name,
    open_db,
    read_ann,
    read_generation,
    read_pointer,
    repair_advice,
    row_to_item,
    transaction,
    vectors_where,
)

COMPACT_TOMBSTONES = 0.2  # HNSW is rebuilt once this fraction of its nodes are removed items
REBUILD_GROWTH = 2.0  # an approximate index is rebuilt (and its recall re-measured) once its size changes 2x


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
        repair: open an index whose files disagree (see :func:`~polymodal.search.index.consistency_problem`)
            instead of refusing it: an unreadable database is moved aside, a missing description is replaced
            by the newest one left, and :attr:`problem` says what was wrong. Only ``index repair`` sets it.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        model_id: str | None = None,
        dim: int | None = None,
        model_dir: str | None = None,
        ann_config: AnnConfig | None = None,
        repair: bool = False,
    ) -> None:
        self.root = Path(path)
        self._repair = repair
        self.problem: str | None = None  # with repair: what disagreed (None: the index was consistent)
        self.notes: list[str] = []  # with repair: what was done to files along the way
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
        if self.root.is_dir() and any(self.root.iterdir()) and not (self.root / DB_NAME).is_file() \
                and not (self.root / POINTER).is_file():  # an index that lost its database: see _open_db
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
            current = self._committed()
            self._con = self._open_db()
            self.previous = self._previous(current)
            if current:
                self._check(current)
            self._con.executescript(SCHEMA)
            self._con.execute("INSERT OR IGNORE INTO info VALUES ('format_version', ?)", (str(FORMAT_VERSION),))
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

    # ------------------------------------------------------------- opening (and repairing)
    def _committed(self) -> int:
        """The committed generation; with repair, an unreadable CURRENT gives the newest described one."""
        try:
            return read_pointer(self.root)
        except DataError as e:
            if not self._repair:
                raise
            gens = _described_generations(self.root)
            self.notes.append(f"{e}; taking generation {gens[-1] if gens else 0} as the committed one")
            return gens[-1] if gens else 0

    def _open_db(self) -> sqlite3.Connection:
        """The database; with repair, an unreadable one is moved aside (kept, renamed) and a new one started."""
        exists = (self.root / DB_NAME).is_file()
        if not exists and (self.root / POINTER).is_file() and not self._repair:
            raise DataError(self.root, f"{DB_NAME} is missing; {repair_advice(self.root)}")
        try:
            return open_db(self.root) if exists else connect(self.root / DB_NAME)
        except DataError as e:
            if not self._repair:
                raise
            aside = f"{DB_NAME}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
            for suffix in ("", "-wal", "-shm"):
                src = self.root / (DB_NAME + suffix)
                if src.exists():
                    os.replace(src, self.root / (aside + suffix))
            self.notes.append(f"{e.problem.split(';')[0]}: moved it to {aside} and started an empty database")
            return connect(self.root / DB_NAME)

    def _previous(self, current: int) -> GenerationInfo | None:
        """The committed generation's description; with repair, the newest readable one if it is lost."""
        if not current:
            return None
        try:
            return read_generation(self.root, current)
        except DataError as e:
            if not self._repair:
                raise
            self.problem = str(e).split("; run")[0]
            for gen in reversed(_described_generations(self.root)):
                try:
                    return read_generation(self.root, gen)
                except DataError:
                    continue
            return None

    def _check(self, current: int) -> None:
        """Refuse to write on top of files that disagree; with repair, record what disagrees instead."""
        prev = self.previous
        if not self._repair:
            assert prev is not None
            problem = consistency_problem(self._db, prev)
            if problem is not None:
                raise DataError(self.root, f"{problem}; nothing was written; {repair_advice(self.root)}")
            return
        if prev is None or self.problem is not None:
            self.problem = self.problem or f"generation {current} has no readable description"
            return
        try:
            vectors = read_ann(self.root / f"{generation_name(prev.generation)}.faiss")
        except DataError as e:
            self.problem = str(e).split("; run")[0]
            return
        self.problem = consistency_problem(self._db, prev, vectors)

    def _recover(self, current: int) -> None:
        """Delete rows and files of generations above ``current``: left by a writer that did not commit."""
        with transaction(self._db) as con:
            con.execute("DELETE FROM item_labels WHERE item_id IN (SELECT id FROM items WHERE added_gen > ?)",
                        (current,))
            con.execute("DELETE FROM items WHERE added_gen > ?", (current,))
            con.execute("UPDATE items SET removed_gen = NULL WHERE removed_gen > ?", (current,))
            con.execute("UPDATE info SET value = ? WHERE key = 'generation' AND CAST(value AS INTEGER) > ?",
                        (str(current), current))
        for f in self.root.glob("gen-*"):
            num = f.name[4:10]
            if num.isdigit() and int(num) > current:
                f.unlink(missing_ok=True)
        for f in self.root.glob(".*.tmp"):
            f.unlink(missing_ok=True)

    def _resolve_settings(self) -> None:
        prev = self.previous
        if prev is None and self._repair and self._model_id is None:
            self._model_id, self._dim = self._stored_model()
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

    def _stored_model(self) -> tuple[str, int]:
        """(model id, width) of the stored items' vectors: what a repair knows when no description is left."""
        row = self._db.execute("SELECT i.model_id, length(v.vector) FROM items i JOIN vectors v ON "
                               "v.model_id = i.model_id AND v.hash = i.hash ORDER BY i.id DESC LIMIT 1").fetchone()
        if row is None:
            raise DataError(self.root, "nothing to repair from: no generation description and no stored items; "
                                       "delete the folder and build the index again")
        return row[0], row[1] // 4

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
            f"SELECT {ITEM_COLUMNS} FROM items i WHERE {VISIBLE_SQL} ORDER BY i.id", {"gen": self.gen - 1}
        ).fetchall()
        return [row_to_item(r) for r in rows]

    def unembedded(self) -> list[int]:
        """Ids of committed items whose vector is not stored (only a damaged database has any)."""
        return [r[0] for r in self._db.execute(
            f"SELECT i.id FROM items i WHERE {VISIBLE_SQL} AND NOT EXISTS (SELECT 1 FROM vectors v WHERE "
            "v.model_id = i.model_id AND v.hash = i.hash) ORDER BY i.id", {"gen": self.gen - 1})]

    def cached(self, hashes: Iterable[str]) -> set[str]:
        """The hashes that already have a vector for this writer's model."""
        hs = list(set(hashes))
        out: set[str] = set()
        for chunk in chunks(hs, 500):
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
        with transaction(self._db) as con:
            con.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                            [(self.model_id, h, v.tobytes()) for h, v in zip(hashes, vectors)])
            con.executemany("INSERT OR IGNORE INTO thumbs VALUES (?, ?, ?)",
                            [(h, t[1], t[0]) for h, t in zip(hashes, thumbs) if t is not None])

    def insert(self, items: Sequence[NewItem]) -> None:
        """Add item rows to the new generation (their vectors must be stored already)."""
        missing = {it.hash for it in items} - self.cached(it.hash for it in items)
        if missing:
            raise RuntimeError(f"insert: no vector stored for {len(missing)} hash(es)")
        with transaction(self._db) as con:
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
        with transaction(self._db) as con:
            con.executemany("UPDATE items SET size = ?, mtime_ns = ? WHERE id = ?",
                            [(int(s), int(m), int(i)) for i, s, m in updates])

    def retire(self, ids: Iterable[int]) -> None:
        """Remove visible items from the new generation (older generations still see them)."""
        with transaction(self._db) as con:
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
        count = con.execute(f"SELECT COUNT(*) FROM items i WHERE {VISIBLE_SQL}", params).fetchone()[0]
        others = con.execute(f"SELECT COUNT(*) FROM items i WHERE {VISIBLE_SQL} AND i.model_id != :m",
                             {**params, "m": self.model_id}).fetchone()[0]
        if others:
            raise ConfigError(
                f"{self.root}: {others} item(s) were embedded by model {self.previous.model_id if self.previous else '?'}"
                f", not {self.model_id}; one index holds one model's vectors (rebuild with `polymodal index build`)"
            )
        index, info, tombstones = self._updated_ann(count, rebuild=rebuild)
        name = generation_name(gen)
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
        # Readers refuse a database older than CURRENT (a stale copy put back); crash here and the next
        # writer's recovery lowers it again.
        self._db.execute("INSERT OR REPLACE INTO info VALUES ('generation', ?)", (str(gen),))
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
        kind = choose_kind(count, cfg)
        gen = self.gen
        reuse = (
            not rebuild and prev is not None and prev.model_id == self.model_id and prev.dim == self.dim and prev.ann.kind == kind
            and (kind == "flat" or _within(count, prev.ann.recall_measured_on, REBUILD_GROWTH))
        )
        if reuse and prev is not None:
            index = read_ann(self.root / f"{generation_name(prev.generation)}.faiss")
            problem = consistency_problem(self._db, prev, index)
            if problem is not None:  # checked when loaded: adding to a vector index that disagrees corrupts it
                raise DataError(self.root, f"{problem}; nothing was written; {repair_advice(self.root)}")
            apply_params(index, prev.ann)
            removed = np.array([r[0] for r in self._db.execute(
                "SELECT id FROM items WHERE removed_gen = ?", (gen,))], dtype=np.int64)
            added_ids, added = vectors_where(self._db, "i.added_gen = :gen", {"gen": gen}, self.dim)
            if not ann_remove(index, kind, removed):
                tombstones = prev.tombstones + len(removed)
            else:
                tombstones = 0
            ann_add(index, added, added_ids)
            if tombstones <= COMPACT_TOMBSTONES * max(1, index.ntotal):
                info = AnnInfo.from_dict({**prev.ann.to_dict(), "ntotal": int(index.ntotal)})
                return index, info, tombstones
        ids, vecs = vectors_where(self._db, VISIBLE_SQL, {"gen": gen}, self.dim)
        built = build_ann(vecs, ids, cfg, kind=kind)
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
        with transaction(self._db) as con:
            con.execute("DELETE FROM item_labels WHERE item_id IN (SELECT id FROM items WHERE removed_gen <= ?)",
                        (committed,))
            n = con.execute("DELETE FROM items WHERE removed_gen <= ?", (committed,)).rowcount
            n += con.execute("DELETE FROM vectors WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.model_id = "
                             "vectors.model_id AND i.hash = vectors.hash)").rowcount
            n += con.execute("DELETE FROM thumbs WHERE NOT EXISTS (SELECT 1 FROM items i WHERE i.hash = thumbs.hash)"
                             ).rowcount
        self._db.execute("VACUUM")
        return n


def _described_generations(root: Path) -> list[int]:
    """Numbers of the generations with a description file, ascending."""
    nums = (f.name[4:10] for f in root.glob("gen-*.json"))
    return sorted(int(n) for n in nums if n.isdigit())


def _within(n: int, reference: int, factor: float) -> bool:
    return reference > 0 and reference / factor <= n <= reference * factor
