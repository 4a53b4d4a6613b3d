"""Multimodal classifier: presets, save/load, modality dropout, clear errors, trainer and CLI on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.data.audio import Audio
from polymodal.data.record import Record
from polymodal.errors import ConfigError, DataError
from polymodal.eval import robustness
from polymodal.models.build import load_preset, preset_names
from polymodal.models.classifier import ClassifierConfig, MultimodalClassifier, missing_modality_dropout
from polymodal.models.io import load, save
from polymodal.train import classifier_fit
from polymodal.train.classifier_fit import DataSplits, encode_labels, fit_classifier, prepare

LABELS = tuple(str(d) for d in range(3))


def _records(n: int, seed: int = 0) -> list[Record]:
    """Tiny avdigits-like records whose label is readable from both modalities."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        y = i % 3
        img = np.zeros((28, 28), np.uint8)
        img[:, y * 9 : y * 9 + 9] = 255  # a bar in column block y
        t = np.arange(8000) / 8000
        wave = (0.5 * np.sin(2 * np.pi * (300 + 900 * y) * t) + 0.01 * rng.standard_normal(8000)).astype(np.float32)
        out.append(Record(image=Image.fromarray(img), audio=Audio(wave, 8000), label=y, key=f"r{i}", source=f"tiny[{i}]"))
    return out


def _tiny(preset: str) -> ClassifierConfig:
    cfg = load_preset(preset)
    assert isinstance(cfg, ClassifierConfig)
    return cfg


@pytest.mark.parametrize("name", [n for n in preset_names() if n.startswith(("fusion-", "vqa-"))])
def test_every_preset_builds_and_runs(name: str) -> None:
    cfg = _tiny(name).replace(labels=LABELS)
    from polymodal.models.classifier_encoders import TextEncoderConfig

    cfg = cfg.replace(encoders={m: (e.__class__(**{**e.__dict__, "vocab": ("what", "is")}) if isinstance(e, TextEncoderConfig) else e)
                                for m, e in cfg.encoders.items()})  # fmt: skip
    model = MultimodalClassifier(cfg)
    recs = [Record(image=Image.new("RGB", (64, 64)), text="what is it", audio=Audio(np.zeros(4000, np.float32), 8000), label=0)] * 2
    logits = model(prepare(cfg, recs))
    assert logits.shape == (2, 3)
    assert ClassifierConfig.from_dict(cfg.to_dict()) == cfg


def test_save_load_round_trip_through_io(tmp_path: Path) -> None:
    cfg = _tiny("fusion-low_rank").replace(labels=LABELS)
    model = MultimodalClassifier(cfg).eval()
    save(model, tmp_path / "m")
    back = load(tmp_path / "m")
    assert isinstance(back, MultimodalClassifier)
    x = prepare(cfg, _records(4))
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), rtol=0, atol=0)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["kind"] == "classifier"


def test_modality_dropout_never_drops_everything() -> None:
    present = {"image": torch.ones(2000, dtype=torch.bool), "audio": torch.ones(2000, dtype=torch.bool)}
    present["audio"][:500] = False  # rows that already lack audio keep their image
    out = missing_modality_dropout(present, 0.9, torch.Generator().manual_seed(0))
    both = torch.stack([out["image"], out["audio"]], 1)
    assert bool(both.any(1).all())
    assert not bool(out["audio"][:500].any()), "dropout must never bring back an absent modality"
    assert bool(out["image"][:500].all())
    rate = 1 - float(out["image"][500:].float().mean())
    assert 0.3 < rate < 0.6  # 0.9 drop, but rows left empty get one back


def test_missing_modality_without_dropout_is_a_clear_error() -> None:
    cfg = _tiny("fusion-image").replace(labels=LABELS)
    cfg2 = _tiny("fusion-tensor").replace(labels=LABELS, modality_dropout=0.0)
    recs = _records(3)
    recs[1].audio = None
    prepare(cfg, recs)  # an image-only model does not need audio
    with pytest.raises(DataError, match=r"tiny\[1\].*no audio.*modality dropout"):
        prepare(cfg2, recs)
    prepare(cfg2.replace(modality_dropout=0.3), recs)  # trained with dropout: fine


def test_label_sets_that_differ_are_named() -> None:
    recs = _records(3)
    recs[2].label = "seven"
    with pytest.raises(DataError, match=r"not in training: \['seven'\]"):
        encode_labels(recs, model_labels=LABELS, label_names=(), split="test")


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="fusion kind"):
        ClassifierConfig.from_dict({"encoders": {"image": {"kind": "image_cnn"}}, "fusion": {"kind": "nope"}})
    with pytest.raises(ConfigError, match="configured for modality 'audio'"):
        ClassifierConfig.from_dict({"encoders": {"audio": {"kind": "image_cnn"}}})
    with pytest.raises(ConfigError, match="two modalities"):
        ClassifierConfig.from_dict({"encoders": {"image": {"kind": "image_cnn"}}, "modality_dropout": 0.2})


def _tiny_data() -> DataSplits:
    return DataSplits("builtin:avdigits", {"train": _records(48), "val": _records(12, 1), "test": _records(12, 2)}, LABELS)


def test_training_learns_and_selects_on_val() -> None:
    torch.manual_seed(0)
    r = fit_classifier(_tiny("fusion-early"), _tiny_data(), epochs=4, batch_size=16, lr=3e-3, select="all")
    assert r.val_accuracy == max(h["val_accuracy"] for h in r.history)
    assert r.history[r.best_epoch]["val_accuracy"] == r.val_accuracy
    assert r.val_accuracy > 0.6  # 3 classes, trivially separable


def test_cli_train_and_eval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from polymodal.cli.main import main

    for module in (classifier_fit, robustness):  # training reads through one, evaluation through the other
        monkeypatch.setattr(module, "load_data", lambda spec, splits=("train", "val", "test"), **_: _tiny_data())
    out = tmp_path / "m"
    assert main(["fuse", "train", "--data", "builtin:avdigits", "--fusion", "gated", "--out", str(out), "--epochs", "2"]) == 0
    assert (out / "model.safetensors").is_file()
    res = robustness.evaluate_run(out)
    assert set(res["accuracy"]) == {"all", "missing:image", "missing:audio"}
    assert all(0.0 <= v <= 1.0 for v in res["accuracy"].values())
    assert main(["fuse", "eval", "--model", str(tmp_path / "nothing")]) == 2


def test_training_resumes_bit_identically(tmp_path, monkeypatch) -> None:
    from _resume_helpers import assert_same_state, crash_after_checkpoints

    cfg = _tiny("fusion-early").replace(modality_dropout=0.3)  # dropout draws from the loop's generator

    def run(**kw):
        return fit_classifier(cfg, _tiny_data(), epochs=3, batch_size=16, lr=3e-3, seed=1, **kw)

    whole = run()
    crash_after_checkpoints(monkeypatch, 1, lambda: run(checkpoint=tmp_path / "c"))
    resumed = run(checkpoint=tmp_path / "c", resume=True)
    assert resumed.history == whole.history and resumed.best_epoch == whole.best_epoch
    assert_same_state(resumed.model, whole.model)
    with pytest.raises(ConfigError, match="no checkpoint to resume from"):
        run(checkpoint=tmp_path / "none", resume=True)
