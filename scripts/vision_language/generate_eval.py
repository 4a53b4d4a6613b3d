"""Train the text-to-image flow model on 32x32 OpenMoji and score it (numbers of docs/vision-language.md).

    OMP_NUM_THREADS=1 .venv/bin/python scripts/vision_language/generate_eval.py --steps 500 --aligner runs/demo --out runs/generator

Conditional (MiniLM text embedding, classifier-free guidance w = 1 and 2) vs unconditional model vs
retrieval (the aligner's nearest train image to the prompt) vs real test images. Every image is scored at
the generator's 32x32 resolution (retrieved and real images are downsampled the same way), so the rows
differ only in where the image came from. Fréchet distance on the pretrained EfficientNet-Lite0 pooled
features against the 362 held-out test images; its floor for this sample size is the row "real train
images" (362 random train emoji, also 32x32). CLIP-score with an aligner trained contrastively on OpenMoji
(never on the generator's samples) on the test annotations used as prompts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import polymodal
from polymodal.data.openmoji import load_openmoji
from polymodal.eval.caption_metrics import clip_score
from polymodal.generate import (
    GeneratorTrainConfig,
    frechet_distance,
    from_pil,
    sample_images,
    to_pil,
    tower_features,
    train_generator,
)
from polymodal.towers.minilm import MiniLMTextTower

PROMPTS = ["red heart", "grinning face", "cat face", "red apple", "sun", "blue circle", "dog face",
           "thumbs up", "rocket", "green heart"]


def small(images: list[Image.Image]) -> list[Image.Image]:
    """Images at the generator's resolution, through the same LANCZOS downsampling as its training data."""
    return to_pil(from_pil(images))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--aligner", default=None)
    ap.add_argument("--out", default="runs/generator")
    ap.add_argument("--grid", default="docs/vision-language/generated.png")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reuse", action="store_true", help="load OUT/conditional and OUT/unconditional")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_all = time.time()
    train, test = load_openmoji("train"), load_openmoji("test")
    text = MiniLMTextTower.pretrained()
    x = from_pil([r.image for r in train])
    c = text.encode([r.text for r in train], normalize=True)
    cfg = GeneratorTrainConfig(steps=args.steps, batch_size=48, model={"channels": 32})
    out = Path(args.out)
    models = {}
    for name, cond in (("conditional", c), ("unconditional", None)):
        if args.reuse:
            models[name] = polymodal.load(out / name, kinds={"text2image"}, what="generate_eval")
            continue
        t0 = time.time()
        res = train_generator(x, cond, cfg)
        h = res.history
        print(f"{name}: {time.time() - t0:.0f}s, loss {h[0]['loss']:.3f} -> {h[-1]['loss']:.3f}", flush=True)
        polymodal.save(res.model, out / name, extra={"history": h, "steps": args.steps})
        models[name] = res.model
    prompts = [r.text for r in test]
    pc = text.encode(prompts, normalize=True)
    g = torch.Generator().manual_seed(0)
    t0 = time.time()
    samples = {
        "conditional (w=2)": to_pil(sample_images(models["conditional"], pc, steps=20, guidance=2.0, generator=g)),
        "conditional (w=1)": to_pil(sample_images(models["conditional"], pc, steps=20, guidance=1.0, generator=g)),
        "unconditional": to_pil(sample_images(models["unconditional"], None, num=len(prompts), steps=20, generator=g)),
    }
    print(f"sampled {3 * len(prompts)} images in {time.time() - t0:.0f}s", flush=True)
    aligner = None
    if args.aligner:
        aligner = polymodal.load(args.aligner, kinds={"aligner", "clip", "hf-clip"}, what="the retrieval baseline")
        with torch.no_grad():
            sim = aligner.encode_text(prompts) @ aligner.encode_image([r.image for r in train]).T  # (N_test, N_train)
        samples["retrieval (nearest train image)"] = small([train[i].image for i in sim.argmax(1).tolist()])
    samples["real test images"] = small([r.image for r in test])
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[: len(test)].tolist()
    samples["real train images (random, not the prompt's)"] = small([train[i].image for i in pick])
    real = tower_features(samples["real test images"])
    table = {}
    for name, ims in samples.items():
        row = {"frechet": frechet_distance(tower_features(ims), real) if name != "real test images" else 0.0}
        if aligner is not None:
            with torch.no_grad():
                row["clip_score"] = clip_score(aligner, ims, prompts)
        table[name] = row
        print(name, row, flush=True)
    (out / "generate_metrics.json").write_text(json.dumps(table, indent=1))
    # The figure: ten prompts, four samples each (w=2), prompt written on the left.
    pe = text.encode(PROMPTS, normalize=True).repeat_interleave(4, 0)
    ims = to_pil(sample_images(models["conditional"], pe, steps=20, guidance=2.0,
                               generator=torch.Generator().manual_seed(1)))
    scale, cell, label = 2, 34, 90
    sheet = Image.new("RGB", (label + 4 * cell * scale, 10 * cell * scale), "white")
    draw = ImageDraw.Draw(sheet)
    for i, im in enumerate(ims):
        big = im.resize((32 * scale, 32 * scale), Image.Resampling.NEAREST)
        sheet.paste(big, (label + (i % 4) * cell * scale + scale, (i // 4) * cell * scale + scale))
    for j, p in enumerate(PROMPTS):
        draw.text((4, j * cell * scale + cell * scale // 2 - 6), p, fill="black")
    Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.grid, optimize=True)
    if aligner is not None:
        with torch.no_grad():
            per = {p: clip_score(aligner, ims[4 * i : 4 * i + 4], [p] * 4) for i, p in enumerate(PROMPTS)}
        print("per prompt clip-score (w=2, 4 samples)", json.dumps(per), flush=True)
        (out / "prompts.json").write_text(json.dumps(per, indent=1))
    print(f"total {time.time() - t_all:.0f}s")


if __name__ == "__main__":
    main()
