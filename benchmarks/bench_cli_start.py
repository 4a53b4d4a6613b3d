"""Start-up: ``polymodal --help`` against ``python -c "import torch"`` (#18: at most 0.25x).

    python benchmarks/bench_cli_start.py [--repeats 11]

Both are fresh interpreter processes of this Python, run alternately (so a change in machine load hits
both alike) after one warm-up run each (the OS file cache). Prints one JSON line: the median wall time of
each, and their ratio. The CLI is run from this checkout's ``src`` (``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
COMMANDS = {
    "help_s": [sys.executable, "-m", "polymodal", "--help"],
    "import_torch_s": [sys.executable, "-c", "import torch"],
}


def wall(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=11)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for cmd in COMMANDS.values():
        wall(cmd, env)  # warm-up
    for _ in range(args.repeats):
        for name, cmd in COMMANDS.items():
            times[name].append(wall(cmd, env))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "benchmark": "bench_cli_start",
        "help_s": round(med["help_s"], 4),
        "import_torch_s": round(med["import_torch_s"], 4),
        "ratio": round(med["help_s"] / med["import_torch_s"], 3),
        "target_ratio_max": 0.25,
        "repeats": args.repeats,
        "load_average": round(os.getloadavg()[0], 1),
    }))


if __name__ == "__main__":
    main()
