"""Image-tower throughput: our EfficientNet-Lite0 variants against ONNX Runtime, in one run.

Prints ONE JSON line. Images/s at 224 px, batch 32, 2 threads, for
  - eager_no_grad, inference_mode, channels_last, fused_bn, fused_bn_channels_last (plain PyTorch),
  - bf16_autocast (fused, channels-last) when the CPU has native bf16, else listed as skipped,
  - runner: ``EfficientNetLite0Runner`` (folded BN, oneDNN conv+ReLU6/add fusion on prepacked
    weights, 2 single-threaded workers over chunks of 4 images),
and the same network exported with ``torch.onnx.export`` and run by ONNX Runtime with 2 intra-op
threads (all graph optimisations on). Variants are timed in interleaved rounds so that load from other
processes hits all of them alike; images/s uses the median round, ``best_*`` the fastest.
``ratio = ours_best / onnxruntime`` (median-based). Preprocessing is not timed.

Usage: python benchmarks/bench_image_tower.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable

import torch

from polymodal.towers.efficientnet import EfficientNetLite0
from polymodal.towers.efficientnet_runner import EfficientNetLite0Runner

BATCH, SIZE, THREADS = 32, 224, 2


def onnxruntime_session(model: EfficientNetLite0, x: torch.Tensor, path: str) -> Callable[[], object]:
    import onnxruntime as ort

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter: the dynamo one needs onnxscript, which is not a dependency.
        torch.onnx.export(model, (x,), path, input_names=["images"], opset_version=17, dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feed = {"images": x.numpy()}
    return lambda: sess.run(None, feed)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    model = EfficientNetLite0.pretrained().eval()
    fused = model.inference_optimized()
    model_cl = EfficientNetLite0.pretrained().eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    fused_cl = model.inference_optimized().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    runner = EfficientNetLite0Runner(model, threads=THREADS, chunk_size=4, image_size=SIZE)

    def under(ctx: Callable[[], object], fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            with ctx():  # type: ignore[attr-defined]
                return fn()

        return run

    variants: dict[str, Callable[[], object]] = {
        "eager_no_grad": under(torch.no_grad, lambda: model(x)),
        "inference_mode": under(torch.inference_mode, lambda: model(x)),
        "channels_last": under(torch.inference_mode, lambda: model_cl(x_cl)),
        "fused_bn": under(torch.inference_mode, lambda: fused(x)),
        "fused_bn_channels_last": under(torch.inference_mode, lambda: fused_cl(x_cl)),
    }
    skipped = {}
    if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():

        def bf16() -> torch.Tensor:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return fused_cl(x_cl).float()

        variants["bf16_autocast"] = bf16
    else:
        skipped["bf16_autocast"] = "CPU has no native bf16 (avx512_bf16/amx); emulation is slower than fp32"
    variants["runner"] = lambda: runner.logits(x)
    ours = list(variants)

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        variants["onnxruntime"] = onnxruntime_session(model, x, os.path.join(tmp, "effnet_lite0.onnx"))
        export_s = time.perf_counter() - t0

        with torch.inference_mode():
            reference = model(x)
        max_abs_diff = {}
        for name, fn in variants.items():  # warm-up (oneDNN primitive creation, ORT arenas) + check
            out = torch.as_tensor(fn())
            max_abs_diff[name] = float((out.float() - reference).abs().max())

        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, fn in variants.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    runner.close()

    def ips(seconds: float) -> float:
        return round(BATCH / seconds, 2)

    results = {
        name: {
            "images_per_s": ips(statistics.median(ts)),
            "best_images_per_s": ips(min(ts)),
            "max_abs_logit_diff": float(f"{max_abs_diff[name]:.2e}"),
        }
        for name, ts in times.items()
    }
    best = max(ours, key=lambda n: results[n]["images_per_s"])
    ort_ips = results["onnxruntime"]["images_per_s"]
    import onnxruntime

    print(
        json.dumps(
            {
                "benchmark": "image_tower_efficientnet_lite0",
                "image_size": SIZE,
                "batch": BATCH,
                "threads": THREADS,
                "rounds": args.rounds,
                "torch": torch.__version__,
                "onnxruntime": onnxruntime.__version__,
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "load_avg_1m": round(os.getloadavg()[0], 2),
                "onnx_export_s": round(export_s, 1),
                "variants": results,
                "skipped": skipped,
                "ours_best": best,
                "ours_best_images_per_s": results[best]["images_per_s"],
                "onnxruntime_images_per_s": ort_ips,
                "ratio": round(results[best]["images_per_s"] / ort_ips, 3),
                "ratio_best_rounds": round(
                    results[best]["best_images_per_s"] / results["onnxruntime"]["best_images_per_s"], 3
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
