"""Run every benchmark in this folder, each in its own process; print their JSON lines and save them.

    python benchmarks/run_all.py [--only NAME ...] [--out benchmarks/results.jsonl]

Each ``bench_*.py`` prints one or more JSON lines (each measured side by side with its peer in one run).
A benchmark that fails is reported as a JSON line with its error and does not stop the others.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=None, help="benchmark names, e.g. bench_audio")
    ap.add_argument("--out", default=str(HERE / "results.jsonl"))
    ap.add_argument("--timeout", type=int, default=1800)
    args = ap.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem in args.only]
    lines = []
    for script in scripts:
        t = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=args.timeout)
            got = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not got:
                got = [json.dumps({"benchmark": script.stem, "error": proc.stderr.strip().splitlines()[-1:] or ["no output"]})]
        except subprocess.TimeoutExpired:
            got = [json.dumps({"benchmark": script.stem, "error": f"timed out after {args.timeout} s"})]
        for line in got:
            print(line, flush=True)
        lines += got
        print(f"# {script.stem}: {time.perf_counter() - t:.0f} s", file=sys.stderr)
    Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
