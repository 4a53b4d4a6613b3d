"""``polymodal index build`` end to end against the bare image tower on the same images, and its peak memory.

    python benchmarks/bench_index.py [--images 1000 5000] [--photo-size 2000x1500] [--fit pad|crop] [--memory-sizes 1000 4000] [--no-onnx]

For each folder size N of ``--images`` (default 1,000 and 5,000: a build pays a fixed ~3 s of process
start-up, importing torch and loading the model, about a fifth of a 1,000-image run on 2 cores and a
twentieth of a 5,000-image one), writes N distinct synthetic images once into ``--work`` (three in four
photo-like JPEGs with texture, 640x480 or ``--photo-size``, one in four 256x256 PNG drawings; no sample
photographs), saves an aligner with the default model's architecture (pretrained towers, untrained heads:
the tower costs what it costs with a trained model) and framing: ``--fit pad``, the whole image padded to
a square as ``polymodal demo``'s model does (the default), or ``--fit crop``, the TF centre crop
(``AlignerConfig``'s default). It measures side by side:

- ``tower_images_per_s``: the bare image tower (``model.encode_image`` on preprocessed tensors, batch
  ``--batch-size``) over the same N images; decoding and preprocessing happen outside the clock.
- ``index_build_images_per_s``: ``polymodal index build --model M --out I --images DIR`` in its own
  process, N / wall time from process start to exit (start-up, model load, hashing, decoding, thumbnails,
  the tower, SQLite and faiss). ``build_images_per_s`` is N / the build's own ``seconds`` (without the
  process start-up and model load).
- ``startup_s``: wall seconds of the build process outside the build itself (``wall_s`` less the report's
  ``seconds``).
- ``onnxruntime_pipeline_images_per_s`` (if ``onnxruntime`` imports; first size only): the same build in
  this process with the image trunk replaced by ONNX Runtime running the same network (exported as
  ``bench_image_tower.py`` exports it, pooled features, 2 intra-op threads) in the same pipeline, next to
  polymodal's own trunk in the same pipeline (``pipeline_images_per_s``).

With ``--compare-workers``, the same in-process build also with decoding inline (``workers=0``, the
sequential path) and in 2 forked worker processes instead of 2 threads.

With ``--memory-sizes``, one more JSON line per size: the peak resident set size of an ``index build``
process over that many images (read by a small intermediate process: Linux keeps a process's peak RSS
across exec, so a child forked straight from this large process would report at least this one's size),
and the ratio to the first size. Prints one JSON line per measurement (one ``index_build`` line per folder
size).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

COLOURS = ((200, 40, 40), (40, 160, 60), (40, 70, 200), (230, 200, 40))
IMAGES_VERSION = "2"  # 2: every drawing a distinct file (in version 1, 133 of 1,000 files were copies)


def synthetic_image(i: int, photo_size: tuple[int, int] = (640, 480)) -> tuple[Image.Image, str]:
    """Image ``i``: a textured photo-like JPEG of ``photo_size`` (3 in 4) or a 256x256 PNG drawing; (image, suffix)."""
    rng = np.random.default_rng(i)
    colour = COLOURS[i % len(COLOURS)]
    if i % 4 == 3:
        im = Image.new("RGB", (256, 256), "white")
        d = ImageDraw.Draw(im)
        r = int(rng.integers(40, 110))
        (d.rectangle if i % 8 == 3 else d.ellipse)((128 - r, 128 - r, 128 + r, 128 + r), fill=colour)
        # i's bits as near-white pixels in the bottom row: no two drawings are the same file, so the build
        # embeds every image (it embeds a repeated file once) and runs the tower as often as the bare one.
        for k in range(16):
            if i >> k & 1:
                im.putpixel((k, 255), (250, 250, 250))
        return im, ".png"
    w, h = photo_size
    ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :, None] * rng.integers(40, 215, 3)
    noise = rng.normal(0, 12, (h, w, 3)).astype(np.float32)  # texture: JPEGs of photo-like size and cost
    im = Image.fromarray((ramp + rng.integers(0, 40, 3) + noise).clip(0, 255).astype(np.uint8))
    k = min(w, h) / 480  # the disc scales with the photo (k = 1 at 640x480, as before)
    x, y = int(rng.integers(120 * k, w - 120 * k)), int(rng.integers(120 * k, h - 120 * k))
    r = int(rng.integers(40 * k, 110 * k))
    ImageDraw.Draw(im).ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return im, ".jpg"


def image_folder(work: Path, n: int, photo_size: tuple[int, int] = (640, 480)) -> Path:
    """``work/images-N`` (``images-N-WxH`` for other photo sizes) holding images 0..n-1, written once (a marker
    file says the folder is complete, and by which version of :func:`synthetic_image`)."""
    root = work / (f"images-{n}" if photo_size == (640, 480) else f"images-{n}-{photo_size[0]}x{photo_size[1]}")
    marker = root / ".complete"
    if marker.is_file() and marker.read_text() == IMAGES_VERSION:
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im, suffix = synthetic_image(i, photo_size)
        im.save(root / f"{i:05d}{suffix}", quality=90)
    marker.write_text(IMAGES_VERSION)
    return root


def model_folder(work: Path, fit: str = "pad") -> Path:
    """``work/model-FIT``: an untrained aligner of the demo's architecture framing images by ``fit``, saved once."""
    path = work / f"model-{fit}"
    if not (path / "config.json").is_file():
        from dataclasses import replace

        from polymodal.models.aligner import Aligner
        from polymodal.models.io import save
        from polymodal.recipes.presets import DEMO_MODEL

        torch.manual_seed(0)
        save(Aligner(replace(DEMO_MODEL, image_fit=fit)), path)
    return path


def tower_images_per_s(model: Any, folder: Path, batch_size: int) -> float:
    """The bare tower over the folder's images: preprocessing outside the clock, one pass per batch."""
    from polymodal.data.images import load_image
    from polymodal.embed import image_paths

    paths = image_paths([folder])
    spent = 0.0
    with torch.no_grad():
        model.encode_image(model.preprocess([load_image(paths[0])] * 2))  # builds the fused runner
        for i in range(0, len(paths), batch_size):
            x = model.preprocess([load_image(p) for p in paths[i : i + batch_size]])  # (B, 3, 224, 224)
            t = time.perf_counter()
            model.encode_image(x)
            spent += time.perf_counter() - t
    return len(paths) / spent


def cli_build(model_dir: Path, folder: Path, out: Path, batch_size: int) -> dict[str, Any]:
    """One ``polymodal index build`` process: wall seconds, peak RSS (MB) and its JSON report."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "polymodal", "index", "build", "--model", str(model_dir), "--out", str(out),
           "--images", str(folder), "--batch-size", str(batch_size), "--json", "--quiet"]
    # A small intermediate process starts the build and reaps it; its children's peak RSS is the build's.
    runner = ("import json, os, resource, subprocess, sys, time\n"
              "t = time.perf_counter()\n"
              "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
              "print(json.dumps({'rc': p.returncode, 'wall_s': time.perf_counter() - t, 'out': p.stdout,"
              " 'err': p.stderr[-2000:], 'peak_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n")
    got = json.loads(subprocess.run([sys.executable, "-c", runner, *cmd], capture_output=True, text=True,
                                    check=True).stdout)
    if got["rc"] != 0:
        raise SystemExit(f"index build failed: {got['err'].strip().splitlines()[-1:]}")
    report = json.loads(got["out"][got["out"].index("{"):])
    if report["embedded"] != report["count"]:  # a repeated file is embedded once: the rate would be inflated
        raise SystemExit(f"the build embedded {report['embedded']} of {report['count']} images; the benchmark needs all")
    return {"wall_s": got["wall_s"], "peak_rss_mb": got["peak_kb"] / 1024, "report": report}


def onnx_trunk(model: Any, path: str) -> Any:
    """A drop-in ``image_trunk`` (B, 3, H, W) -> (B, 1280) that runs the model's tower in ONNX Runtime."""
    import onnxruntime as ort

    class Pooled(torch.nn.Module):
        def __init__(self, tower: torch.nn.Module) -> None:
            super().__init__()
            self.tower = tower

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.tower.embed(x)  # type: ignore[operator]

    x = torch.randn(2, 3, model.config.image_size, model.config.image_size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # As bench_image_tower.py: the TorchScript-based exporter (dynamo needs onnxscript), opset 17.
        torch.onnx.export(Pooled(model.image_tower).eval(), (x,), path, input_names=["images"], opset_version=17,
                          dynamo=False, dynamic_axes={"images": {0: "batch"}})
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        err = float((torch.from_numpy(sess.run(None, {"images": x.numpy()})[0]) - model.image_trunk(x)).abs().max())
    if err > 1e-3:
        raise SystemExit(f"the ONNX export differs from the tower by {err}")
    return lambda t: torch.from_numpy(sess.run(None, {"images": t.numpy()})[0])


def pipeline_images_per_s(model: Any, folder: Path, out: Path, batch_size: int, **build: Any) -> float:
    """``update_index`` (what ``index build`` runs) in this process: N / its seconds."""
    from polymodal.search.ingest import BuildConfig, sources_from_images, update_index

    shutil.rmtree(out, ignore_errors=True)
    sources = sources_from_images([folder])
    rep = update_index(model, out, sources, sync=True, config=BuildConfig(batch_size=batch_size, **build))
    return len(sources) / rep.seconds


def throughput_line(model: Any, model_dir: Path, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The bare tower before and after one ``index build`` process over ``folder``, and their ratios."""
    tower = tower_images_per_s(model, folder, args.batch_size)
    run = cli_build(model_dir, folder, args.work / "index", args.batch_size)
    tower_after = tower_images_per_s(model, folder, args.batch_size)  # the machine's load may change
    tower_mean = (tower + tower_after) / 2
    n = run["report"]["count"]
    return {
        "benchmark": "index_build", "images": n,
        "image_mix": f"3/4 {args.photo_size[0]}x{args.photo_size[1]} JPEG, 1/4 256x256 PNG",
        "fit": args.fit, "batch_size": args.batch_size, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "tower_images_per_s": round(tower_mean, 1), "tower_before_after": [round(tower, 1), round(tower_after, 1)],
        "index_build_images_per_s": round(n / run["wall_s"], 1),
        "build_images_per_s": round(n / run["report"]["seconds"], 1),
        "ratio_end_to_end": round(n / run["wall_s"] / tower_mean, 3),
        "ratio_build": round(n / run["report"]["seconds"] / tower_mean, 3),
        "wall_s": round(run["wall_s"], 1), "startup_s": round(run["wall_s"] - run["report"]["seconds"], 2),
        "peak_rss_mb": round(run["peak_rss_mb"]),
    }


def onnx_line(model: Any, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """polymodal's pipeline in this process with its own trunk, then with the trunk in ONNX Runtime."""
    try:
        import onnxruntime
    except ImportError:
        return {"onnxruntime": "not installed"}
    ours = pipeline_images_per_s(model, folder, args.work / "index-ours", args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        model.image_trunk = onnx_trunk(model, os.path.join(tmp, "tower.onnx"))
        ort_ips = pipeline_images_per_s(model, folder, args.work / "index-ort", args.batch_size)
    del model.image_trunk  # back to the class's own trunk
    return {"onnxruntime": onnxruntime.__version__, "pipeline_images_per_s": round(ours, 1),
            "onnxruntime_pipeline_images_per_s": round(ort_ips, 1), "ratio_vs_onnxruntime": round(ours / ort_ips, 3)}


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, e.g. 2000x1500, got {text!r}") from None
    if w < 256 or h < 256:
        raise argparse.ArgumentTypeError(f"photos must be at least 256x256, got {text!r}")
    return w, h


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, nargs="+", default=[1000, 5000],
                    help="folder sizes of the throughput comparison, one JSON line each")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--photo-size", type=_size, default=(640, 480), metavar="WxH",
                    help="size of the JPEG photos (real photo folders are mostly 4000x3000-ish JPEGs)")
    ap.add_argument("--fit", choices=("pad", "crop"), default="pad",
                    help="the model's framing: pad (as polymodal demo's model) or crop (AlignerConfig's default)")
    ap.add_argument("--memory-sizes", type=int, nargs="*", default=[],
                    help="image counts for the peak-memory lines (e.g. 1000 4000 10000)")
    ap.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True,
                    help="also run the pipeline with the tower in ONNX Runtime (if installed)")
    ap.add_argument("--compare-workers", action="store_true",
                    help="also build with decoding inline and in worker processes instead of threads")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "polymodal-bench-index",
                    help="where the images and the model are kept between runs")
    args = ap.parse_args()
    from polymodal.models.io import load

    args.work.mkdir(parents=True, exist_ok=True)
    model_dir = model_folder(args.work, args.fit)
    model = load(model_dir)
    for i, count in enumerate(args.images):
        folder = image_folder(args.work, count, args.photo_size)
        line = throughput_line(model, model_dir, folder, args)
        if args.onnx and i == 0:
            line.update(onnx_line(model, folder, args))
        if args.compare_workers and i == 0:
            for name, build in (("threads_2", {"workers": 2}), ("sequential", {"workers": 0}),
                                ("processes_2", {"workers": 2, "worker_processes": True}),
                                ("threads_2_again", {"workers": 2})):
                line[f"pipeline_{name}_images_per_s"] = round(
                    pipeline_images_per_s(model, folder, args.work / "index-cmp", args.batch_size, **build), 1)
        line["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
        print(json.dumps(line), flush=True)
    first = None
    for size in args.memory_sizes:
        got = cli_build(model_dir, image_folder(args.work, size, args.photo_size), args.work / f"index-{size}", args.batch_size)
        first = first or got["peak_rss_mb"]
        print(json.dumps({"benchmark": "index_build_memory", "images": got["report"]["count"],
                          "peak_rss_mb": round(got["peak_rss_mb"]), "vs_first": round(got["peak_rss_mb"] / first, 3),
                          "wall_s": round(got["wall_s"], 1)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
