"""Vector search at 10k, 100k and 1M vectors: query latency p50/p99 and recall@10 of the ANN index vs exact.

Prints ONE JSON line. Vectors are synthetic, 384-d (the aligner's embedding width), L2-normalised, from a
32-dimensional Gaussian mapped into 384-d plus a little noise: neighbourhoods exist as in real embeddings
(uniform noise on the sphere has no near neighbours and makes every index look bad), and there are no
clusters for IVF lists to line up with (which makes IVF look far better than on real data). Queries are
500 held-out points of the same distribution, not in the index; truth is exact inner-product search.

At each size: ``exact`` (IndexFlatIP, the reference, and what polymodal uses below 50k items), and the
approximate kind the index would pick or its alternative: HNSW at 10k and 100k, IVF at 1M (HNSW at 1M
takes too long to build on a laptop; that is why the index switches to IVF there). Build time includes
the recall tuning that the index does (raising efSearch/nprobe until held-in recall@10 >= 0.95), and
``recall_at_10_build`` is that recorded value; ``recall_at_10`` is measured on the held-out queries.
Latency is per single query with one faiss thread (as the server runs queries); builds use all cores.

Usage: python benchmarks/bench_search.py [--sizes 10000,100000,1000000] [--dim 384]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import faiss
import numpy as np

from polymodal.search.ann import AnnConfig, ann_search, build_ann, recall_at_k

QUERIES = 500
EXACT_LATENCY_QUERIES = {10_000: 500, 100_000: 200, 1_000_000: 30}


def synthetic(n: int, dim: int, *, basis: np.ndarray, seed: int, chunk: int = 100_000) -> np.ndarray:
    """(n, dim) float32 unit vectors of intrinsic dimension ``len(basis)``, generated in chunks.

    x = normalise(z @ basis + noise), z ~ N(0, I_latent): a continuous low-dimensional cloud, as real
    embeddings are (their intrinsic dimension is a few dozen), with no cluster structure that an IVF's
    lists could line up with; the noise (norm ~0.3) keeps exact ties and duplicates away.
    """
    rng = np.random.default_rng(seed)
    latent = len(basis)
    out = np.empty((n, dim), np.float32)
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        x = rng.standard_normal((m, latent), dtype=np.float32) @ basis  # (m, dim), norm ~1
        x += rng.standard_normal((m, dim), dtype=np.float32) * np.float32(0.3 / np.sqrt(dim))
        out[i : i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def latencies_ms(search, queries: np.ndarray) -> dict[str, float]:
    """Per-query latency with one faiss thread, as the server runs it (concurrency comes from requests);
    OpenMP fan-out for a single query costs more in synchronisation than it saves, on a shared machine."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    times = []
    try:
        for q in queries:
            t0 = time.perf_counter()
            search(q[None, :])
            times.append((time.perf_counter() - t0) * 1e3)
    finally:
        faiss.omp_set_num_threads(threads)
    return {"p50_ms": round(float(np.percentile(times, 50)), 3), "p99_ms": round(float(np.percentile(times, 99)), 3)}


def bench_size(n: int, dim: int, basis: np.ndarray) -> list[dict]:
    base = synthetic(n, dim, basis=basis, seed=n)
    queries = synthetic(QUERIES, dim, basis=basis, seed=n + 1)
    ids = np.arange(n, dtype=np.int64)
    t0 = time.perf_counter()
    _, truth = faiss.knn(queries, base, 10, metric=faiss.METRIC_INNER_PRODUCT)  # (Q, 10) exact
    truth_s = time.perf_counter() - t0
    rows = []
    n_lat = EXACT_LATENCY_QUERIES.get(n, 100)
    exact = latencies_ms(lambda q: faiss.knn(q, base, 10, metric=faiss.METRIC_INNER_PRODUCT), queries[:n_lat])
    rows.append({"n": n, "kind": "exact", **exact, "recall_at_10": 1.0, "latency_queries": n_lat,
                 "batch_500_queries_s": round(truth_s, 2)})
    for kind in ("hnsw",) if n < 300_000 else ("ivf",):
        t0 = time.perf_counter()
        built = build_ann(base, ids, AnnConfig(), kind=kind)
        build_s = time.perf_counter() - t0
        _, found = ann_search(built.index, built.info, queries, 10)
        lat = latencies_ms(lambda q, b=built: ann_search(b.index, b.info, q, 10), queries)
        rows.append({"n": n, "kind": kind, **lat, "recall_at_10": round(recall_at_k(truth, found), 4),
                     "recall_at_10_build": built.info.recall_at_10, "params": built.info.params,
                     "build_s": round(build_s, 1), "latency_queries": QUERIES})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--latent", type=int, default=32, help="intrinsic dimension of the synthetic vectors")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rng = np.random.default_rng(0)
    # (latent, dim) with entries N(0, 1/(latent*dim)): z @ basis has norm ~1.
    basis = rng.standard_normal((args.latent, args.dim), dtype=np.float32) / np.float32(np.sqrt(args.latent * args.dim))
    t0 = time.perf_counter()
    results = []
    for n in sizes:
        results += bench_size(n, args.dim, basis)
    print(json.dumps({
        "bench": "search_ann", "dim": args.dim, "queries": QUERIES, "metric": "inner product (cosine)",
        "data": f"synthetic: unit vectors of intrinsic dimension {args.latent} (+ noise); held-out queries",
        "faiss": faiss.__version__, "threads": faiss.omp_get_max_threads(), "cpus": os.cpu_count(),
        "machine": platform.machine(), "loadavg_1m_after": round(os.getloadavg()[0], 2), "results": results,
        "total_s": round(time.perf_counter() - t0, 1),
    }))


if __name__ == "__main__":
    main()
