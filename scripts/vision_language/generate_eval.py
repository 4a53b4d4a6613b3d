"""Train the text-to-image flow model on 32x32 OpenMoji and score it (numbers of docs/vision-language.md).

    .venv/bin/python scripts/vision_language/generate_eval.py --steps 800 --aligner ALIGNER_DIR --out runs/generator

Conditional (MiniLM text embedding, classifier-free guidance w=2) vs unconditional model vs retrieval
(the aligner's nearest train image to the prompt). Fréchet distance on the pretrained EfficientNet-Lite0
pooled features against the held-out test images; CLIP-score with an aligner (trained contrastively on
OpenMoji, never on the generator's samples) on the test annotations used as prompts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from polymodal.data.openmoji import load_openmoji
from polymodal.eval.caption_metrics import clip_score
from polymodal.generate import (
    GeneratorTrainConfig,
    frechet_distance,
    from_pil,
    sample_images,
    save_generator,
    to_pil,
    tower_features,
    train_generator,
)
from polymodal.towers.minilm import MiniLMTextTower

PROMPTS = ["red heart", "grinning face", "cat face", "red apple", "sun", "blue circle", "dog face",
           "thumbs up", "rocket", "green heart"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--aligner", default=None)
    ap.add_argument("--out", default="runs/generator")
    ap.add_argument("--grid", default="docs/vision-language/generated.png")
    args = ap.parse_args()
    train, test = load_openmoji("train"), load_openmoji("test")
    text = MiniLMTextTower.pretrained()
    x = from_pil([r.image for r in train])
    c = text.encode([r.text for r in train], normalize=True)
    cfg = GeneratorTrainConfig(steps=args.steps, batch_size=48, model={"channels": 32})
    out = Path(args.out)
    models = {}
    for name, cond in (("conditional", c), ("unconditional", None)):
        t0 = time.time()
        res = train_generator(x, cond, cfg)
        print(f"{name}: {time.time() - t0:.0f}s, loss {res.history[0]['loss']:.3f} -> {res.history[-1]['loss']:.3f}")
        save_generator(res.model, out / name, extra={"history": res.history})
        models[name] = res.model
    prompts = [r.text for r in test]
    pc = text.encode(prompts, normalize=True)
    g = torch.Generator().manual_seed(0)
    samples = {
        "conditional (w=2)": to_pil(sample_images(models["conditional"], pc, steps=20, guidance=2.0, generator=g)),
        "conditional (w=1)": to_pil(sample_images(models["conditional"], pc, steps=20, guidance=1.0, generator=g)),
        "unconditional": to_pil(sample_images(models["unconditional"], None, num=len(prompts), steps=20, generator=g)),
    }
    aligner = None
    if args.aligner:
        from polymodal.models.io import load

        aligner = load(args.aligner)
        sim = aligner.encode_text(prompts) @ aligner.encode_image([r.image for r in train]).T
        samples["retrieval (nearest train image)"] = [train[i].image for i in sim.argmax(1).tolist()]
    real = tower_features([im.resize((32, 32)) for im in (r.image for r in test)])
    table = {}
    for name, ims in samples.items():
        row = {"frechet": frechet_distance(tower_features(ims), real)}
        if aligner is not None:
            row["clip_score"] = clip_score(aligner, ims, prompts)
        table[name] = row
        print(name, row)
    if aligner is not None:
        table["real test images"] = {"clip_score": clip_score(aligner, [r.image for r in test], prompts)}
        print("real", table["real test images"])
    (out / "generate_metrics.json").write_text(json.dumps(table, indent=1))
    # The figure: ten prompts, four samples each (w=2).
    from PIL import Image

    pe = text.encode(PROMPTS, normalize=True).repeat_interleave(4, 0)
    ims = to_pil(sample_images(models["conditional"], pe, steps=20, guidance=2.0, generator=torch.Generator().manual_seed(1)))
    sheet = Image.new("RGB", (4 * 34, 10 * 34), "white")
    for i, im in enumerate(ims):
        sheet.paste(im, ((i % 4) * 34 + 1, (i // 4) * 34 + 1))
    Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
    sheet.resize((4 * 34 * 3, 10 * 34 * 3), Image.Resampling.NEAREST).save(args.grid)
    if aligner is not None:
        per = {p: clip_score(aligner, ims[4 * i : 4 * i + 4], [p] * 4) for i, p in enumerate(PROMPTS)}
        print("per prompt clip-score", json.dumps(per))
        (out / "prompts.json").write_text(json.dumps(per, indent=1))


if __name__ == "__main__":
    main()
