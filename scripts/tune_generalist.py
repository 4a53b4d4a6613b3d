"""Choose the default model's cross-domain settings on VALIDATION sets only (test splits are never read).

    python scripts/tune_generalist.py --train openmoji,twemoji,noto --seed 0 \
        --transfer '[{}, {"gate_center": 0.2}]' --templates emoji,photo

Trains the demo recipe on the chosen training sets (each one's train split), then for each transfer
setting (a TransferConfig; ``null`` for none) prints one JSON line of validation figures: OpenMoji,
Twemoji and Noto (image→text R@1, zero-shot group and subgroup top-1) and the photos (zero-shot top-1
over all 84 labels).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import torch

from polymodal.data.pairs import concat_pairs, load_pairs
from polymodal.eval.aligner_eval import evaluate_aligner
from polymodal.models.aligner import Aligner
from polymodal.models.prompts import EMOJI_TEMPLATES, PHOTO_TEMPLATES
from polymodal.models.transfer import TransferConfig
from polymodal.recipes.presets import DEMO_MODEL, DEMO_TRAIN
from polymodal.train.feature_cache import FeatureCache, default_cache_dir
from polymodal.train.fit import DualEncoderTrainer
from polymodal.train.loop import seed_everything
from polymodal.train.trunk_features import attach_transfer

TEMPLATES = {"emoji": EMOJI_TEMPLATES, "photo": PHOTO_TEMPLATES, "both": EMOJI_TEMPLATES + PHOTO_TEMPLATES}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", default="openmoji")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--transfer", default="[null, {}]")
    ap.add_argument("--templates", default="emoji,both")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default='{"image_fit": "pad"}', help="AlignerConfig overrides (JSON)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    cache = FeatureCache(default_cache_dir())
    train = concat_pairs(*(load_pairs(f"builtin:{s}", "train") for s in args.train.split(",")))
    vals = {s: load_pairs(f"builtin:{s}", "val") for s in ("openmoji", "twemoji", "noto", "photos")}
    tcfg = replace(DEMO_TRAIN, seed=args.seed, refit=False)
    seed_everything(args.seed)
    model = Aligner(replace(DEMO_MODEL, **json.loads(args.model)))
    fit = DualEncoderTrainer(model, train, vals["openmoji"], tcfg, cache=cache, progress=False).fit()
    for setting in json.loads(args.transfer):
        if setting is None:
            model.transfer = None
        else:
            attach_transfer(model, train, cache, TransferConfig(**setting))
        row: dict[str, object] = {"train": args.train, "seed": args.seed, "best_epoch": fit.best_epoch,
                                  "transfer": setting}
        for tname in args.templates.split(","):
            templates = TEMPLATES[tname]
            for name, val in vals.items():
                m = evaluate_aligner(model, val, cache=cache, probe=False, templates=templates).metrics
                if name == "photos":
                    row[f"{tname}/photos"] = round(m["zeroshot_label/top1"], 4)
                else:
                    row[f"{tname}/{name}"] = [round(m[k], 4) for k in ("text_retrieval_recall@1",
                                              "zeroshot_group/top1", "zeroshot_subgroup/top1")]
        row["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
