"""Train the OpenMoji captioner, select it on val, score it on test (the numbers of docs/vision-language.md).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/vision_language/caption_eval.py --aligner runs/demo --out runs/captioner
    # the selected recipe again with other seeds (the grids cache is shared):
    OMP_NUM_THREADS=1 .venv/bin/python scripts/vision_language/caption_eval.py --aligner runs/demo \
        --out runs/captioner-seed1 --grids runs/captioner/grids.pt --epochs 60 --decodings greedy --seed 1

Captions (one reference per emoji) are normalised as the COCO caption evaluation does
(:func:`~polymodal.eval.caption_metrics.coco_tokenize`: PTB tokens, lower case, punctuation removed) and
scored with BLEU-4 and CIDEr-D. Model selection uses the val split only: one captioner is trained per
``--epochs`` candidate on the train split, every decoding setting of the grid below is scored on val, and the
(epochs, decoding) pair with the best val CIDEr-D is the one reported on the 362 test emoji. The test split
is decoded once, at the end. Baselines: nearest-neighbour caption retrieval with the aligner (the train
caption whose text embedding is closest to the image embedding), the caption of the nearest train image in
the captioner's own frozen feature space (mean-pooled grid, cosine), and the most frequent train caption.
Each test figure gets a 95 % bootstrap interval over the test images (1,000 resamples), and the
captioner's lead over each baseline a paired one.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

import torch
from torch import Tensor

import polymodal
from polymodal.caption import (
    Captioner,
    CaptionTrainConfig,
    beam_search,
    extract_grids,
    greedy_decode,
    train_captioner,
)
from polymodal.caption.attention_plot import plot_cross_attention
from polymodal.data.openmoji import load_openmoji
from polymodal.eval.caption_metrics import Interval, bleu, bootstrap, cider_d, coco_tokenize

# Decoding settings tried on val: (name, beam size, length-penalty alpha, no-repeat n-gram size); beam 1 is greedy.
DECODINGS = [("greedy", 1, 0.0, 0)] + [
    (f"beam {k}, alpha {a}, no-repeat {n}", k, a, n) for k in (3, 5) for a in (0.0, 0.6, 1.2) for n in (0, 2)
]


def decode(model: Captioner, grids: Tensor, beam: int, alpha: float, no_repeat: int) -> list[str]:
    """Captions of ``grids`` with one decoding setting."""
    if beam == 1:
        return greedy_decode(model, grids, no_repeat_ngram_size=no_repeat).texts
    return beam_search(model, grids, beam_size=beam, alpha=alpha, no_repeat_ngram_size=no_repeat).texts


METRICS = {"bleu4": lambda h, r: bleu(h, r).bleu[3], "cider_d": lambda h, r: cider_d(h, r).score}


def scores(hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    """BLEU-4 and CIDEr-D of a corpus (captions already normalised)."""
    return {name: metric(hyps, refs) for name, metric in METRICS.items()}


def intervals(hyps: list[str], refs: list[list[str]], baseline: list[str] | None = None) -> dict[str, Interval]:
    """95 % bootstrap intervals of BLEU-4 and CIDEr-D (of the lead over ``baseline`` if given), seed 0."""
    return {name: bootstrap(metric, hyps, refs, baseline=baseline, samples=1000, seed=0)
            for name, metric in METRICS.items()}


def norm(captions: list[str]) -> list[str]:
    """Decoded captions normalised as the references are."""
    return [coco_tokenize(c) for c in captions]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--aligner", default=None, help="aligner folder for the retrieval baseline (runs/demo)")
    ap.add_argument("--out", default="runs/captioner")
    ap.add_argument("--epochs", default="15,30,60", help="comma-separated candidates, chosen on val")
    ap.add_argument("--label-smoothing", type=float, default=0.1)
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="initialisation and shuffling seed of the captioners")
    ap.add_argument("--grids", default=None, help="cache of the frozen image grids (default: OUT/grids.pt)")
    ap.add_argument("--decodings", choices=("all", "greedy"), default="all",
                    help="decoding settings tried on val: the whole grid, or greedy only")
    ap.add_argument("--reuse", action="store_true", help="load OUT/epochsN folders (and their val scores) that exist instead of training")
    ap.add_argument("--figure", default="docs/vision-language/cross_attention.png")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    splits = {s: load_openmoji(s) for s in ("train", "val", "test")}
    cache = Path(args.grids) if args.grids else out / "grids.pt"
    t0 = time.time()
    if cache.is_file():
        grids = {k: v.float() for k, v in torch.load(cache).items()}
    else:
        grids = {s: extract_grids([r.image for r in recs]) for s, recs in splits.items()}
        part = cache.with_name(f"{cache.name}.{os.getpid()}.part")  # runs sharing the cache never read half a file
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.half() for k, v in grids.items()}, part)  # fp16 halves the 600 MB cache
        os.replace(part, cache)
        grids = {k: v.half().float() for k, v in grids.items()}  # same values whether cached or not
    print(f"grids {[tuple(g.shape) for g in grids.values()]} in {time.time() - t0:.0f}s", flush=True)
    refs = {s: [[coco_tokenize(r.text)] for r in recs] for s, recs in splits.items()}
    train = splits["train"]

    # ---- baselines (nothing to select), on val and test
    test = splits["test"]
    base: dict[str, dict[str, list[str]]] = {"val": {}, "test": {}}
    if args.aligner:
        aligner = polymodal.load(args.aligner, kinds={"aligner", "clip", "hf-clip"}, what="the aligner baseline")
        texts = sorted({r.text for r in train})
        with torch.no_grad():
            text_emb = aligner.encode_text(texts)  # (N_texts, D), L2-normalised
            for s in ("val", "test"):
                sim = aligner.encode_image([r.image for r in splits[s]]) @ text_emb.T  # (N, N_texts)
                base[s]["nearest train caption (aligner)"] = [coco_tokenize(texts[i]) for i in sim.argmax(1).tolist()]
    # The captioner's own (frozen) features as a retrieval key: cosine of the mean-pooled grids.
    pooled = {k: torch.nn.functional.normalize(v.mean((2, 3)), dim=1) for k, v in grids.items()}  # (N, 1280)
    for s in ("val", "test"):
        nearest = (pooled[s] @ pooled["train"].T).argmax(1).tolist()
        base[s]["nearest train image's caption (frozen tower features)"] = [coco_tokenize(train[i].text) for i in nearest]
    most = Counter(r.text for r in train).most_common(1)[0][0]
    for s in ("val", "test"):
        base[s][f"most frequent train caption ({most!r})"] = [coco_tokenize(most)] * len(splits[s])
    for name, hyps in base["val"].items():
        v = scores(hyps, refs["val"])
        print(f"  val | baseline | {name} | BLEU-4 {v['bleu4']:.3f} | CIDEr-D {v['cider_d']:.3f}", flush=True)

    # ---- model selection on val
    log: dict[str, object] = {"val": {}}
    best: tuple[float, int, tuple[str, int, float, int]] | None = None
    for epochs in [int(e) for e in args.epochs.split(",")]:
        folder = out / f"epochs{epochs}"
        if args.reuse and folder.is_dir():
            model = polymodal.load(folder, kinds={"captioner"}, what="caption_eval")
        else:
            cfg = CaptionTrainConfig(
                epochs=epochs, label_smoothing=args.label_smoothing, seed=args.seed,
                model={"dim": args.dim, "heads": 4, "depth": args.depth, "max_length": 16, "dropout": args.dropout},
            )
            t0 = time.time()
            result = train_captioner(grids["train"], [r.text for r in train], cfg)
            h = result.history
            print(f"epochs {epochs}: trained in {time.time() - t0:.0f}s, loss {h[0]['loss']:.3f} -> {h[-1]['loss']:.3f}",
                  flush=True)
            model = result.model
            polymodal.save(model, folder, extra={"history": h})
        t0 = time.time()
        cached_val = folder / "val_scores.json"
        done = json.loads(cached_val.read_text()) if args.reuse and cached_val.is_file() else {}
        for dec in DECODINGS if args.decodings == "all" else DECODINGS[:1]:
            sc = done.get(dec[0]) or scores(norm(decode(model, grids["val"], *dec[1:])), refs["val"])
            done[dec[0]] = sc
            log["val"][f"{epochs} epochs, {dec[0]}"] = sc  # type: ignore[index]
            print(f"  val | {epochs} epochs | {dec[0]} | BLEU-4 {sc['bleu4']:.3f} | CIDEr-D {sc['cider_d']:.3f}",
                  flush=True)
            if best is None or sc["cider_d"] > best[0]:
                best = (sc["cider_d"], epochs, dec)
        cached_val.write_text(json.dumps(done, indent=1))
        print(f"  decoded val in {time.time() - t0:.0f}s", flush=True)
    assert best is not None
    _, epochs, dec = best
    print(f"selected on val: {epochs} epochs, {dec[0]} (val CIDEr-D {best[0]:.3f})", flush=True)
    model = polymodal.load(out / f"epochs{epochs}")

    # ---- test, once, for the selected model and the baselines
    rows: dict[str, list[str]] = {}
    rows[f"captioner ({epochs} epochs, {dec[0]}; selected on val)"] = norm(decode(model, grids["test"], *dec[1:]))
    if dec[1] != 1:
        rows[f"captioner ({epochs} epochs, greedy)"] = norm(decode(model, grids["test"], 1, 0.0, 0))
    rows.update(base["test"])
    table: dict[str, dict[str, object]] = {}
    first = next(iter(rows))
    print("| test (362 emoji), 95 % bootstrap interval | BLEU-4 | CIDEr-D |\n|---|---|---|")
    for name, hyps in rows.items():
        ci = intervals(hyps, refs["test"])
        table[name] = {**{k: v.estimate for k, v in ci.items()}, **{f"{k}_ci": [v.low, v.high] for k, v in ci.items()}}
        print(f"| {name} | {ci['bleu4']} | {ci['cider_d']} |")
        if name != first:  # the captioner's lead over this row, on the same resamples
            lead = intervals(rows[first], refs["test"], baseline=hyps)
            table[name]["lead"] = {k: {"estimate": v.estimate, "ci": [v.low, v.high], "p_lead": v.above_zero}
                                   for k, v in lead.items()}
            print(f"|   captioner's lead | {lead['bleu4']} (ahead in {lead['bleu4'].above_zero:.0%}) | "
                  f"{lead['cider_d']} (ahead in {lead['cider_d'].above_zero:.0%}) |")
    examples = [(test[i].text, rows[first][i], rows.get("nearest train caption (aligner)", [""] * len(test))[i])
                for i in range(0, len(test), 36)]
    for ref, hyp, nn in examples:
        print(f"  {ref!r} -> {hyp!r} (retrieval {nn!r})")
    log.update({"selected": {"epochs": epochs, "decoding": dec[0]}, "seed": args.seed, "test": table,
                "examples": examples, "seconds": time.time() - t_all})
    (out / "caption_metrics.json").write_text(json.dumps(log, indent=1))
    idx = next(i for i, r in enumerate(test) if "heart" in r.text or "face" in r.text)
    d = beam_search(model, grids["test"][idx : idx + 1], beam_size=max(dec[1], 1), alpha=dec[2],
                    no_repeat_ngram_size=dec[3])
    plot_cross_attention(model, grids["test"][idx : idx + 1], test[idx].image, d.ids[0], args.figure)
    print("figure", args.figure, repr(test[idx].text), "->", repr(d.texts[0]))
    print(f"total {time.time() - t_all:.0f}s")


if __name__ == "__main__":
    main()
