"""Image+text loading throughput from a manifest and from tar shards, against training consumption.

    python benchmarks/bench_loading.py [--records 2464] [--batch-size 64] [--workers 0 1 2]

Data: the vendored OpenMoji images (72x72 RGBA PNG, composited to RGB) with their annotations as
texts, extracted to a temporary folder with a CSV manifest, and the same records written as tar shards
(``polymodal shards``, 256 per shard). Loading = read the file, decode to RGB, collate a batch
(uint8 ``(B, 3, 72, 72)`` images, raw texts, labels, presence masks): through
:class:`polymodal.data.loader.RecordLoader` for the manifest and a ``DataLoader`` over
:class:`polymodal.data.shards.ShardStream` (shuffle buffer 256) for the shards, each for 0, 1 and 2
workers; one full epoch each, worker start-up included.

Consumption: the aligner's training step on cached trunk features (``polymodal demo``'s model and
batch: EfficientNet-Lite0 with 2 unlocked blocks at 160 px, MiniLM with 1 unlocked layer, batch 256;
forward, CLIP loss, backward, AdamW), with random weights (speed does not depend on them), after two
warm-up steps. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
import zipfile
from functools import partial
from importlib import resources
from pathlib import Path

import torch


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_data(root: Path, count: int) -> tuple[Path, Path, dict[str, int]]:
    """OpenMoji PNGs + manifest.csv under ``root``; shards in ``root/shards``; label -> class index."""
    from polymodal.data.shards import write_shards
    from polymodal.data.sources import open_source

    table = resources.files("polymodal.data").joinpath("assets", "openmoji", "openmoji.csv")
    with table.open("r", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:count]
    archive = resources.files("polymodal.data").joinpath("assets", "openmoji", "openmoji72.zip")
    (root / "img").mkdir(parents=True)
    with archive.open("rb") as handle, zipfile.ZipFile(handle) as z:
        for r in rows:
            (root / "img" / f"{r['hexcode']}.png").write_bytes(z.read(f"{r['hexcode']}.png"))
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "text", "label"])
        for r in rows:
            w.writerow([r["hexcode"], f"img/{r['hexcode']}.png", r["annotation"], r["group"]])
    write_shards(open_source(manifest, decode=False, check=False), root / "shards", shard_size=256)
    labels = {g: i for i, g in enumerate(sorted({r["group"] for r in rows}))}
    return manifest, root / "shards", labels


def time_epoch(batches) -> tuple[int, float]:
    t = time.perf_counter()
    n = sum(len(b) for b in batches)
    return n, time.perf_counter() - t


def manifest_rate(manifest: Path, labels: dict[str, int], workers: int, batch_size: int) -> float:
    from polymodal.data.loader import RecordLoader
    from polymodal.data.sources import open_source

    records = open_source(manifest, decode=False, check=False).load()  # paths; decoded in the workers
    loader = RecordLoader(records, batch_size=batch_size, shuffle=True, num_workers=workers, label_fn=labels)
    n, seconds = time_epoch(loader)
    assert n == len(records) and not loader.bad
    return n / seconds


def shard_rate(shards: Path, labels: dict[str, int], workers: int, batch_size: int, expected: int) -> float:
    from torch.utils.data import DataLoader

    from polymodal.data.collate import collate_records
    from polymodal.data.shards import ShardStream

    stream = ShardStream(shards, decode=True, shuffle_buffer=256, seed=0)
    loader = DataLoader(stream, batch_size=batch_size, num_workers=workers,
                        collate_fn=partial(collate_records, label_fn=labels))
    n, seconds = time_epoch(loader)
    assert n == expected, (n, expected)
    return n / seconds


def consumer_rate(manifest: Path, batch: int, steps: int) -> dict[str, object]:
    """Samples/s of the aligner's cached-feature training step (see the module docstring)."""
    from polymodal.data.sources import open_source
    from polymodal.losses import ClipLoss
    from polymodal.models.aligner import Aligner
    from polymodal.recipes.presets import DEMO_MODEL, DEMO_TRAIN
    from polymodal.train.trunk_features import collate_text_trunks

    torch.manual_seed(0)
    model = Aligner(DEMO_MODEL, pretrained=False)
    records = open_source(manifest).load()[:batch]
    while len(records) < batch:
        records += records[: batch - len(records)]
    with torch.no_grad():  # the cached trunk features of one batch (what the trainer reads from its cache)
        h_img = torch.cat([model.image_trunk(model.preprocess([r.image for r in records[i:i + 64]]))
                           for i in range(0, batch, 64)])
        trunk = model.text_trunk(model.tokenize([r.text for r in records]))
    texts = [trunk.hidden[i, : int(trunk.mask[i].sum())] for i in range(batch)] if trunk.mask is not None \
        else list(trunk.hidden)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    loss_fn = ClipLoss()
    model.train()

    def step() -> None:
        img = model.image_features(h_img)
        txt = model.text_features(collate_text_trunks(texts))
        loss = loss_fn(img, txt, model.logit_scale.clamp(max=model.config.max_logit_scale))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t) / steps
    return {
        "what": f"aligner cached-feature train step (DEMO_MODEL: unlock_image={DEMO_MODEL.unlock_image}, "
                f"unlock_text={DEMO_MODEL.unlock_text}, image_size={DEMO_MODEL.image_size}; batch {batch}; "
                "forward + CLIP loss + backward + AdamW)",
        "batch_size": batch,
        "demo_batch_size": DEMO_TRAIN.batch_size,
        "seconds_per_step": round(seconds, 4),
        "samples_per_s": round(batch / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2464, help="OpenMoji images to use (at most 2464)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--consumer-batch", type=int, default=256)
    parser.add_argument("--consumer-steps", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="polymodal-bench-") as tmp:
        manifest, shards, labels = make_data(Path(tmp), args.records)
        n = len(list(open(manifest, encoding="utf-8"))) - 1
        out: dict[str, object] = {"benchmark": "loading", "records": n, "data": "OpenMoji 72x72 PNG + annotation",
                                  "batch_size": args.batch_size, "shards": len(list(shards.glob("*.tar")))}
        rates: dict[str, dict[str, float]] = {"manifest": {}, "shards": {}}
        for w in args.workers:
            rates["manifest"][str(w)] = round(manifest_rate(manifest, labels, w, args.batch_size), 1)
            _log(f"manifest, {w} workers: {rates['manifest'][str(w)]} records/s")
            rates["shards"][str(w)] = round(shard_rate(shards, labels, w, args.batch_size, n), 1)
            _log(f"shards,   {w} workers: {rates['shards'][str(w)]} records/s")
        out["records_per_s"] = rates
        consumer = consumer_rate(manifest, args.consumer_batch, args.consumer_steps)
        _log(f"consumer: {consumer['samples_per_s']} samples/s")
        out["consumer"] = consumer
        best = max(max(r.values()) for r in rates.values())
        out["best_loading_over_consumption"] = round(best / float(consumer["samples_per_s"]), 2)
        out["starves_training"] = best < float(consumer["samples_per_s"])
    out["machine"] = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                      "python": platform.python_version(), "torch": torch.__version__}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
