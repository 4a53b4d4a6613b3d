"""Data-parallel training step on 1 and 2 CPU processes (gloo, 1 thread each): samples/s and comm share.

    python benchmarks/bench_ddp.py [--batch 256] [--steps 20]

The step is the trainer's exact global-batch step (train/global_batch.py) on cached trunk features of
the aligner's shapes (image 1280 -> 512, text 384 -> 512 heads with a hidden layer each), then the
gradient all-reduce and AdamW. It prints one JSON line: samples/s per process count, the speed-up, and
the share of step time spent in the feature all-gathers (forward; it includes waiting for the slower
rank) and in the gradient all-reduce. On a 2-core machine the two processes share the cores with
everything else, so this shows overheads, not scaling; real speed-ups need more cores or machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class _Heads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = type("C", (), {"embed_dim": 512, "max_logit_scale": 4.6})()
        self.img = nn.Sequential(nn.Linear(1280, 1024), nn.GELU(), nn.Linear(1024, 512))
        self.txt = nn.Sequential(nn.Linear(384, 1024), nn.GELU(), nn.Linear(1024, 512))
        self.logit_scale = nn.Parameter(torch.tensor(2.66))

    def image_features(self, h):
        return F.normalize(self.img(h), dim=-1)

    def text_features(self, t):
        return F.normalize(self.txt(t.hidden), dim=-1)


def worker(batch: int, steps: int, out: str) -> None:
    from polymodal.core import distributed
    from polymodal.core import distributed as ddp
    from polymodal.train import global_batch

    with ddp.distributed_session() as env:
        torch.manual_seed(0)
        model = _Heads()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-3)
        timers = {"gather": 0.0, "allreduce": 0.0}
        inner = distributed.all_gather_with_grad

        def timed_gather(x, *, name="tensor"):
            t = time.perf_counter()
            y = inner(x, name=name)
            timers["gather"] += time.perf_counter() - t
            return y

        distributed.all_gather_with_grad = timed_gather  # ddp.gather_rows calls it through the module
        g = torch.Generator().manual_seed(1)
        h_img = torch.randn(batch, 1280, generator=g)
        h_txt = [torch.randn(384, generator=g) for _ in range(batch)]
        sl = ddp.rank_slices(batch, env.world_size)
        counts = [s.stop - s.start for s in sl]
        mine = sl[env.rank]
        total = 0.0
        for step in range(steps + 3):
            if step == 3:  # warm-up done
                ddp.barrier()
                timers = {"gather": 0.0, "allreduce": 0.0}
                t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            global_batch.exact_step_backward(model, h_img[mine], h_txt[mine], counts=counts, accum_steps=1,
                                             local_loss=True)
            t = time.perf_counter()
            ddp.all_reduce_grads(params)
            timers["allreduce"] += time.perf_counter() - t
            opt.step()
        ddp.barrier()
        total = time.perf_counter() - t0
        if ddp.is_main():
            Path(out).write_text(json.dumps({"seconds": total, **timers}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.batch, args.steps, args.worker)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result: dict = {"benchmark": "ddp_train_step_1_vs_2_processes",
                    "config": {"global_batch": args.batch, "steps": args.steps, "threads_per_process": 1,
                               "backend": "gloo", "cpus": os.cpu_count()}}
    for n in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / "r.json")
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
                   __file__, "--batch", str(args.batch), "--steps", str(args.steps), "--worker", out]
            subprocess.run(cmd, check=True, env=env, capture_output=True, text=True, timeout=600)
            r = json.loads(Path(out).read_text())
        result[f"samples_per_s_{n}proc"] = round(args.batch * args.steps / r["seconds"], 1)
        result[f"step_ms_{n}proc"] = round(1000 * r["seconds"] / args.steps, 2)
        if n == 2:
            result["allgather_share_2proc"] = round(r["gather"] / r["seconds"], 3)
            result["grad_allreduce_share_2proc"] = round(r["allreduce"] / r["seconds"], 3)
    result["speedup_2_vs_1"] = round(result["samples_per_s_2proc"] / result["samples_per_s_1proc"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
