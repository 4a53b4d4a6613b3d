"""Prompt-match of text-to-image models on the 18 colour-and-shape prompts (docs/vision-language.md).

    .venv/bin/python scripts/vision_language/prompt_match_eval.py runs/t2i/base-s0 [MODEL ...] --num 16 --seed 0

For each prompt "a <colour> <shape>" (6 colours x circle/square/heart) ``--num`` images are drawn (guidance
2, 20 Euler steps) and checked by ``polymodal.generate.prompt_match`` (hue bins and shape templates; no text
encoder). Prints one JSON line per model: the fractions with the right colour, shape and both, over all
prompts and over the prompts whose emoji is not in OpenMoji's train split (red heart is a test emoji, blue
circle and yellow square validation ones: the generator never saw those pairings).
"""

from __future__ import annotations

import argparse
import json

import torch

import polymodal
from polymodal.data.openmoji import load_openmoji
from polymodal.generate.prompt_match import COLOURS, SHAPES, prompt_match


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--num", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--guidance", type=float, default=2.0)
    args = ap.parse_args()
    train = {r.text for r in load_openmoji("train")}
    pairs = [f"{c} {s}" for s in SHAPES for c in COLOURS]
    prompts = [f"a {p}" for p in pairs]
    unseen = [i for i, p in enumerate(pairs) if p not in train]
    for path in args.models:
        model = polymodal.load(path, kinds={"text2image"}, what="prompt_match_eval")
        images = model.generate(prompts, num=args.num, guidance=args.guidance,
                                generator=torch.Generator().manual_seed(args.seed))
        rows = [i // args.num for i in range(len(images))]
        m = prompt_match(images, [prompts[r] for r in rows])
        keep = [k for k, r in enumerate(rows) if r in unseen]
        u = prompt_match([images[k] for k in keep], [prompts[rows[k]] for k in keep])
        right = [found == tuple(pairs[r].split()) for found, r in zip(m.found, rows, strict=True)]
        per = {p: sum(right[i * args.num:(i + 1) * args.num]) / args.num for i, p in enumerate(pairs)}
        print(json.dumps({"model": path, "num": args.num, "seed": args.seed, "guidance": args.guidance,
                          "both": m.both, "colour": m.colour, "shape": m.shape,
                          "unseen_pairs": [pairs[i] for i in unseen], "unseen_both": u.both,
                          "unseen_colour": u.colour, "unseen_shape": u.shape, "per_prompt": per}), flush=True)


if __name__ == "__main__":
    main()
