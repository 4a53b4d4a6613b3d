"""Bounded load test of the search server on loopback: unique-query throughput and p99 at 1, 8 and 16 clients
with and without micro-batching, and a 512-label zero-shot request next to a 16-label one.

Prints ONE JSON line. The server is ``polymodal serve`` in its own process on 127.0.0.1, over an index of
10,000 items (synthetic 384-d vectors written through the index writer, so the set-up does not spend
minutes embedding images; the query path is the real one: text tower, then faiss, SQLite, JSON). The
model is the aligner with untrained heads (the towers are the pretrained ones, so text encoding costs
what it costs with a trained model). Side by side in the same run, the same server with one query per
text-tower pass (``Searcher(text_batch=1)``: the query path before micro-batching) is the baseline.

Scenarios, each for ``--duration`` seconds:
  - ``search_unique`` at 1, 8 and 16 clients, on both servers: every request a new query text, so each
    one runs the text tower; ``unique_speedup`` is the batched server's requests/s over the baseline's.
  - ``search_repeated`` at 8 clients: 50 different queries in turn; after the first round they hit the
    text-embedding cache, so this measures HTTP + vector search + metadata + JSON.
  - ``thumbnail`` at 8 clients: GET /api/items/{id}/thumbnail over random ids.
  - ``zeroshot``: POST /api/zeroshot with 16 and with 512 labels never seen before (``cold``: the labels'
    prompt ensembles go through the text tower), then the same requests again (``warm``: the per-label
    cache answers); ``ratio_512_vs_16`` for both.

The load generator is ``wrk`` (Debian package; scripts/install_browser.sh installs it) or, if it is not
installed, an asyncio + httpx client (the JSON says which). Zero errors is part of the result: the script
exits with status 1 if any request failed or returned a non-2xx status. The client shares the machine
with the server (and with anything else running: ``loadavg_1m_after`` says how busy it was).

With ``--before SRC`` a third server joins the run: ``polymodal serve`` imported from another checkout's
``src/`` (``git worktree add /tmp/pre18 e4102c7^``: the code issue #18 was filed against), on an index of
the same synthetic items written by that checkout's own code; ``unique_vs_before`` is the batched server's
requests/s over it.

Usage: python benchmarks/bench_server_load.py [--duration 4] [--items 10000] [--no-baseline] [--before SRC]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

QUERIES = [f"a {c} {s}" for c in ("red", "green", "blue", "yellow", "black") for s in
           ("heart", "circle", "square", "star", "face", "cat", "dog", "car", "tree", "house")]


def make_index(root: Path, items: int) -> Path:
    """A model folder and an index of ``items`` synthetic vectors under ``root``; returns the index folder."""
    import torch

    from polymodal.models.aligner import Aligner, AlignerConfig
    from polymodal.models.io import load
    from polymodal.search.writer import IndexWriter, NewItem

    try:
        from polymodal.models.io import save
    except ImportError:  # a --before source tree from before polymodal.save (issue #17)
        from polymodal.models.io import save_model as save

    torch.manual_seed(0)
    save(Aligner(AlignerConfig()), root / "model")
    model = load(root / "model")
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((items, model.config.embed_dim), dtype=np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 60, 60)).save(buf, "JPEG")
    thumb = (buf.getvalue(), "image/jpeg")
    hashes = [f"synthetic{i:08d}" for i in range(items)]
    with IndexWriter(root / "index", model_id=model.model_id, dim=model.config.embed_dim,
                     model_dir=str(root / "model")) as w:
        for i in range(0, items, 5000):
            w.put_vectors(hashes[i : i + 5000], vecs[i : i + 5000], [thumb] * len(hashes[i : i + 5000]))
        w.insert([NewItem(path=f"/synthetic/img_{i:06d}.png", hash=h, labels=[QUERIES[i % 50].split()[1]])
                  for i, h in enumerate(hashes)])
        w.commit()
    return root / "index"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The baseline server: what `polymodal serve` runs, with one query text per text-tower pass.
# Its model loads as `polymodal serve` loads it (single-threaded; the text lane gets the cores).
BASELINE_SERVER = """
import sys
import torch
from polymodal.models.io import load
from polymodal.search.index import SearchIndex
from polymodal.search.query import Searcher
from polymodal.search.server import ServerConfig, serve_searcher
from polymodal.core.threads import use_threads
config = ServerConfig(model_threads=torch.get_num_threads())
use_threads(1)
index = SearchIndex.open(sys.argv[1])
serve_searcher(Searcher(index, load(index.info.model_dir), text_batch=1), port=int(sys.argv[2]), config=config)
"""


def source_env(src: Path | None) -> dict[str, str] | None:
    """The environment that imports polymodal from ``src`` (another checkout's ``src/``), or None for this one."""
    return None if src is None else {**os.environ, "PYTHONPATH": str(src)}


def start_server(index: Path, port: int, *, baseline: bool = False, src: Path | None = None) -> subprocess.Popen:
    cmd = ([sys.executable, "-c", BASELINE_SERVER, str(index), str(port)] if baseline else
           [sys.executable, "-m", "polymodal", "serve", str(index), "--port", str(port)])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=source_env(src))
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit("the server exited during start-up")
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("the server did not start within 120 s")


# --- wrk -------------------------------------------------------------------------------------------

WRK_LUA = {
    "search_repeated": """
local queries = {QUERIES}
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, "/api/search?k=20&q=" .. queries[(i % #queries) + 1])
end
""".replace("QUERIES", ", ".join(f'"{q.replace(" ", "+")}"' for q in QUERIES)),
    # Every query new: a tag per run (wrk's Lua RNG starts from the same seed each time, and an earlier
    # run's queries would be cache hits) and per wrk thread (each has its own Lua state and counter).
    "search_unique": """
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, "/api/search?k=20&q=a+picture+number+RUN+" .. tid .. "+" .. i)
end
""",
    "thumbnail": """
request = function()
  return wrk.format(nil, "/api/items/" .. math.random(1, ITEMS) .. "/thumbnail")
end
""",
}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def run_wrk(base: str, scenario: str, clients: int, duration: int, items: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA[scenario].replace("ITEMS", str(items)).replace("RUN", os.urandom(6).hex()))
    try:
        out = subprocess.run(["wrk", f"-t{min(clients, 2)}", f"-c{clients}", f"-d{duration}s", "--latency",
                              "--timeout", "10s", "-s", f.name, base], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, flags=re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    return {"requests": total, "requests_per_s": round(rps, 1), "p50_ms": round(_ms(pct["50"]), 2),
            "p99_ms": round(_ms(pct["99"]), 2), "errors": errors}


# --- fallback: asyncio + httpx ---------------------------------------------------------------------


def run_httpx(base: str, scenario: str, clients: int, duration: int, items: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    counter = 0
    tag = os.urandom(6).hex()  # queries new to the server's cache in every run

    def next_url() -> str:
        nonlocal counter
        counter += 1
        if scenario == "search_repeated":
            return f"/api/search?k=20&q={QUERIES[counter % len(QUERIES)]}"
        if scenario == "search_unique":
            return f"/api/search?k=20&q=a picture number {tag} {counter}"
        return f"/api/items/{np.random.randint(1, items + 1)}/thumbnail"

    async def worker(client: httpx.AsyncClient, stop: float) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                r = await client.get(next_url())
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append((time.perf_counter() - t0) * 1e3)
            errors += not ok

    async def main() -> float:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            t0 = time.perf_counter()
            await asyncio.gather(*(worker(client, t0 + duration) for _ in range(clients)))
            return time.perf_counter() - t0

    elapsed = asyncio.run(main())
    return {"requests": len(latencies), "requests_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "p99_ms": round(float(np.percentile(latencies, 99)), 2), "errors": errors}


def zeroshot_latencies(base: str, counts: tuple[int, ...] = (16, 512)) -> dict:
    """Seconds of one /api/zeroshot request per label count, with new labels (cold) and then again (warm)."""
    import httpx

    buf = io.BytesIO()
    Image.new("RGB", (224, 224), (200, 60, 60)).save(buf, "PNG")
    files = {"file": ("q.png", buf.getvalue(), "image/png")}
    tag = os.getpid()
    out: dict = {}
    with httpx.Client(base_url=base, timeout=600) as client:
        for state in ("cold", "warm"):
            for n in counts:
                labels = ",".join(f"thing {tag} {n} {i}" for i in range(n))
                t0 = time.perf_counter()
                r = client.post("/api/zeroshot", params={"labels": labels, "top": 5}, files=files)
                seconds = time.perf_counter() - t0
                if r.status_code != 200:
                    raise SystemExit(f"zero-shot with {n} labels: {r.status_code} {r.text[:200]}")
                out.setdefault(state, {})[f"labels_{n}_s"] = round(seconds, 3)
            got = out[state]
            got["ratio_512_vs_16"] = round(got[f"labels_{counts[-1]}_s"] / got[f"labels_{counts[0]}_s"], 2)
    return out


def wait_for_labels(base: str, timeout: float = 120) -> None:
    """Until the server has embedded its index's default zero-shot labels (a start-up job in the background
    that would otherwise share the cores with the first scenario); a server without that field is ready."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = httpx.get(f"{base}/api/info", timeout=10).json()
        if info.get("zeroshot_labels_ready", 0) >= info.get("zeroshot_labels", 0):
            return
        time.sleep(0.5)


def load_runs(base: str, run, scenarios: list[tuple[str, int]], duration: int, items: int) -> list[dict]:
    wait_for_labels(base)
    # Warm-up: fills the query cache and runs the text tower's first passes (thread pools, allocator).
    run(base, "search_repeated", 1, 1, items)
    run(base, "search_unique", 1, 1, items)
    return [{"scenario": name, "clients": clients, **run(base, name, clients, duration, items)}
            for name, clients in scenarios]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=4, help="seconds per scenario and client count")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure the server with one query per text-tower pass")
    parser.add_argument("--before", type=Path, default=None, metavar="SRC",
                        help="also measure `polymodal serve` of another checkout's src/ (e.g. a git worktree of the "
                             "commit issue #18 was filed against) on its own index of the same synthetic items")
    parser.add_argument("--make-index", type=Path, default=None, help=argparse.SUPPRESS)  # for --before
    args = parser.parse_args()
    if args.make_index is not None:  # runs under the --before checkout: its model and index formats
        make_index(args.make_index, args.items)
        return
    tool = "wrk" if shutil.which("wrk") else "httpx-asyncio"
    run = run_wrk if tool == "wrk" else run_httpx
    unique = [("search_unique", c) for c in (1, 8, 16)]
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        index = make_index(Path(tmp), args.items)
        setup_s = time.perf_counter() - t0
        servers = [("batched", False, index, None), *([("one_per_pass", True, index, None)] if args.baseline else [])]
        if args.before is not None:
            old_root = Path(tmp) / "before"
            subprocess.run([sys.executable, __file__, "--make-index", str(old_root), "--items", str(args.items)],
                           check=True, env=source_env(args.before.resolve()))
            servers.append(("before", False, old_root / "index", args.before.resolve()))
        results, zeroshot = [], {}
        for name, baseline, served, src in servers:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            server = start_server(served, port, baseline=baseline, src=src)
            try:
                more = [] if baseline or src else [("search_repeated", 8), ("thumbnail", 8)]
                results += [{"server": name, **r} for r in load_runs(base, run, unique + more, args.duration,
                                                                      args.items)]
                if name == "batched":
                    zeroshot = zeroshot_latencies(base)
            finally:
                server.terminate()
                server.wait(timeout=30)
    total_errors = sum(r["errors"] for r in results)
    rps = {(r["server"], r["clients"]): r["requests_per_s"] for r in results if r["scenario"] == "search_unique"}
    speedup = {f"clients_{c}": round(rps[("batched", c)] / rps[("one_per_pass", c)], 2)
               for c in (1, 8, 16) if ("one_per_pass", c) in rps}
    vs_before = {f"clients_{c}": round(rps[("batched", c)] / rps[("before", c)], 2)
                 for c in (1, 8, 16) if ("before", c) in rps}
    print(json.dumps({
        "bench": "server_load", "tool": tool, "host": "127.0.0.1", "duration_s": args.duration,
        "index_items": args.items, "index_kind": "flat (exact)", "dim": 384, "k": 20, "cpus": os.cpu_count(),
        "machine": platform.machine(), "loadavg_1m_after": round(os.getloadavg()[0], 2),
        "setup_s": round(setup_s, 1), "results": results, "unique_speedup": speedup, "unique_vs_before": vs_before,
        "before_src": None if args.before is None else str(args.before), "zeroshot": zeroshot,
        "errors": total_errors,
    }))
    if total_errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
