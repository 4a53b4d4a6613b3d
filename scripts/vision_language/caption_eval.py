"""Train the OpenMoji captioner, select it on val, score it on test (the numbers of docs/vision-language.md).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/vision_language/caption_eval.py --aligner runs/demo --out runs/captioner

Captions (one reference per emoji, words of ``WordTokenizer`` lower-cased) are scored with BLEU-4 and CIDEr-D.
Model selection uses the val split only: one captioner is trained per ``--epochs`` candidate on the train
split, every decoding setting of the grid below is scored on val, and the (epochs, decoding) pair with the
best val CIDEr-D is the one reported on the 362 test emoji. The test split is decoded once, at the end.
Baselines: nearest-neighbour caption retrieval with the aligner (the train caption whose text embedding is
closest to the image embedding), the caption of the nearest train image in the captioner's own frozen
feature space (mean-pooled grid, cosine), and the most frequent train caption.
"""

from __future__ import annotations

import argparse
import json
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
from polymodal.eval.caption_metrics import bleu, cider_d
from polymodal.text import WordTokenizer

# Decoding settings tried on val: (name, beam size, length-penalty alpha, no-repeat n-gram size); beam 1 is greedy.
DECODINGS = [("greedy", 1, 0.0, 0)] + [
    (f"beam {k}, alpha {a}, no-repeat {n}", k, a, n) for k in (3, 5) for a in (0.0, 0.6, 1.2) for n in (0, 2)
]


def decode(model: Captioner, grids: Tensor, beam: int, alpha: float, no_repeat: int) -> list[str]:
    """Captions of ``grids`` with one decoding setting."""
    if beam == 1:
        return greedy_decode(model, grids, no_repeat_ngram_size=no_repeat).texts
    return beam_search(model, grids, beam_size=beam, alpha=alpha, no_repeat_ngram_size=no_repeat).texts


def scores(hyps: list[str], refs: list[list[str]]) -> dict[str, float]:
    """BLEU-4 and CIDEr-D of a corpus."""
    return {"bleu4": bleu(hyps, refs).bleu[3], "cider_d": cider_d(hyps, refs).score}


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
    ap.add_argument("--reuse", action="store_true", help="load OUT/epochsN folders (and their val scores) that exist instead of training")
    ap.add_argument("--figure", default="docs/vision-language/cross_attention.png")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    splits = {s: load_openmoji(s) for s in ("train", "val", "test")}
    cache = out / "grids.pt"
    t0 = time.time()
    if cache.is_file():
        grids = {k: v.float() for k, v in torch.load(cache).items()}
    else:
        grids = {s: extract_grids([r.image for r in recs]) for s, recs in splits.items()}
        torch.save({k: v.half() for k, v in grids.items()}, cache)  # fp16 halves the 600 MB cache
        grids = {k: v.half().float() for k, v in grids.items()}  # same values whether cached or not
    print(f"grids {[tuple(g.shape) for g in grids.values()]} in {time.time() - t0:.0f}s", flush=True)
    norm = WordTokenizer([])
    refs = {s: [[" ".join(norm.tokens(r.text))] for r in recs] for s, recs in splits.items()}
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
                base[s]["nearest train caption (aligner)"] = [
                    " ".join(norm.tokens(texts[i])) for i in sim.argmax(1).tolist()
                ]
    # The captioner's own (frozen) features as a retrieval key: cosine of the mean-pooled grids.
    pooled = {k: torch.nn.functional.normalize(v.mean((2, 3)), dim=1) for k, v in grids.items()}  # (N, 1280)
    for s in ("val", "test"):
        nearest = (pooled[s] @ pooled["train"].T).argmax(1).tolist()
        base[s]["nearest train image's caption (frozen tower features)"] = [
            " ".join(norm.tokens(train[i].text)) for i in nearest
        ]
    most = Counter(r.text for r in train).most_common(1)[0][0]
    for s in ("val", "test"):
        base[s][f"most frequent train caption ({most!r})"] = [" ".join(norm.tokens(most))] * len(splits[s])
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
                epochs=epochs, label_smoothing=args.label_smoothing,
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
        for dec in DECODINGS:
            sc = done.get(dec[0]) or scores(decode(model, grids["val"], *dec[1:]), refs["val"])
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
    rows[f"captioner ({epochs} epochs, {dec[0]}; selected on val)"] = decode(model, grids["test"], *dec[1:])
    if dec[1] != 1:
        rows[f"captioner ({epochs} epochs, greedy)"] = decode(model, grids["test"], 1, 0.0, 0)
    rows.update(base["test"])
    table = {}
    print("| test (362 emoji) | BLEU-4 | CIDEr-D |\n|---|---|---|")
    for name, hyps in rows.items():
        table[name] = scores(hyps, refs["test"])
        print(f"| {name} | {table[name]['bleu4']:.3f} | {table[name]['cider_d']:.3f} |")
    first = next(iter(rows))
    examples = [(test[i].text, rows[first][i], rows.get("nearest train caption (aligner)", [""] * len(test))[i])
                for i in range(0, len(test), 36)]
    for ref, hyp, nn in examples:
        print(f"  {ref!r} -> {hyp!r} (retrieval {nn!r})")
    log.update({"selected": {"epochs": epochs, "decoding": dec[0]}, "test": table, "examples": examples,
                "seconds": time.time() - t_all})
    (out / "caption_metrics.json").write_text(json.dumps(log, indent=1))
    idx = next(i for i, r in enumerate(test) if "heart" in r.text or "face" in r.text)
    d = beam_search(model, grids["test"][idx : idx + 1], beam_size=max(dec[1], 1), alpha=dec[2],
                    no_repeat_ngram_size=dec[3])
    plot_cross_attention(model, grids["test"][idx : idx + 1], test[idx].image, d.ids[0], args.figure)
    print("figure", args.figure, repr(test[idx].text), "->", repr(d.texts[0]))
    print(f"total {time.time() - t_all:.0f}s")


if __name__ == "__main__":
    main()
