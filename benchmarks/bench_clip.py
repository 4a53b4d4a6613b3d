"""CLIP training and inference throughput: polymodal's CLIP against OpenCLIP and Hugging Face, in one run.

The ``clip-bench`` preset (ViT 32 px / patch 4, width 192, 6 layers, 3 heads; causal text transformer,
context 32, width 192, 4 layers, 3 heads; joint space 128; GELU) is built three times with the same
architecture and vocabulary: ``polymodal.models.clip.CLIP``, ``open_clip.CLIP`` and
``transformers.CLIPModel``. Each is timed at batch 256 on 2 threads for

  - training: forward of both towers, symmetric InfoNCE, backward and one AdamW step (same optimiser
    settings for all three), samples (image-text pairs) per second;
  - inference: both towers under ``torch.inference_mode``, pairs per second,

in fp32 and under CPU bfloat16 autocast. Texts are full 32-token rows ending in EOT (the largest id, so
OpenCLIP's argmax pooling, Hugging Face's first-EOS pooling and polymodal's mask pooling read the same
position), so no model gains from shorter captions. Models are timed in interleaved rounds, so that load
from other processes hits all alike; samples/s is the median round.

Printed: ONE JSON line per precision with samples/s of each model, ``ratio = polymodal / faster peer``,
achieved GFLOP/s (analytic multiply-adds ×2 of the linear layers and attention products; training counts
3 × forward) and the fraction of a 2048³ fp32 matmul measured in the same run (the machine's roofline).
``*_gflops`` counts the architecture's standard FLOPs (what every implementation must deliver, the peers
execute all of them); ``*_executed_gflops`` counts what polymodal actually runs, whose last layers compute
only the pooled position (about 15 % fewer FLOPs, the same outputs).

OpenCLIP is installed in the benchmark's environment with ``pip install --no-deps open-clip-torch``
(plus ``ftfy``, which it imports at import time; ``regex`` is already a dependency of transformers). It
imports torchvision at import time although ``CLIP(...)`` does not use it, so this script hands it a
stand-in ``torchvision`` module (:func:`install_torchvision_stub`), injected into ``sys.modules`` here only.

Usage: python benchmarks/bench_clip.py [--rounds 5] [--precisions fp32,bf16] [--batch 256] [--threads 2]
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from polymodal.models.aligner import TextTrunk
from polymodal.models.build import load_preset
from polymodal.models.clip import CLIP, CLIPConfig
from polymodal.towers.text_transformer import text_flops
from polymodal.towers.vit import vit_flops

Step = Callable[[], None]


# ---------------------------------------------------------------------------------------------------- peers
def install_torchvision_stub() -> None:
    """Give ``import open_clip`` the torchvision names it imports at module level, as inert stand-ins.

    ``open_clip.transform`` and ``open_clip.utils`` import transforms and ``FrozenBatchNorm2d`` when the
    package is imported; ``open_clip.CLIP(...)`` never calls them. Calling a stand-in raises.
    """
    import importlib.util

    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return  # the real one is installed: use it
    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    ops = types.ModuleType("torchvision.ops")
    misc = types.ModuleType("torchvision.ops.misc")

    class _Unavailable:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("torchvision is a stand-in in bench_clip.py; transforms are not available")

    class InterpolationMode(enum.Enum):
        NEAREST = "nearest"
        BILINEAR = "bilinear"
        BICUBIC = "bicubic"

    for name in ("Normalize", "Compose", "RandomResizedCrop", "ToTensor", "Resize", "CenterCrop", "ColorJitter",
                 "Grayscale"):
        setattr(transforms, name, type(name, (_Unavailable,), {}))
    transforms.InterpolationMode = InterpolationMode  # type: ignore[attr-defined]
    transforms.functional = functional  # type: ignore[attr-defined]
    misc.FrozenBatchNorm2d = type("FrozenBatchNorm2d", (_Unavailable,), {})  # type: ignore[attr-defined]
    tv.transforms, tv.ops, ops.misc = transforms, ops, misc  # type: ignore[attr-defined]
    sys.modules.update({"torchvision": tv, "torchvision.transforms": transforms,
                        "torchvision.transforms.functional": functional, "torchvision.ops": ops,
                        "torchvision.ops.misc": misc})


def openclip_model(cfg: CLIPConfig) -> torch.nn.Module:
    import transformers  # noqa: F401  (imported first: it probes for torchvision and must see the real state)

    install_torchvision_stub()
    import open_clip

    v, t = cfg.vision, cfg.text
    return open_clip.CLIP(
        embed_dim=cfg.embed_dim,
        vision_cfg=dict(image_size=v.image_size, patch_size=v.patch_size, width=v.width, layers=v.layers,
                        head_width=v.width // v.heads, mlp_ratio=(v.mlp_dim or 4 * v.width) / v.width),
        text_cfg=dict(context_length=t.context_length, vocab_size=t.vocab_size, width=t.width, heads=t.heads,
                      layers=t.layers, mlp_ratio=(t.mlp_dim or 4 * t.width) / t.width),
        quick_gelu=cfg.vision.act == "quick_gelu",
    )


def hf_model(cfg: CLIPConfig) -> torch.nn.Module:
    from transformers import CLIPConfig as HFConfig
    from transformers import CLIPModel

    v, t = cfg.vision, cfg.text
    hf = HFConfig(
        text_config=dict(vocab_size=t.vocab_size, hidden_size=t.width, intermediate_size=t.mlp_dim or 4 * t.width,
                         num_hidden_layers=t.layers, num_attention_heads=t.heads,
                         max_position_embeddings=t.context_length, hidden_act=t.act, eos_token_id=t.vocab_size - 1,
                         bos_token_id=t.vocab_size - 2, pad_token_id=0),
        vision_config=dict(hidden_size=v.width, intermediate_size=v.mlp_dim or 4 * v.width,
                           num_hidden_layers=v.layers, num_attention_heads=v.heads, image_size=v.image_size,
                           patch_size=v.patch_size, hidden_act=v.act),
        projection_dim=cfg.embed_dim,
    )
    return CLIPModel(hf)


# ---------------------------------------------------------------------------------------------------- process
def tune_malloc() -> bool:
    """Keep freed large blocks in glibc's heap instead of returning them to the kernel.

    By default glibc serves allocations over 32 MB (the dynamic mmap threshold's ceiling) with fresh
    ``mmap`` pages and unmaps them on free, so every large activation (a (256·65, 768) float32 MLP
    hidden is 51 MB) pays a page fault per 4 KB page on first touch, on every step. That costs a third
    of an MLP matmul and three quarters of a GELU here. Raising the mmap and trim thresholds lets the heap
    reuse those pages. Process-wide: applied once, before any model is built, so all three models run
    under the same allocator. Returns whether it was applied (glibc only).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        return all(libc.mallopt(opt, val) == 1 for opt, val in (
            (m_mmap_threshold, 1 << 30), (m_trim_threshold, (1 << 31) - 1), (m_top_pad, 256 << 20)))
    except (OSError, AttributeError):
        return False


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------------------------------------- steps
def _loss(img: torch.Tensor, txt: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    img, txt = F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1)
    logits = scale.float().clamp(max=4.6052).exp() * img @ txt.T  # (B, B)
    target = torch.arange(len(img))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def make_steps(name: str, model: torch.nn.Module, x: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor,
               bf16: bool) -> tuple[Step, Step]:
    """(train step, inference step) closures for one model."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    if name == "polymodal":
        assert isinstance(model, CLIP)
        model.config.autocast_bf16 = bf16  # applied inside the towers
        trunk = TextTrunk(ids, mask)

        def both() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return (model.image_features(x, normalize=False), model.text_features(trunk, normalize=False),
                    model.logit_scale)
    elif name == "openclip":
        def both() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            with autocast:
                return model.encode_image(x), model.encode_text(ids), model.logit_scale  # type: ignore[operator]
    else:
        def pooled(out: Any) -> torch.Tensor:  # a tensor before transformers 5, an output object since
            return out if isinstance(out, torch.Tensor) else out.pooler_output

        def both() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            with autocast:
                img = pooled(model.get_image_features(pixel_values=x))  # type: ignore[operator]
                txt = pooled(model.get_text_features(input_ids=ids, attention_mask=mask))  # type: ignore[operator]
            return img, txt, model.logit_scale  # type: ignore[return-value]

    def train() -> None:
        model.train()
        img, txt, scale = both()
        loss = _loss(img, txt, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer() -> None:
        model.eval()
        with torch.inference_mode():
            both()

    return train, infer


def timed(fn: Step, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def matmul_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 4) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    best = min(timed(lambda: a @ b, 1) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def forward_flops(cfg: CLIPConfig) -> int:
    """Forward multiply-adds ×2 per image-text pair of the architecture, as every implementation of it
    must deliver them (the standard count: every layer at every position)."""
    proj = 2 * (cfg.vision.width + cfg.text.width) * cfg.embed_dim
    return vit_flops(cfg.vision) + text_flops(cfg.text) + proj


def skipped_flops(cfg: CLIPConfig) -> int:
    """Forward multiply-adds ×2 per pair that polymodal does not execute: its last layers run only at the
    pooled position (class token, EOT), other positions contribute keys and values alone."""
    total = 0
    for t, d, hidden in ((cfg.vision.num_tokens, cfg.vision.width, cfg.vision.mlp_dim or 4 * cfg.vision.width),
                         (cfg.text.context_length, cfg.text.width, cfg.text.mlp_dim or 4 * cfg.text.width)):
        full = t * (4 * d * d + 2 * d * hidden) + 2 * t * t * d
        pooled = t * 2 * d * d + (2 * d * d + 2 * d * hidden) + 2 * t * d
        total += 2 * (full - pooled)
    return total


# ---------------------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2, help="steps per model per round")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--peers", default="openclip,hf")
    ap.add_argument("--no-malloc-tune", action="store_true", help="leave glibc's allocator at its defaults")
    args = ap.parse_args()
    malloc_tuned = False if args.no_malloc_tune else tune_malloc()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = load_preset("clip-bench")
    assert isinstance(cfg, CLIPConfig)
    b, t = args.batch, cfg.text
    x = torch.randn(b, 3, cfg.vision.image_size, cfg.vision.image_size)
    ids = torch.randint(4, t.vocab_size - 2, (b, t.context_length))
    ids[:, 0], ids[:, -1] = t.vocab_size - 2, t.vocab_size - 1  # BOS ... EOT, EOT the largest id
    mask = torch.ones_like(ids)

    builders: dict[str, Callable[[], torch.nn.Module]] = {"polymodal": lambda: CLIP(cfg)}
    peers = [p for p in args.peers.split(",") if p]
    if "openclip" in peers:
        builders["openclip"] = lambda: openclip_model(cfg)
    if "hf" in peers:
        builders["hf"] = lambda: hf_model(cfg)
    flops, executed = forward_flops(cfg), forward_flops(cfg) - skipped_flops(cfg)

    errors: dict[str, str] = {}
    for precision in args.precisions.split(","):
        bf16 = precision == "bf16"
        if bf16:
            # Without native bf16 (AVX512-BF16 or AMX) oneDNN falls back to a reference kernel hundreds of
            # times slower than fp32: report that and skip, rather than time it for an hour.
            speed16, speed32 = matmul_gflops(torch.bfloat16, n=512, reps=2), matmul_gflops(torch.float32, n=512)
            if speed16 < 0.25 * speed32:
                print(json.dumps({"benchmark": "bench_clip", "precision": "bf16", "skipped": (
                    f"no native bf16 matmul on this CPU: {speed16:.1f} GFLOP/s bf16 vs {speed32:.1f} fp32 (512^3)"),
                    "cpu": cpu_name(), "torch": torch.__version__}), flush=True)
                continue
        steps: dict[str, tuple[Step, Step]] = {}
        for name, build in builders.items():
            torch.manual_seed(0)
            try:
                steps[name] = make_steps(name, build(), x, ids, mask, bf16)
                for fn in steps[name]:
                    fn()  # warm-up: allocator, oneDNN primitives, optimiser state
            except Exception as e:  # a peer that cannot be built is reported, not fatal
                if name == "polymodal":
                    raise
                steps.pop(name, None)
                errors[name] = f"{type(e).__name__}: {e}"[:300]
        roofline = matmul_gflops(torch.float32)
        times: dict[str, dict[str, list[float]]] = {n: {"train": [], "infer": []} for n in steps}
        for _ in range(args.rounds):
            for name, (train, infer) in steps.items():
                times[name]["train"].append(timed(train, args.steps))
                times[name]["infer"].append(timed(infer, args.steps))
        roofline = max(roofline, matmul_gflops(torch.float32))
        result: dict[str, Any] = {
            "benchmark": "bench_clip", "precision": precision, "batch": b, "threads": args.threads,
            "preset": "clip-bench", "rounds": args.rounds, "steps_per_round": args.steps,
        }
        for phase, mult in (("train", 3), ("infer", 1)):
            sps = {n: b / statistics.median(times[n][phase]) for n in steps}
            best = {n: b / min(times[n][phase]) for n in steps}
            peer = max((sps[n] for n in sps if n != "polymodal"), default=float("nan"))
            gflops = mult * flops * sps["polymodal"] / 1e9
            gflops_run = mult * executed * sps["polymodal"] / 1e9
            result[f"{phase}_samples_per_s"] = {n: round(v, 1) for n, v in sps.items()}
            result[f"{phase}_best_samples_per_s"] = {n: round(v, 1) for n, v in best.items()}
            result[f"{phase}_ratio_vs_faster_peer"] = round(sps["polymodal"] / peer, 3)
            result[f"{phase}_gflops"] = round(gflops, 1)
            result[f"{phase}_roofline_fraction"] = round(gflops / roofline, 3)
            result[f"{phase}_executed_gflops"] = round(gflops_run, 1)
            result[f"{phase}_executed_roofline_fraction"] = round(gflops_run / roofline, 3)
        result.update({
            "matmul_2048_fp32_gflops": round(roofline, 1),
            "forward_gflop_per_sample": round(flops / 1e9, 4),
            "polymodal_executed_forward_gflop_per_sample": round(executed / 1e9, 4),
            "loadavg_1min": round(os.getloadavg()[0], 2),
            "peer_errors": errors, "malloc_tuned": malloc_tuned, "torch": torch.__version__, "cpu": cpu_name(),
        })
        if bf16:
            result["matmul_2048_bf16_gflops"] = round(matmul_gflops(torch.bfloat16), 1)
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
