"""One training run of an aligner, end to end: data → cached features → fit → evaluate → report.

The run folder is itself a model folder (``config.json`` + ``model.safetensors``), so ``--model`` and
``polymodal.load`` accept it; beside them it holds ``metrics.json``, ``history.json``, ``report.md``/``.html``
with figures, and ``checkpoint/`` (and ``refit-checkpoint/`` for the refit on train + val) for ``--resume``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from polymodal.core import distributed
from polymodal.core.checkpoint import atomic_write_json, find_checkpoint_dir
from polymodal.data.pairs import PairSet, concat_pairs, load_pairs
from polymodal.data.record import BadRecord
from polymodal.eval.aligner_eval import AlignerEvaluation, evaluate_aligner
from polymodal.eval.eval_sets import evaluate_sets, headline
from polymodal.models.aligner import AlignerConfig
from polymodal.models.build import build_model
from polymodal.models.io import save
from polymodal.models.protocol import DualEncoder
from polymodal.models.transfer import TransferConfig
from polymodal.train.feature_cache import FeatureCache, default_cache_dir
from polymodal.train.fit import DualEncoderTrainer, FitResult, TrainConfig, check_resume
from polymodal.train.loop import seed_everything
from polymodal.train.trunk_features import attach_transfer, build_support_set


@dataclass
class RunResult:
    out: Path
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]]
    fit: FitResult
    bad: list[BadRecord]
    seconds: float
    refit: FitResult | None = None  # the train+val refit, when TrainConfig.refit is on
    eval_sets: dict[str, dict[str, Any]] = field(default_factory=dict)  # source -> its evaluation block


def _dedupe(bad: list[BadRecord]) -> list[BadRecord]:
    seen, out = set(), []
    for b in bad:
        if (b.source, b.row, b.problem) not in seen:
            seen.add((b.source, b.row, b.problem))
            out.append(b)
    return out


def train_aligner(
    data: str,
    out: str | Path,
    *,
    model_config: Any = None,
    train_config: TrainConfig | None = None,
    resume: bool = False,
    strict: bool = False,
    cache_dir: str | Path | None = "default",
    report: bool = True,
    progress: bool = True,
    also_train_on: Sequence[str] = (),
    transfer: TransferConfig | None = None,
    eval_sets: Sequence[str] = (),
) -> RunResult:
    """Train any dual encoder (an aligner by default) on ``data``'s train split, stop early on val, refit on
    train+val for the chosen epoch count if ``train_config.refit``, evaluate once on test, write the run folder.

    Args:
        also_train_on: More sources whose train (and, for the refit, val) splits join the training pairs,
            e.g. the same emoji in other drawing styles; ``data``'s val and test splits stay the measure.
        transfer: Give the trained aligner an ImageNet-transfer bank (models/transfer.py) with these settings.
        eval_sets: Sources whose test splits are evaluated once more, each beside the transfer alone, the
            aligner alone and an aligner trained on ``data`` only (``metrics.json["eval_sets"]``).
    """
    t0 = time.perf_counter()
    # Under torchrun every process trains; only rank 0 shows progress and writes the run folder.
    main_process = distributed.rank() == 0
    progress = progress and main_process
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model_config = model_config or AlignerConfig()
    train_config = train_config or TrainConfig()
    if resume:  # before any data is read: a resume under other settings is refused (fit.check_resume)
        for name in ("checkpoint", "refit-checkpoint"):
            check_resume(out / name, train_config)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cache = FeatureCache(default_cache_dir() if cache_dir == "default" else cache_dir)

    splits: dict[str, PairSet] = {s: load_pairs(data, s, strict=strict) for s in ("train", "val", "test")}
    for s, ps in splits.items():
        if len(ps) < 2:
            from polymodal.errors import DataError

            raise DataError(data, f"the {s} split has {len(ps)} usable pairs; need at least 2")
    more = {s: [load_pairs(x, s, strict=strict) for x in also_train_on] for s in ("train", "val")}
    bad = _dedupe([b for ps in [*splits.values(), *more["train"], *more["val"]] for b in ps.bad])
    train_pairs = concat_pairs(splits["train"], *more["train"]) if also_train_on else splits["train"]

    seed_everything(train_config.seed)
    model = build_model(model_config)
    if hasattr(model, "fit_tokenizer"):  # a from-scratch CLIP learns its tokenizer from the training captions
        model.fit_tokenizer([c for caps in splits["train"].captions for c in caps])
    trainer = DualEncoderTrainer(model, train_pairs, splits["val"], train_config, cache=cache, progress=progress)
    fit = trainer.fit(out / "checkpoint", resume=resume)
    fitted_on, refit = train_pairs, None
    if train_config.refit:
        fitted_on = concat_pairs(train_pairs, splits["val"], *more["val"])
        model, refit = _refit(model_config, train_config, fitted_on, splits["val"], fit.best_epoch,
                              out / "refit-checkpoint", cache=cache, resume=resume, progress=progress)
    if not main_process:
        return RunResult(out, {}, {}, fit, bad, time.perf_counter() - t0, refit)
    if transfer is not None and hasattr(model, "transfer"):  # before the support set: it embeds images too
        attach_transfer(model, fitted_on, cache, transfer)
    if hasattr(model, "support"):  # the training pairs' embeddings, saved with the model (models/support.py)
        model.support = build_support_set(model, fitted_on, cache=cache, seed=train_config.seed)
    save(model, out, extra={"data": data, "train": asdict(train_config)})

    seed_everything(train_config.seed)
    untrained = build_model(model_config)
    if hasattr(untrained, "set_tokenizer"):
        untrained.set_tokenizer(model.tokenizer)  # the untrained baseline reads text the same way
    ev = evaluate_aligner(model, splits["test"], cache=cache, train=splits["train"], val=splits["val"],
                          untrained=untrained, support=getattr(model, "support", None), progress=progress)
    blocks = {}
    if eval_sets:
        references = _references(model, model_config, train_config, splits, cache, bool(also_train_on))
        blocks = evaluate_sets(model, eval_sets, cache=cache, references=references)
    result = RunResult(out, ev.metrics, ev.baselines, fit, bad, time.perf_counter() - t0, refit, blocks)
    atomic_write_json(out / "metrics.json", _metrics_json(result, data, splits))
    atomic_write_json(out / "history.json", fit.history)
    if report:
        write_run_report(out, result, ev, splits["test"], model)
    return result


def _refit(model_config: Any, train_config: TrainConfig, pairs: PairSet, val: PairSet, epochs: int, checkpoint: Path,
           *, cache: FeatureCache, resume: bool, progress: bool) -> tuple[DualEncoder, FitResult]:
    """A fresh model trained on train+val for the selection run's best epoch count, along the same schedule.

    Model selection is done once validation has chosen the epoch; refitting on the held-out pairs too is
    the usual last step (as the linear probe does with its C). On OpenMoji, validating the same procedure
    inside the training split (docs/aligner.md) gave image→text R@1 +3 points and zero-shot groups
    +2.5 points over the selection run alone. The validation figures this run logs are not held out.
    """
    seed_everything(train_config.seed)
    model = build_model(model_config)
    if hasattr(model, "fit_tokenizer"):
        model.fit_tokenizer([c for caps in pairs.captions for c in caps])
    trainer = DualEncoderTrainer(model, pairs, val, train_config, cache=cache, progress=progress)
    # A run that stopped before its refit began resumes into a fresh refit.
    resume = resume and find_checkpoint_dir(checkpoint) is not None
    return model, trainer.fit(checkpoint, resume=resume, fixed_epochs=epochs)


def _references(model: Any, model_config: Any, train_config: TrainConfig, splits: dict[str, PairSet],
                cache: FeatureCache, more_data: bool) -> dict[str, DualEncoder]:
    """The evaluation sets' reference models: the ImageNet transfer alone and the trained aligner alone
    (views of ``model``), and, when it trained on more than ``data``, the same recipe on ``data`` alone."""
    refs: dict[str, DualEncoder] = {}
    if getattr(model, "transfer", None) is not None:
        refs["ImageNet transfer alone"] = model.with_transfer(model.transfer.with_settings(gate="always"))
        refs["aligner alone"] = model.with_transfer(None)
    if more_data:  # the same recipe, own epoch choice and refit included, on data's pairs alone
        seed_everything(train_config.seed)
        single = build_model(model_config)
        chosen = DualEncoderTrainer(single, splits["train"], splits["val"], train_config, cache=cache,
                                    progress=False).fit()
        if train_config.refit:
            seed_everything(train_config.seed)
            single = build_model(model_config)
            DualEncoderTrainer(single, concat_pairs(splits["train"], splits["val"]), splits["val"], train_config,
                               cache=cache, progress=False).fit(fixed_epochs=chosen.best_epoch)
        refs[f"{splits['train'].name.split(':')[0]}-only aligner"] = single
    return refs


def _metrics_json(r: RunResult, data: str, splits: dict[str, PairSet]) -> dict[str, Any]:
    return {
        "data": data,
        "split_sizes": {s: len(p) for s, p in splits.items()},
        "test": r.metrics,
        "baselines": r.baselines,
        "best_epoch": r.fit.best_epoch,
        "best_val_r1_i2t": r.fit.best_val_r1,
        "epochs_run": len(r.fit.history),
        "stopped_early": r.fit.stopped_early,
        # The model saved is the refit on train+val for best_epoch epochs (None: the selection run's best).
        "refit": None if r.refit is None else {"epochs": r.fit.best_epoch, "train_pairs": len(splits["train"]) + len(splits["val"])},
        "eval_sets": r.eval_sets,
        "bad_records": {"count": len(r.bad), "items": [b.to_dict() for b in r.bad]},
        "seconds": r.seconds,
    }


@torch.no_grad()
def write_run_report(out: Path, r: RunResult, ev: AlignerEvaluation, test: PairSet, model: DualEncoder) -> Path:
    from polymodal.eval.plots import (
        plot_confusion_matrix,
        plot_retrieval_examples,
        plot_similarity_heatmap,
        plot_training_curves,
    )
    from polymodal.eval.report import write_report

    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    figures: dict[str, Path] = {}
    if r.fit.history:
        figures["Training curves"] = plot_training_curves(r.fit.history, fig_dir / "training_curves.png")
    assert ev.image_emb is not None and ev.text_emb is not None
    n = min(12, len(test))
    # A fixed, spread-out sample of the test split, so the figures show varied emoji.
    pick = torch.linspace(0, len(test) - 1, n).long().tolist()
    sim = (ev.image_emb[pick] @ ev.text_emb[pick].T).numpy()
    figures["Similarity matrix"] = plot_similarity_heatmap(
        sim, [test.images[i] for i in pick], [test.texts[i] for i in pick], fig_dir / "similarity.png")
    q = pick[:8]
    scores = ev.image_emb[q] @ ev.text_emb.T
    top = scores.topk(min(5, len(test)), dim=1)
    topk_texts = [[(test.texts[j], float(s)) for s, j in zip(srow.tolist(), jrow.tolist())]
                  for srow, jrow in zip(top.values, top.indices)]
    figures["Retrieval examples (image → text)"] = plot_retrieval_examples(
        [test.images[i] for i in q], topk_texts, [test.texts[i] for i in q], fig_dir / "retrieval.png")
    if hasattr(model, "attention_maps"):  # a ViT: where its [CLS] token looks in a few test images
        from polymodal.models.clip_plots import plot_attention_maps

        figures["Attention over image patches"] = plot_attention_maps(
            model, [test.images[i] for i in pick[:4]], fig_dir / "attention.png",  # type: ignore[arg-type]
            captions=[test.texts[i] for i in pick[:4]])
    if "group" in ev.confusion:
        classes, cm = ev.confusion["group"]
        figures["Zero-shot confusion (groups)"] = plot_confusion_matrix(cm, classes, fig_dir / "confusion_group.png")
    notes = [
        f"Data: {test.name.split(':')[0]}; test split of {len(test)} pairs, evaluated once after early stopping on validation R@1.",
        f"Best epoch {r.fit.best_epoch} of {len(r.fit.history)} run; {r.seconds:.0f} s in all.",
        *([f"The model is a refit on the train and val pairs for those {r.fit.best_epoch} epochs; the training "
           "curves are the selection run's."] if r.refit is not None else []),
        "Zero-shot labels were never training targets: captions come from each item's own annotation and tags.",
    ]
    sections = {f"{source} ({block['split']} split, {block['size']} items)": headline(block)
                for source, block in r.eval_sets.items()}
    return write_report(out, title="polymodal aligner run", metrics=r.metrics, baselines=r.baselines,
                        figures=figures, bad_records=r.bad, notes=notes, sections=sections)
