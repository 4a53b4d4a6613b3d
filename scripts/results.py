"""Recompute the headline figures of docs/ and compare them with ``docs/results.json`` (``make results``).

    .venv/bin/python scripts/results.py [--suite avclips] [--jobs 2] [--out runs/results] [--reuse] [--update]

Each suite trains and evaluates through the documented commands (``polymodal demo``, ``polymodal fuse
train/eval``, ``scripts/vision_language/flava_ablation.py`` on OpenMoji and with ``--pairs builtin:shapes``,
``caption_eval.py``, ``scripts/fusion_table.py --only vqa``, ``polymodal generate train`` with
``prompt_match_eval.py``) for the seeds ``docs/results.json`` names, one
CPU thread per run, ``--jobs`` runs at a time. A figure's value is the mean over its seeds; its standard
error is ``s / sqrt(k)`` over k seeds, or for a one-seed figure the sampling standard error its command
reports. A figure passes when

    |new - reference| <= 2 * sqrt(se_new^2 + se_ref^2 + floor^2) + 0.0005

where ``floor`` is the figure's resolution, one item of its test size n in one of k seeds,
``1 / (n sqrt(k))`` (so 1.000 ± 0 over three seeds still allows one error in 600), and 0.0005 is the docs'
rounding. The test sets are fixed, so the errors compared are the seeds' spread, not test-sample error. The script
prints one line per figure and exits 1 when any figure moved outside its error: a change that moves a
figure on purpose reruns the suite with ``--update``, which writes the new values into docs/results.json,
and updates the doc's table by hand (``tests/test_results.py`` checks each figure still appears in its doc).

Takes long: on 2 cores with ``--jobs 1`` the aligner, avclips and FLAVA suites took about 15 minutes
(warm feature cache) and avdigits about 8; caption runs took 1,110-1,232 s and VQA runs ~2,500 s each, three
side by side on 2 cores (2026-12-05); generate runs (10,000 steps) about 128 minutes each, three side by side;
flava-shapes runs (FLAVA pretrained on shapes scenes, ITM) about 3,300 s each, three side by side (2026-12-06);
not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results.json"
POLYMODAL = [sys.executable, "-m", "polymodal"]
ROUNDING = 0.0005
GENERATE_STEPS = 10_000  # the prompt-following recipe of docs/vision-language.md
FLAVA_SHAPES_TEXT_LENGTH = 24  # tokens: the longest shapes caption (3 shapes) is 18 words
FLAVA_SHAPES_EPOCHS = 20  # docs/flava.md: validation ITM still rose at the end of a 10-epoch pilot


@dataclass(frozen=True)
class Run:
    """One training-and-evaluation run of a suite: what it trains (``name``) under one seed."""

    suite: str
    name: str
    seed: int


def _sh(cmd: Sequence[str], log: Path) -> str:
    """Run ``cmd`` on one thread; its stdout is returned, its stderr goes to ``log``. A failure names the log."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as err:
        p = subprocess.run(list(cmd), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {p.returncode}); see {log}")
    return p.stdout


def _aligner(run: Run, out: Path, reuse: bool) -> dict[str, float]:
    """``polymodal demo``: zero-shot and retrieval on the four evaluation sets, with sampling standard errors."""
    folder = out / "aligner" / f"seed{run.seed}"
    if not (reuse and (folder / "metrics.json").exists()):
        _sh([*POLYMODAL, "demo", "--out", str(folder), "--seed", str(run.seed), "--quiet"], out / "logs" / f"aligner-{run.seed}.log")
    sets = json.loads((folder / "metrics.json").read_text())["eval_sets"]
    wanted = {"photos": ["zeroshot_label/top1", "text_retrieval_recall@1"],
              "twemoji": ["zeroshot_group/top1", "text_retrieval_recall@1"],
              "noto": ["zeroshot_group/top1", "text_retrieval_recall@1"],
              "openmoji": ["zeroshot_group/top1", "zeroshot_subgroup/top1", "text_retrieval_recall@1"]}
    got: dict[str, float] = {}
    for name, keys in wanted.items():
        m = sets[f"builtin:{name}"]["metrics"]
        for k in keys:
            got[f"aligner/demo/{name}/{k}"] = float(m[k])
            got[f"aligner/demo/{name}/{k}#se"] = float(m[f"{k}_se"])
    return got


def _fuse(data: str) -> Callable[[Run, Path, bool], dict[str, float]]:
    """``polymodal fuse train --preset NAME`` then ``fuse eval --json``: accuracy with all modalities and each missing."""

    def go(run: Run, out: Path, reuse: bool) -> dict[str, float]:
        folder = out / run.suite / f"{run.name}-seed{run.seed}"
        log = out / "logs" / f"{run.suite}-{run.name}-{run.seed}.log"
        if not (reuse and (folder / "config.json").exists()):
            _sh([*POLYMODAL, "fuse", "train", "--data", data, "--preset", run.name, "--seed", str(run.seed),
                 "--out", str(folder), "--quiet"], log)
        acc = json.loads(_sh([*POLYMODAL, "fuse", "eval", "--model", str(folder), "--json"], log.with_suffix(".eval.log")))
        return {f"{run.suite}/{run.name}/{k}": float(v) for k, v in acc["accuracy"].items()}

    return go


def _flava(pairs: str) -> Callable[[Run, Path, bool], dict[str, float]]:
    """One row of the FLAVA ablation (``--runs NAME --skip-vqa``) pretrained on ``pairs``: zero-shot (OpenMoji
    only) and ITM with hard and random negatives on the test pairs."""
    emoji = pairs == "builtin:openmoji"
    flags = [] if emoji else ["--pairs", pairs, "--max-text-length", str(FLAVA_SHAPES_TEXT_LENGTH),
                              "--pretrain-epochs", str(FLAVA_SHAPES_EPOCHS)]
    keys = ("zeroshot_test_top1", "itm_test_hard", "itm_test_random") if emoji else ("itm_test_hard", "itm_test_random")

    def go(run: Run, out: Path, reuse: bool) -> dict[str, float]:
        folder = out / run.suite / f"{run.name}-seed{run.seed}" if not emoji else out / "flava" / f"seed{run.seed}"
        if not (reuse and (folder / "results.json").exists()):
            _sh([sys.executable, "scripts/vision_language/flava_ablation.py", "--out", str(folder), "--runs", run.name,
                 *flags, "--skip-vqa", "--seed", str(run.seed)], out / "logs" / f"{run.suite}-{run.name}-{run.seed}.log")
        row = json.loads((folder / "results.json").read_text())["runs"][run.name]
        return {f"{run.suite}/{run.name}/{k}": float(row[k]) for k in keys}

    return go


def _caption(run: Run, out: Path, reuse: bool) -> dict[str, float]:
    """The captioner's recipe (60 epochs, greedy; selected on val in docs/vision-language.md): test CIDEr-D, BLEU-4."""
    folder = out / "caption" / f"seed{run.seed}"
    if not (reuse and (folder / "caption_metrics.json").exists()):
        _sh([sys.executable, "scripts/vision_language/caption_eval.py", "--out", str(folder), "--epochs", "60",
             "--decodings", "greedy", "--seed", str(run.seed), "--grids", str(out / "caption" / "grids.pt"),
             "--figure", str(folder / "cross_attention.png")], out / "logs" / f"caption-{run.seed}.log")
    table = json.loads((folder / "caption_metrics.json").read_text())["test"]
    row = next(v for k, v in table.items() if k.startswith("captioner"))
    return {f"caption/{run.name}/test/{k}": float(row[k]) for k in ("cider_d", "bleu4")}


def _vqa(run: Run, out: Path, reuse: bool) -> dict[str, float]:
    """Shapes VQA, the recipe with preset ``run.name`` (``scripts/fusion_table.py --only vqa``): test accuracy per question type."""
    folder = out / "vqa" / f"{run.name}-seed{run.seed}"
    if not (reuse and (folder / "vqa_results.json").exists()):
        _sh([sys.executable, "scripts/fusion_table.py", "--out", str(folder), "--only", "vqa", "--threads", "1",
             "--vqa-models", run.name, "--seed", str(run.seed)], out / "logs" / f"vqa-{run.name}-{run.seed}.log")
    test = json.loads((folder / "vqa_results.json").read_text())["models"][run.name]["test"]
    return {f"vqa/{run.name}/test/{k}": float(v) for k, v in test.items()}


def _generate(run: Run, out: Path, reuse: bool) -> dict[str, float]:
    """Text-to-image with ``--recolour`` (``GENERATE_STEPS``): prompt-match on the 18 colour-and-shape prompts, all and unseen."""
    folder = out / "generate" / f"{run.name}-seed{run.seed}"
    if not (reuse and (folder / "config.json").exists()):
        _sh([*POLYMODAL, "generate", "train", "--out", str(folder), "--steps", str(GENERATE_STEPS), "--recolour", "--seed",
             str(run.seed), "-q"], out / "logs" / f"generate-{run.name}-{run.seed}.log")
    got = json.loads(_sh([sys.executable, "scripts/vision_language/prompt_match_eval.py", str(folder), "--num", "16",
                          "--seed", "0"], out / "logs" / f"prompt-match-{run.name}-{run.seed}.log"))
    return {f"generate/{run.name}/prompt_match/{k}": float(got[k]) for k in ("both", "unseen_both")}


SUITES: dict[str, Callable[[Run, Path, bool], dict[str, float]]] = {
    "aligner": _aligner,
    "avclips": _fuse("builtin:avclips"),
    "avdigits": _fuse("builtin:avdigits"),
    "caption": _caption,
    "flava": _flava("builtin:openmoji"),
    "flava-shapes": _flava("builtin:shapes"),
    "generate": _generate,
    "vqa": _vqa,
}


def _runs(figures: list[dict[str, Any]], suites: set[str]) -> list[Run]:
    """The runs that produce ``figures`` of ``suites``: a figure id is ``suite/run/metric``, and one run of
    each (suite, run, seed) produces all of its metrics."""
    runs = {Run(f["id"].split("/")[0], f["id"].split("/")[1], s)
            for f in figures if f["id"].split("/")[0] in suites for s in f["seeds"]}
    return sorted(runs, key=lambda r: (r.suite, r.name, r.seed))


def summarise(values: Sequence[float], sampling_se: Sequence[float] = ()) -> tuple[float, float]:
    """Mean and standard error: ``s / sqrt(k)`` over k >= 2 seeds, else the run's own sampling error (0 if none)."""
    mean = statistics.fmean(values)
    if len(values) >= 2:
        return mean, statistics.stdev(values) / math.sqrt(len(values))
    return mean, float(sampling_se[0]) if sampling_se else 0.0


def tolerance(ref: dict[str, Any], se_new: float) -> float:
    """How far a recomputed mean may lie from ``ref`` (a docs/results.json figure) and still count as the same."""
    floor = 1.0 / (ref["n"] * math.sqrt(len(ref["seeds"]))) if ref.get("n") else 0.0
    return 2 * math.sqrt(se_new**2 + ref["se"] ** 2 + floor**2) + ROUNDING


def compare(figures: list[dict[str, Any]], measured: dict[str, tuple[float, float]]) -> list[dict[str, Any]]:
    """One row per figure that was measured: reference, new value, the allowed distance, and whether it held."""
    rows = []
    for ref in figures:
        if ref["id"] not in measured:
            continue
        mean, se = measured[ref["id"]]
        tol = tolerance(ref, se)
        rows.append({"id": ref["id"], "ref": ref["mean"], "ref_se": ref["se"], "new": mean, "new_se": se,
                     "tolerance": tol, "ok": abs(mean - ref["mean"]) <= tol})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="all", help=f"comma-separated subset of {sorted(SUITES)}, or all")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "results")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
    p.add_argument("--reuse", action="store_true", help="evaluate model folders under --out that exist instead of training")
    p.add_argument("--update", action="store_true", help="write the recomputed figures into docs/results.json")
    args = p.parse_args(argv)
    suites = set(SUITES) if args.suite == "all" else set(args.suite.split(","))
    if unknown := suites - set(SUITES):
        p.error(f"unknown suite(s) {sorted(unknown)}; known: {sorted(SUITES)}")
    doc = json.loads(RESULTS.read_text())
    runs = _runs(doc["figures"], suites)
    print(f"{len(runs)} runs over suites {sorted(suites)}, {args.jobs} at a time; logs in {args.out / 'logs'}",
          file=sys.stderr)

    def one(run: Run) -> dict[str, float]:
        got = SUITES[run.suite](run, args.out, args.reuse)
        print(f"done {run.suite}/{run.name} seed {run.seed}", file=sys.stderr)
        return got

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        per_run = dict(zip(runs, pool.map(one, runs)))
    measured: dict[str, tuple[float, float]] = {}
    per_seed: dict[str, list[float]] = {}
    for ref in doc["figures"]:
        found = [(r, got) for r, got in per_run.items() if r.seed in ref["seeds"] and ref["id"] in got]
        if found:
            per_seed[ref["id"]] = [got[ref["id"]] for _, got in found]
            measured[ref["id"]] = summarise(per_seed[ref["id"]],
                                            [got[ref["id"] + "#se"] for _, got in found if ref["id"] + "#se" in got])
    rows = compare(doc["figures"], measured)
    for r in rows:
        mark = "ok  " if r["ok"] else "MOVED"
        seeds = " / ".join(f"{v:.3f}" for v in per_seed[r["id"]])
        print(f"{mark} {r['id']:45s} ref {r['ref']:.3f} ± {r['ref_se']:.3f}  new {r['new']:.3f} ± {r['new_se']:.3f}"
              f" ({seeds})  |Δ| {abs(r['new'] - r['ref']):.3f} (allowed {r['tolerance']:.3f})")
    if args.update:
        for ref in doc["figures"]:
            if ref["id"] in measured:
                # 5 digits: the docs state 3, and 0.98148 stored as 0.9815 would read 0.982 (a rounding of a rounding)
                ref["mean"], ref["se"] = (round(x, 5) for x in measured[ref["id"]])
        RESULTS.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        print(f"updated {RESULTS}", file=sys.stderr)
        return 0
    moved = [r["id"] for r in rows if not r["ok"]]
    print(f"{len(rows) - len(moved)}/{len(rows)} figures within their error" + (f"; moved: {', '.join(moved)}" if moved else ""))
    return 1 if moved else 0


if __name__ == "__main__":
    sys.exit(main())
