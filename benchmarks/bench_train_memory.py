"""Peak memory of ``polymodal train`` as the manifest grows: it should not grow with the images' pixels.

    python benchmarks/bench_train_memory.py [--sizes 250 1000] [--work /tmp/polymodal-train-memory]

Writes N synthetic 1024x768 JPEG photos and a CSV manifest per size (kept in --work for the next run),
trains one epoch of the default aligner on each (no refit, one thread, a fresh feature cache) in its own
process, and prints one JSON line per size with the process's peak resident set size. A decoded
1024x768 RGB image is 2.4 MB, so a loader that keeps every image grows by that much per row; one that
keeps only features grows by a few kB. The default sizes keep ``make bench`` to a few minutes; the figures
in docs/benchmarks.md used ``--sizes 1000 2000 4000``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (200, 40, 40), "green": (40, 160, 60), "blue": (40, 70, 200), "yellow": (230, 200, 40)}
SHAPES = ("square", "circle")


def photo(i: int, size: tuple[int, int] = (1024, 768)) -> tuple[Image.Image, str]:
    """A smooth background with one shape (JPEGs of a realistic size, not of noise) and its caption."""
    rng = np.random.default_rng(i)
    w, h = size
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :, None] * rng.integers(40, 215, 3)
    bg = np.broadcast_to(ramp + rng.integers(0, 40, 3), (h, w, 3)).astype(np.uint8)
    im = Image.fromarray(bg)
    name = list(COLOURS)[i % len(COLOURS)]
    shape = SHAPES[(i // len(COLOURS)) % len(SHAPES)]
    x, y, r = int(rng.integers(200, w - 200)), int(rng.integers(200, h - 200)), int(rng.integers(60, 180))
    draw = ImageDraw.Draw(im)
    (draw.rectangle if shape == "square" else draw.ellipse)((x - r, y - r, x + r, y + r), fill=COLOURS[name])
    return im, f"photo {i}: a {name} {shape}"


def dataset(root: Path, n: int) -> Path:
    """``root/manifest.csv`` with ``n`` photos, written once."""
    manifest = root / "manifest.csv"
    if manifest.is_file():
        return manifest
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = ["image,text"]
    for i in range(n):
        im, caption = photo(i)
        im.save(root / "img" / f"{i:05d}.jpg", quality=90)
        rows.append(f"img/{i:05d}.jpg,{caption}")
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return manifest


def peak_rss_of_train(manifest: Path, work: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one ``polymodal train`` process."""
    out, cache = work / "run", work / "cache"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POLYMODAL_CACHE": str(cache)}
    cmd = [sys.executable, "-m", "polymodal", "train", "--data", str(manifest), "--out", str(out),
           "--epochs", "1", "--no-refit", "--json"]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)  # the rusage of this one child, not of all children
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"train failed ({proc.returncode}): {err.strip().splitlines()[-1:] or ''}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t  # ru_maxrss is in kB on Linux


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[250, 1000])
    ap.add_argument("--work", type=Path, default=Path("/tmp/polymodal-train-memory"))
    args = ap.parse_args()
    for n in args.sizes:
        manifest = dataset(args.work / f"n{n}", n)
        rss, seconds = peak_rss_of_train(manifest, args.work / f"n{n}")
        print(json.dumps({"benchmark": "train_memory", "images": n, "image_size": "1024x768",
                          "peak_rss_mb": round(rss), "seconds": round(seconds, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
