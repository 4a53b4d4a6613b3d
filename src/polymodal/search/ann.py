"""The vector index behind search: exact inner product for small collections, HNSW or IVF for large ones.

Vectors are L2-normalised, so inner product is cosine similarity. The kind is chosen by collection size
(:func:`choose_kind`): below ``exact_max`` vectors a brute-force ``IndexFlatIP`` answers a query in a few
milliseconds and is exact; up to ``hnsw_max`` an HNSW graph (Malkov & Yashunin 2018) needs no training and
keeps recall high; beyond that an inverted file (IVF, Jégou et al. 2011) trained on a sample builds in
minutes where HNSW would take much longer on a laptop. For an approximate kind, the search breadth
(``efSearch`` or ``nprobe``) is raised until recall@10 against exact search reaches ``target_recall`` on
held-out queries (a sample of the vectors, added to the index only after tuning), and that measured recall
is recorded (:class:`AnnInfo`), so an index says how approximate it is.

Ids are the item ids of the metadata store (``int64``). Flat and HNSW sit in an ``IndexIDMap2``; IVF keeps
ids itself. Flat and IVF support removal; HNSW does not, so removed ids stay in the graph as tombstones that
search excludes with an id selector, until the store compacts (rebuilds) the graph.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import faiss as _faiss
import numpy as np

from polymodal.errors import ConfigError, ShapeError

# faiss' bundled type stubs do not describe its SWIG classes (downcast indexes, SearchParameters keywords).
faiss: Any = _faiss

KINDS = ("flat", "hnsw", "ivf")


@dataclass
class AnnConfig:
    """How the vector index is chosen and tuned.

    Args:
        exact_max: collections with fewer vectors than this use exact search.
        hnsw_max: collections with fewer vectors than this (and at least ``exact_max``) use HNSW; larger ones IVF.
        hnsw_m: HNSW graph degree (links per node per layer); 32 is faiss' usual choice for ~0.95+ recall.
        hnsw_ef_construction: HNSW build-time beam width.
        ivf_train_size: at most this many vectors train the IVF coarse quantizer (k-means).
        target_recall: the search breadth is raised until recall@10 vs exact reaches this.
        recall_queries: how many vectors are held out as queries when measuring recall (at most a tenth).
        seed: sampling seed for the training sample and the recall queries.
    """

    exact_max: int = 50_000
    hnsw_max: int = 300_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 40  # faiss' default; search-time efSearch is tuned for recall instead
    ivf_train_size: int = 100_000
    target_recall: float = 0.95
    recall_queries: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if self.exact_max < 1 or self.hnsw_max < self.exact_max:
            raise ConfigError(f"AnnConfig: need 1 <= exact_max <= hnsw_max, got {self.exact_max}, {self.hnsw_max}")
        if self.hnsw_m < 4 or self.hnsw_ef_construction < self.hnsw_m:
            raise ConfigError(f"AnnConfig: bad HNSW sizes m={self.hnsw_m}, ef_construction={self.hnsw_ef_construction}")
        if not 0.0 < self.target_recall <= 1.0:
            raise ConfigError(f"AnnConfig.target_recall must be in (0, 1], got {self.target_recall}")
        if self.recall_queries < 1 or self.ivf_train_size < 1:
            raise ConfigError("AnnConfig: recall_queries and ivf_train_size must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnnConfig:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class AnnInfo:
    """What was built, and how good it is: stored next to the index file.

    Attributes:
        kind: ``"flat"``, ``"hnsw"`` or ``"ivf"``.
        dim: vector width.
        ntotal: vectors in the index, tombstones included.
        params: the search parameters in use (``efSearch`` or ``nprobe``, plus build parameters).
        recall_at_10: recall@10 against exact search (1.0 for flat), measured at build time on held-out queries.
        recall_queries: how many queries the recall was measured on (0 for flat).
        recall_measured_on: how many vectors the index held when recall was measured.
        build_seconds: wall time of the (re)build.
    """

    kind: str
    dim: int
    ntotal: int
    params: dict[str, Any] = field(default_factory=dict)
    recall_at_10: float = 1.0
    recall_queries: int = 0
    recall_measured_on: int = 0
    build_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AnnInfo:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class AnnBuild:
    """A built index and its description."""

    index: faiss.Index
    info: AnnInfo


# --- choice and construction ---------------------------------------------------------------------


def choose_kind(n: int, config: AnnConfig) -> str:
    """The index kind for a collection of ``n`` vectors."""
    if n < config.exact_max:
        return "flat"
    return "hnsw" if n < config.hnsw_max else "ivf"


def ivf_nlist(n: int) -> int:
    """Number of IVF lists: 2·sqrt(n), with >= 39 training points per centroid (faiss warns below that).

    A search scans the nlist centroids plus nprobe lists of about n/nlist vectors; nlist near sqrt(n)
    balances the two, and 2·sqrt(n) keeps k-means training (which scales with nlist) within a minute or
    two at a million vectors on a laptop. faiss' guideline of 4-16·sqrt(n) pays off at larger n.
    """
    return max(1, min(int(2 * math.sqrt(n)), n // 39))


def build_ann(vectors: np.ndarray, ids: np.ndarray, config: AnnConfig, *, kind: str | None = None) -> AnnBuild:
    """Build the index of the kind :func:`choose_kind` picks (or ``kind``) and measure its recall.

    Args:
        vectors: (N, D) float32, L2-normalised rows.
        ids: (N,) int64 item ids.
        config: the choice and tuning parameters.
        kind: force a kind instead of choosing by size (benchmarks and tests).
    """
    vectors, ids = _check(vectors, ids)
    n, dim = vectors.shape
    kind = kind or choose_kind(n, config)
    if kind not in KINDS:
        raise ConfigError(f"ann kind must be one of {', '.join(KINDS)}, got {kind!r}")
    t0 = time.perf_counter()
    params: dict[str, Any] = {}
    if kind == "flat":
        index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    elif kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = config.hnsw_ef_construction
        index = faiss.IndexIDMap2(hnsw)
        params = {"M": config.hnsw_m, "efConstruction": config.hnsw_ef_construction}
    else:
        nlist = ivf_nlist(n)
        # The factory builds an IndexIVFFlat that owns its coarse quantizer.
        index = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        faiss.extract_index_ivf(index).cp.niter = 10  # k-means iterations; recall barely moves past ~10
        rng = np.random.default_rng(config.seed)
        train = vectors if n <= config.ivf_train_size else vectors[rng.choice(n, config.ivf_train_size, replace=False)]
        index.train(train)
        params = {"nlist": nlist, "train_size": len(train)}
    info = AnnInfo(kind=kind, dim=dim, ntotal=n, params=params)
    if kind == "flat":
        index.add_with_ids(vectors, ids)
    else:
        # Recall is measured on held-out queries: index all but a sample, tune on the sample, add it last.
        # Querying with vectors already in the graph overstates HNSW recall (on 10k benchmark vectors:
        # 0.99 measured that way, 0.87 on new queries): the query's own node links straight to its neighbours.
        held = np.random.default_rng(config.seed + 1).choice(n, max(1, min(config.recall_queries, n // 10)),
                                                             replace=False) if n >= 2 else np.zeros(0, np.int64)
        rest = np.setdiff1d(np.arange(n), held)
        index.add_with_ids(vectors[rest], ids[rest])
        tune(index, info, vectors[rest], ids[rest], vectors[held], config)
        info.recall_measured_on = n
        index.add_with_ids(vectors[held], ids[held])
    info.build_seconds = round(time.perf_counter() - t0, 3)
    return AnnBuild(index=index, info=info)


def tune(index: faiss.Index, info: AnnInfo, base: np.ndarray, base_ids: np.ndarray, queries: np.ndarray,
         config: AnnConfig) -> None:
    """Double efSearch (HNSW) or nprobe (IVF) until recall@10 vs exact reaches the target; record it in ``info``.

    Args:
        index: holds exactly ``base``.
        info: receives the chosen parameter and the measured recall.
        base: (N, D) the indexed vectors; ``base_ids`` their ids.
        queries: (Q, D) query vectors that are not in the index.
        config: the recall target.
    """
    name, value, limit = ("efSearch", 16, 1024) if info.kind == "hnsw" else ("nprobe", 1, int(info.params["nlist"]))
    k = min(10, len(base))
    if k < 1 or len(queries) == 0:
        info.params[name] = limit if info.kind == "ivf" else 64
        return
    _, truth = exact_search(base, base_ids, queries, k)  # (Q, k)
    while True:
        set_search_param(index, info.kind, value)
        _, found = index.search(queries, k)  # (Q, k)
        recall = recall_at_k(truth, found)
        if recall >= config.target_recall or value >= limit:
            break
        value = min(2 * value, limit)
    info.params[name] = value
    info.recall_at_10 = round(recall, 4)
    info.recall_queries = len(queries)


def set_search_param(index: faiss.Index, kind: str, value: int) -> None:
    """Set efSearch (HNSW) or nprobe (IVF) on the index."""
    if kind == "hnsw":
        faiss.downcast_index(index.index).hnsw.efSearch = int(value)
    elif kind == "ivf":
        faiss.extract_index_ivf(index).nprobe = int(value)


def apply_params(index: faiss.Index, info: AnnInfo) -> None:
    """Restore the tuned search breadth after reading an index file."""
    if info.kind == "hnsw":
        set_search_param(index, "hnsw", info.params.get("efSearch", 64))
    elif info.kind == "ivf":
        set_search_param(index, "ivf", info.params.get("nprobe", 8))


# --- incremental changes --------------------------------------------------------------------------


def ann_add(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> None:
    """Add vectors in place (all kinds support it; IVF keeps its trained centroids)."""
    vectors, ids = _check(vectors, ids)
    if len(ids):
        index.add_with_ids(vectors, ids)


def ann_remove(index: faiss.Index, kind: str, ids: np.ndarray) -> bool:
    """Remove ids in place; returns False for HNSW, which cannot remove (the caller keeps tombstones)."""
    if kind == "hnsw":
        return False
    if len(ids):
        index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
    return True


def index_ids(index: faiss.Index, kind: str) -> np.ndarray:
    """All ids held by the index (tombstones included), as int64."""
    if kind in ("flat", "hnsw"):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(index)
    invlists = ivf.invlists
    out = [
        faiss.rev_swig_ptr(invlists.get_ids(i), invlists.list_size(i)).copy()
        for i in range(ivf.nlist)
        if invlists.list_size(i)
    ]
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)


# --- search ----------------------------------------------------------------------------------------


def ann_search(
    index: faiss.Index, info: AnnInfo, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, ids) per query, each (Q, k); missing results have id -1.

    Args:
        index: the faiss index.
        info: its description (for the search breadth).
        queries: (Q, D) float32.
        k: results per query.
        allowed: if given, only these ids may be returned (tombstones and metadata filters).
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = max(1, min(k, max(int(index.ntotal), 1)))
    if allowed is None:
        return index.search(queries, k)
    sel = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
    if info.kind == "hnsw":
        params: faiss.SearchParameters = faiss.SearchParametersHNSW(sel=sel, efSearch=int(info.params.get("efSearch", 64)))
    elif info.kind == "ivf":
        params = faiss.SearchParametersIVF(sel=sel, nprobe=int(info.params.get("nprobe", 8)))
    else:
        params = faiss.SearchParameters(sel=sel)
    return index.search(queries, k, params=params)


def exact_search(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-``k`` (scores, ids), each (Q, k'), k' = min(k, N): the reference ANN is measured against."""
    k = min(k, len(ids))
    if k == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    # faiss.knn: blocked BLAS matmul + heap, never materialising the (Q, N) score matrix.
    scores, pos = faiss.knn(np.ascontiguousarray(queries, dtype=np.float32),
                            np.ascontiguousarray(vectors, dtype=np.float32), k, metric=faiss.METRIC_INNER_PRODUCT)
    return scores, ids[pos]  # (Q, k) each


def recall_at_k(truth: np.ndarray, found: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / |truth| (each row a query's top-k ids)."""
    hits = sum(len(set(t.tolist()) & set(f.tolist())) for t, f in zip(truth, found))
    return hits / max(1, truth.size)


# --- helpers ---------------------------------------------------------------------------------------


def _check(vectors: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if vectors.ndim != 2 or ids.ndim != 1 or len(vectors) != len(ids):
        raise ShapeError(f"vectors must be (N, D) and ids (N,), got {vectors.shape} and {ids.shape}")
    return vectors, ids
