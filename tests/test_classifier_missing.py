"""Training for missing modalities: the drop-exactly-one scheme, auxiliary unimodal heads, and model
selection on the validation accuracy with each modality missing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.data.audio import Audio
from polymodal.data.record import Record
from polymodal.errors import ConfigError
from polymodal.models.build import load_preset
from polymodal.models.classifier import ClassifierConfig, MultimodalClassifier, missing_modality_dropout
from polymodal.models.io import load, save
from polymodal.train.classifier_fit import DataSplits, fit_classifier, prepare

LABELS = tuple(str(d) for d in range(3))


def _records(n: int, seed: int = 0) -> list[Record]:
    """Tiny records whose label is readable from both modalities (a bar position, a tone pitch)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        y = i % 3
        img = np.zeros((28, 28), np.uint8)
        img[:, y * 9 : y * 9 + 9] = 255
        t = np.arange(8000) / 8000
        wave = (0.5 * np.sin(2 * np.pi * (300 + 900 * y) * t) + 0.01 * rng.standard_normal(8000)).astype(np.float32)
        out.append(Record(image=Image.fromarray(img), audio=Audio(wave, 8000), label=y, key=f"r{i}", source=f"tiny[{i}]"))
    return out


def _config(preset: str, **changes: object) -> ClassifierConfig:
    cfg = load_preset(preset)
    assert isinstance(cfg, ClassifierConfig)
    return cfg.replace(**changes)


def test_drop_one_scheme_drops_exactly_one_with_probability_p() -> None:
    n = 4000
    present = {m: torch.ones(n, dtype=torch.bool) for m in ("audio", "image", "text")}
    present["text"][:1000] = False  # rows with two modalities
    present["audio"][:500] = False  # rows with one modality: never touched
    out = missing_modality_dropout(present, 0.6, torch.Generator().manual_seed(0), scheme="one")
    before = torch.stack([present[m] for m in present], 1)
    after = torch.stack([out[m] for m in present], 1)
    assert not bool((after & ~before).any()), "dropout must never bring back an absent modality"
    lost = (before.sum(1) - after.sum(1))[500:]
    assert set(lost.tolist()) <= {0, 1}  # at most one modality per row
    assert abs(float(lost.float().mean()) - 0.6) < 0.03
    assert bool(torch.equal(after[:500], before[:500]))
    # uniform over the present modalities: each of three is dropped in about 0.6 / 3 of the full rows
    full = slice(1000, None)
    for i in range(3):
        rate = float((before[full, i] & ~after[full, i]).float().mean())
        assert abs(rate - 0.2) < 0.03, rate
    kept = missing_modality_dropout(present, 0.0, scheme="one")
    assert all(bool(torch.equal(kept[m], present[m])) for m in present)
    with pytest.raises(ConfigError, match="scheme"):
        missing_modality_dropout(present, 0.5, scheme="sometimes")


def test_new_config_fields_round_trip_and_are_checked() -> None:
    cfg = _config("fusion-late", dropout_scheme="one", aux_loss_weight=0.5, labels=LABELS)
    assert ClassifierConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="dropout_scheme"):
        _config("fusion-late", dropout_scheme="half")
    with pytest.raises(ConfigError, match="aux_loss_weight"):
        _config("fusion-late", aux_loss_weight=-1.0)
    with pytest.raises(ConfigError, match="aux_loss_weight needs at least two"):
        _config("fusion-image", aux_loss_weight=1.0)
    with pytest.raises(ConfigError, match="unimodal_fallback must be"):
        _config("fusion-late", unimodal_fallback="yes")


@pytest.mark.parametrize("preset", ["fusion-tensor", "fusion-cross_modal"])
def test_aux_heads_are_trained_saved_and_do_not_change_the_prediction(preset: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = _config(preset, aux_loss_weight=1.0, labels=LABELS)
    model = MultimodalClassifier(cfg).eval()  # eval: no head dropout, so two forwards agree exactly
    x = prepare(cfg, _records(6))
    out = model.forward_all(x)
    assert set(out.aux_logits) == {"audio", "image"}
    assert all(a.shape == (6, 3) for a in out.aux_logits.values())
    torch.testing.assert_close(out.logits, model(x), rtol=0, atol=0)
    # the auxiliary loss reaches each head and each encoder
    sum(torch.nn.functional.cross_entropy(a, torch.tensor([0, 1, 2] * 2)) for a in out.aux_logits.values()).backward()
    for name, p in model.named_parameters():
        if name.startswith(("aux_heads.", "encoders.")) and "pos" not in name:
            assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
    save(model, tmp_path / "m")
    back = load(tmp_path / "m")
    assert isinstance(back, MultimodalClassifier)
    assert set(dict(back.named_parameters())) == set(dict(model.named_parameters()))
    with torch.no_grad():
        for m in ("audio", "image"):
            torch.testing.assert_close(back.forward_all(x).aux_logits[m], model.forward_all(x).aux_logits[m], rtol=0, atol=0)
    # no auxiliary heads unless asked for: older saved models keep exactly their parameters
    assert not any(n.startswith("aux_heads") for n, _ in MultimodalClassifier(cfg.replace(aux_loss_weight=0.0, unimodal_fallback=False)).named_parameters())


def _tiny_data() -> DataSplits:
    return DataSplits("builtin:avdigits", {"train": _records(48), "val": _records(12, 1)}, LABELS)


def test_selection_on_missing_modality_validation_accuracy() -> None:
    cfg = _config("fusion-late", dropout_scheme="one", modality_dropout=0.5, aux_loss_weight=1.0)
    r = fit_classifier(cfg, _tiny_data(), epochs=3, batch_size=16, lr=3e-3)
    assert r.select == "missing"  # "auto" with modality dropout
    scores = []
    for h in r.history:
        parts = [h["val_accuracy"], h["val_accuracy_missing:audio"], h["val_accuracy_missing:image"]]
        assert h["val_score"] == pytest.approx(sum(parts) / 3)
        scores.append(h["val_score"])
    assert r.best_epoch == int(np.argmax(scores))  # the first epoch with the best score
    assert r.val_score == max(scores)
    assert r.val_accuracy == r.history[r.best_epoch]["val_accuracy"]
    assert r.val_score > 0.6  # both tiny modalities are separable alone
    plain = fit_classifier(cfg.replace(modality_dropout=0.0, aux_loss_weight=0.0, unimodal_fallback=False), _tiny_data(), epochs=1, batch_size=16)
    assert plain.select == "all" and "val_score" not in plain.history[0]
    with pytest.raises(ConfigError, match="select"):
        fit_classifier(cfg, _tiny_data(), epochs=1, select="best")


def test_cli_overrides_reach_the_saved_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from polymodal.cli.main import main
    from polymodal.train import classifier_fit

    monkeypatch.setattr(classifier_fit, "load_data", lambda spec, splits=("train", "val", "test"), **_: _tiny_data())
    out = tmp_path / "m"
    args = ["fuse", "train", "--data", "builtin:avdigits", "--fusion", "early", "--out", str(out), "--epochs", "1",
            "--dropout-scheme", "independent", "--aux-loss-weight", "0.25", "--select", "all"]  # fmt: skip
    assert main(args) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["dropout_scheme"] == "independent" and saved["model"]["aux_loss_weight"] == 0.25
    assert saved["training"]["select"] == "all"
    back = load(out)
    assert isinstance(back, MultimodalClassifier) and set(back.aux_heads) == {"audio", "image"}


def test_unimodal_fallback_uses_the_present_modality_head_only_when_it_is_alone() -> None:
    torch.manual_seed(0)
    cfg = _config("fusion-gated", aux_loss_weight=1.0, unimodal_fallback=True, labels=LABELS)
    model = MultimodalClassifier(cfg).eval()
    x = prepare(cfg, _records(6))
    x.present = {"audio": torch.tensor([1, 1, 0, 0, 1, 1], dtype=torch.bool), "image": torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.bool)}
    with torch.no_grad():
        out = model.forward_all(x)
        fused = model.forward_all(x, fallback=False).logits
    torch.testing.assert_close(out.logits[[0, 5]], fused[[0, 5]], rtol=0, atol=0)  # both present: the fusion
    torch.testing.assert_close(out.logits[[1, 4]], out.aux_logits["audio"][[1, 4]], rtol=0, atol=0)  # audio alone
    torch.testing.assert_close(out.logits[[2, 3]], out.aux_logits["image"][[2, 3]], rtol=0, atol=0)  # image alone
    assert not torch.allclose(out.logits[[1, 2]], fused[[1, 2]])
    torch.testing.assert_close(model(x), out.logits, rtol=0, atol=0)
    assert ClassifierConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unimodal_fallback needs"):
        _config("fusion-gated", aux_loss_weight=0.0, unimodal_fallback=True)


def test_fallback_changes_the_prediction_rule_not_the_training() -> None:
    # the fused loss is taken with the fallback off, so the weights are those of the same run without it
    base = _config("fusion-late", dropout_scheme="one", modality_dropout=0.5, aux_loss_weight=1.0, unimodal_fallback=False)
    a = fit_classifier(base, _tiny_data(), epochs=1, batch_size=16, seed=3)
    b = fit_classifier(base.replace(unimodal_fallback=True), _tiny_data(), epochs=1, batch_size=16, seed=3)
    for (name, pa), pb in zip(a.model.named_parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0, msg=name)
