"""Train the OpenMoji captioner and write the numbers of docs/vision-language.md (run once).

    .venv/bin/python scripts/vision_language/caption_eval.py --aligner ALIGNER_DIR --out runs/captioner

Test captions (362 OpenMoji test emoji, one reference each, words of WordTokenizer lower-cased) scored with
BLEU-4 and CIDEr-D for: the captioner (beam 3), nearest-neighbour caption retrieval with the aligner (the
train caption closest to the test image), and the most frequent train caption.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import torch

from polymodal.caption import (
    CaptionTrainConfig,
    beam_search,
    extract_grids,
    greedy_decode,
    load_captioner,
    save_captioner,
    train_captioner,
)
from polymodal.caption.attention_plot import plot_cross_attention
from polymodal.data.openmoji import load_openmoji
from polymodal.data.text import WordTokenizer
from polymodal.eval.caption_metrics import bleu, cider_d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--aligner", default=None)
    ap.add_argument("--out", default="runs/captioner")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--reuse", action="store_true", help="load OUT instead of training")
    ap.add_argument("--figure", default="docs/vision-language/cross_attention.png")
    args = ap.parse_args()
    torch.manual_seed(0)
    train, test = load_openmoji("train"), load_openmoji("test")
    t0 = time.time()
    g_train = extract_grids([r.image for r in train])
    g_test = extract_grids([r.image for r in test])
    print(f"grids {tuple(g_train.shape)} in {time.time() - t0:.0f}s")
    cfg = CaptionTrainConfig(epochs=args.epochs, model={"dim": 192, "heads": 4, "depth": 2, "max_length": 16})
    if args.reuse:
        model = load_captioner(args.out)
    else:
        t0 = time.time()
        result = train_captioner(g_train, [r.text for r in train], cfg)
        h = result.history
        print(f"trained in {time.time() - t0:.0f}s, loss {h[0]['loss']:.3f} -> {h[-1]['loss']:.3f}")
        model = result.model
        save_captioner(model, args.out, extra={"history": h})
    norm = WordTokenizer([])
    refs = [[" ".join(norm.tokens(r.text))] for r in test]
    rows: dict[str, list[str]] = {}
    rows["captioner (greedy)"] = greedy_decode(model, g_test).texts
    rows["captioner (beam 3, alpha 0.6, no-repeat 2)"] = beam_search(
        model, g_test, beam_size=3, alpha=0.6, no_repeat_ngram_size=2).texts
    most = Counter(r.text for r in train).most_common(1)[0][0]
    rows[f"most frequent train caption ({most!r})"] = [" ".join(norm.tokens(most))] * len(test)
    if args.aligner:
        from polymodal.models.io import load

        aligner = load(args.aligner)
        texts = sorted({r.text for r in train})
        sim = aligner.encode_image([r.image for r in test]) @ aligner.encode_text(texts).T
        rows["nearest train caption (aligner)"] = [" ".join(norm.tokens(texts[i])) for i in sim.argmax(1).tolist()]
    table = {}
    for name, hyps in rows.items():
        table[name] = {"bleu4": bleu(hyps, refs).bleu[3], "cider_d": cider_d(hyps, refs).score}
        print(f"| {name} | {table[name]['bleu4']:.3f} | {table[name]['cider_d']:.3f} |")
    examples = [(test[i].text, rows["captioner (beam 3, alpha 0.6, no-repeat 2)"][i]) for i in range(0, 362, 36)]
    for ref, hyp in examples:
        print(f"  {ref!r} -> {hyp!r}")
    (Path(args.out) / "caption_metrics.json").write_text(json.dumps({"table": table, "examples": examples}, indent=1))
    idx = next(i for i, r in enumerate(test) if "heart" in r.text or "face" in r.text)
    dec = beam_search(model, g_test[idx : idx + 1], beam_size=3)
    plot_cross_attention(model, g_test[idx : idx + 1], test[idx].image, dec.ids[0], args.figure)
    print("figure", args.figure, test[idx].text, "->", dec.texts[0])


if __name__ == "__main__":
    main()
