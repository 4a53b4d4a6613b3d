"""One training epoch of an aligner with the feature cache vs recomputing the towers. One JSON line.

Two settings in one run: the towers locked (LiT, where the cache holds the pooled features and a step
trains only the heads) and the demo's settings (last image block unlocked, whose forward and backward
run in every step either way).

    python benchmarks/bench_feature_cache.py [--images 256]

Both paths train the same trainable top (last image blocks, last text layer, heads) on the same batches;
the cached path reads the frozen trunks' outputs from the cache, the other computes them per batch with
the same fast inference runner (so the comparison is not against a slow eager baseline). Measured on
``--images`` training images (one or more batches) and reported per sample and as epoch seconds for the
1,857-image OpenMoji train split.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from polymodal.data.augment import augmented_view
from polymodal.data.pairs import load_pairs
from polymodal.losses import ClipLoss
from polymodal.models.aligner import Aligner, AlignerConfig
from polymodal.recipes.presets import DEMO_MODEL, DEMO_TRAIN
from polymodal.train.feature_cache import FeatureCache
from polymodal.train.trunk_features import collate_text_trunks, image_trunk_features, text_trunk_features


def measure(model_config: AlignerConfig, train, n: int) -> dict:
    bs = DEMO_TRAIN.batch_size
    images, captions = train.images[:n], [c[1] for c in train.captions[:n]]
    model = Aligner(model_config)
    cache = FeatureCache(None)  # in memory: warmed below, so the cached epoch reads only
    trunk_img = image_trunk_features(model, images, view=1, cache=cache, keys=train.keys[:n], progress=False)
    trunk_txt = text_trunk_features(model, captions, cache=cache, progress=False)
    loss_fn = ClipLoss()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(h_img: torch.Tensor, h_txt) -> None:
        model.train()
        loss = loss_fn(model.image_features(h_img), model.text_features(h_txt), model.logit_scale)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def cached_epoch() -> float:
        t = time.perf_counter()
        for i in range(0, n, bs):
            step(trunk_img[i : i + bs], collate_text_trunks(trunk_txt[i : i + bs]))
        return time.perf_counter() - t

    def recompute_epoch() -> float:
        t = time.perf_counter()
        for i in range(0, n, bs):
            views = [augmented_view(im, 1, key=k) for im, k in zip(images[i : i + bs], train.keys[i : i + bs])]
            h_img = model.image_trunk(model.preprocess(views))
            trunk = model.text_trunk(model.tokenize(captions[i : i + bs]))
            step(h_img, trunk)
        return time.perf_counter() - t

    cached_epoch()  # warm-up
    cached = min(cached_epoch() for _ in range(3))
    recompute = recompute_epoch()
    per_epoch = len(train) / n
    return {
        "unlock_image": model_config.unlock_image,
        "unlock_text": model_config.unlock_text,
        "cached_samples_per_s": round(n / cached, 1),
        "recompute_samples_per_s": round(n / recompute, 1),
        "cached_epoch_s": round(cached * per_epoch, 2),
        "recompute_epoch_s": round(recompute * per_epoch, 2),
        "speedup": round(recompute / cached, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train = load_pairs("builtin:openmoji", "train")
    n = min(args.images, len(train))
    print(json.dumps({
        "benchmark": "aligner_epoch_feature_cache_vs_recompute",
        "image_size": DEMO_MODEL.image_size, "batch_size": DEMO_TRAIN.batch_size, "threads": args.threads,
        "measured_images": n,
        "locked_towers": measure(replace(DEMO_MODEL, unlock_image=0, unlock_text=0), train, n),
        "demo_settings": measure(DEMO_MODEL, train, n),
    }))


if __name__ == "__main__":
    main()
