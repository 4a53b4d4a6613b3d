"""Choose the demo's settings on the OpenMoji VALIDATION split (the test split is never read here).

    python scripts/tune_aligner.py '{"unlock_image": 2}' '{"epochs": 20}' ['{"text_k": 5}']

Prints one JSON line: the settings, val retrieval R@1 and val zero-shot group/subgroup top-1, plain and
with the support set (its settings: the optional third argument, a SupportConfig).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace

from polymodal.data.pairs import load_pairs
from polymodal.eval.aligner_eval import evaluate_aligner
from polymodal.models.aligner import Aligner
from polymodal.models.support import SupportConfig
from polymodal.recipes.presets import DEMO_MODEL, DEMO_TRAIN
from polymodal.train.feature_cache import FeatureCache, default_cache_dir
from polymodal.train.fit import DualEncoderTrainer
from polymodal.train.loop import seed_everything
from polymodal.train.trunk_features import build_support_set


def main() -> None:
    model_over = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    train_over = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    support_over = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    mcfg, tcfg = replace(DEMO_MODEL, **model_over), replace(DEMO_TRAIN, **train_over)
    t0 = time.perf_counter()
    cache = FeatureCache(default_cache_dir())
    train, val = load_pairs("builtin:openmoji", "train"), load_pairs("builtin:openmoji", "val")
    seed_everything(tcfg.seed)
    model = Aligner(mcfg)
    fit = DualEncoderTrainer(model, train, val, tcfg, cache=cache, progress=True).fit()
    support = build_support_set(model, train, cache=cache, config=SupportConfig(**support_over))
    ev = evaluate_aligner(model, val, cache=cache, train=train, probe=False, support=support)
    m = ev.metrics
    print(json.dumps({"model": model_over, "train": train_over, "best_epoch": fit.best_epoch,
                      "val_r1_i2t": round(m["text_retrieval_recall@1"], 4),
                      "val_r1_t2i": round(m["image_retrieval_recall@1"], 4),
                      "val_group": round(m["zeroshot_group/top1"], 4),
                      "val_subgroup": round(m["zeroshot_subgroup/top1"], 4),
                      "support": {k: round(m[f"support/{k}"], 4) for k in ("text_retrieval_recall@1",
                                  "zeroshot_group/top1", "zeroshot_subgroup/top1")},
                      "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
