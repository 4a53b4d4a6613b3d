"""Shared set-up of the search tests: a small saved model and folders of labelled images."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 190, 40), "blue": (30, 50, 220)}


@functools.lru_cache(maxsize=2)
def model_dir(seed: int = 0) -> Path:
    """A saved aligner with untrained heads (64 px input, so embedding is quick), shared by the test modules.

    ``seed`` gives a differently initialised model, hence another model id.
    """
    import torch

    from polymodal.models.aligner import Aligner, AlignerConfig
    from polymodal.models.io import save

    root = Path(tempfile.mkdtemp(prefix="pm-search-model-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    torch.manual_seed(seed)
    save(Aligner(AlignerConfig(image_size=64)), root / "model")
    return root / "model"


@functools.lru_cache(maxsize=2)
def model(seed: int = 0):
    from polymodal.models.io import load

    return load(model_dir(seed))


def draw(colour: tuple[int, int, int], i: int, size: int = 48) -> Image.Image:
    """A coloured shape on white; ``i`` varies the shape so that no two images are identical."""
    im = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(im)
    if i % 2:
        d.rectangle([4 + i % 7, 6, size - 6, size - 4 - i % 5], fill=colour)
    else:
        d.ellipse([3 + i % 9, 3, size - 4, size - 3 - i % 6], fill=colour)
    return im


def make_images(root: Path, per_label: int, labels: tuple[str, ...] = ("red", "green", "blue"), start: int = 0) -> list[Path]:
    """``root/<label>/<i>.png`` for each label; returns the paths."""
    out = []
    for label in labels:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(start, start + per_label):
            p = root / label / f"{i:03d}.png"
            draw(COLOURS[label], i).save(p)
            out.append(p)
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """A uvicorn server for ``app`` on 127.0.0.1 (a free port) in a daemon thread; use as a context manager.

    It binds only to loopback and stops when the block ends (or the process does).
    """

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))

    def __enter__(self) -> LocalServer:
        import threading
        import time

        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)


def upload_memory(index_dir: str, model_folder: str, side: int, uploads: int, max_pixels: int) -> dict:
    """Peak RSS of a search server while ``uploads`` clients at once send the same side x side PNG.

    The PNG is bilevel (mode "1"), so it is a few KB on the wire and ``side**2`` pixels once decoded: the
    decompression-bomb shape of issue #16. Run it in a fresh process (``python tests/_search_helpers.py``):
    ``ru_maxrss`` is the process's peak, so the baseline (after one upload) and the peak under load are
    read in that order. Returns the numbers and every answer's status.
    """
    import dataclasses
    import io
    import resource
    import threading

    import httpx
    import torch

    from polymodal.models.io import load
    from polymodal.search.index import SearchIndex
    from polymodal.search.query import Searcher
    from polymodal.search.server import ServerConfig, create_app
    from polymodal.search.uploads import UploadLimits

    torch.set_num_threads(1)
    buf = io.BytesIO()
    Image.new("1", (side, side), 1).save(buf, "PNG")
    data = buf.getvalue()
    extra = {"max_decodes": 2} if "max_decodes" in {f.name for f in dataclasses.fields(UploadLimits)} else {}
    limits = UploadLimits(max_bytes=1 << 20, max_pixels=max_pixels, **extra)
    searcher = Searcher(SearchIndex.open(index_dir), load(model_folder))
    statuses: list[int] = []

    def post(client: httpx.Client) -> None:
        r = client.post("/api/search/image", files={"file": ("big.png", data, "image/png")}, params={"k": 1})
        statuses.append(r.status_code)

    with LocalServer(create_app(searcher, ServerConfig(uploads=limits))) as srv, \
            httpx.Client(base_url=srv.url, timeout=600) as client:
        post(client)  # warm-up: one decode, model caches, allocator pools
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        threads = [threading.Thread(target=post, args=(client,)) for _ in range(uploads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"file_bytes": len(data), "pixels": side * side, "uploads": uploads, "baseline_rss": base,
            "peak_rss": peak, "growth": peak - base, "statuses": sorted(set(statuses)), **extra}


if __name__ == "__main__":
    import json
    import sys

    index_arg, model_arg, side_arg, uploads_arg, max_pixels_arg = sys.argv[1:6]
    print(json.dumps(upload_memory(index_arg, model_arg, int(side_arg), int(uploads_arg), int(max_pixels_arg))))
