"""Robustness: imperfections, relative and effective robustness (golden values), report and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from polymodal.errors import ConfigError
from polymodal.eval import robustness as rb
from polymodal.train import classifier_fit

G = torch.Generator


def test_relative_robustness_golden() -> None:
    assert rb.relative_robustness([0, 1], [0.8, 0.8]) == pytest.approx(0.8)
    # trapezoid over [0, 0.5, 1]: (0.9 + 0.7) / 4 + (0.7 + 0.1) / 4 = 0.6
    assert rb.relative_robustness([0, 0.5, 1], [0.9, 0.7, 0.1]) == pytest.approx(0.6)
    with pytest.raises(ConfigError):
        rb.relative_robustness([0, 0], [1, 1])


def test_effective_robustness_golden() -> None:
    base = [0.8, 0.6, 0.4]
    assert rb.effective_robustness([0, 0.5, 1], base, base) == pytest.approx(0.0)
    # the same curve shifted up: same drop rate, so no effective robustness
    assert rb.effective_robustness([0, 0.5, 1], [0.9, 0.7, 0.5], base) == pytest.approx(0.0)
    # flat at 0.9: beats the shifted baseline 0.9, 0.7, 0.5 by 0, 0.2, 0.4 -> area 0.2
    assert rb.effective_robustness([0, 0.5, 1], [0.9, 0.9, 0.9], base) == pytest.approx(0.2)


@pytest.mark.parametrize("name", ["gaussian_noise", "salt_pepper", "blur", "occlusion"])
def test_image_imperfections(name: str) -> None:
    x = torch.rand(3, 1, 28, 28, generator=G().manual_seed(0))
    fn = rb.IMPERFECTIONS["image"][name]
    torch.testing.assert_close(fn(x, 0.0, G().manual_seed(1)), x)
    small = (fn(x, 0.3, G().manual_seed(1)) - x).abs().mean()
    big = (fn(x, 1.0, G().manual_seed(1)) - x).abs().mean()
    assert 0 < small < big  # more level, more damage


@pytest.mark.parametrize("name", ["white_noise", "dropout"])
def test_audio_imperfections(name: str) -> None:
    t = torch.arange(8000) / 8000
    x = torch.sin(2 * torch.pi * 440 * t).repeat(2, 1)
    fn = rb.IMPERFECTIONS["audio"][name]
    torch.testing.assert_close(fn(x, 0.0, G().manual_seed(1)), x)
    err = [float((fn(x, lv, G().manual_seed(1)) - x).pow(2).mean()) for lv in (0.2, 0.6, 1.0)]
    assert err[0] < err[1] < err[2]
    if name == "white_noise":  # level 1 is SNR -10 dB: noise power 10x the signal's (0.5)
        assert err[2] == pytest.approx(5.0, rel=0.05)


def test_text_imperfections() -> None:
    texts = ["what colour is the circle ?"] * 20
    assert rb.text_typos(texts, 0.0, G().manual_seed(0)) == texts
    assert rb.text_word_drop(texts, 0.0, G().manual_seed(0)) == texts
    assert rb.text_word_drop(texts, 1.0, G().manual_seed(0)) == [""] * 20
    typo = rb.text_typos(texts, 1.0, G().manual_seed(0))
    assert sum(t != texts[0] for t in typo) == 20
    with pytest.raises(ConfigError, match="unknown imperfection"):
        rb.corrupt(None, "image", "fog", 0.5)  # type: ignore[arg-type]


def test_robustness_cli_writes_report_and_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from polymodal.cli.main import main
    from test_classifier import _tiny_data

    for module in (classifier_fit, rb):  # training reads through one, evaluation through the other
        monkeypatch.setattr(module, "load_data", lambda spec, splits=("train", "val", "test"), **_: _tiny_data())
    for fusion in ("late", "tensor"):
        assert main(["fuse", "train", "--data", "builtin:avdigits", "--fusion", fusion, "--out", str(tmp_path / fusion), "--epochs", "2"]) == 0
    out = tmp_path / "report"
    assert main(["robustness", "--model", str(tmp_path / "tensor"), "--model", str(tmp_path / "late"), "--out", str(out)]) == 0
    report = json.loads((out / "robustness.json").read_text())
    assert [r["model"] for r in report] == ["tensor", "late"]
    assert set(report[0]["accuracy"]) == {"all", "missing:image", "missing:audio"}
    curves = {(c["modality"], c["imperfection"]): c for c in report[0]["curves"]}
    assert set(curves) == {("image", n) for n in rb.IMPERFECTIONS["image"]} | {("audio", n) for n in rb.IMPERFECTIONS["audio"]}
    for c in curves.values():
        assert c["relative"] == pytest.approx(rb.relative_robustness(c["levels"], c["accuracies"]))
        assert c["effective"] is not None  # against the late-fusion run given
    assert all(c["effective"] == pytest.approx(0.0) for c in report[1]["curves"])  # late vs itself
    assert len(list(out.glob("robustness_*.png"))) == 7  # 6 imperfections + the missing-modality bars
    assert (out / "robustness_missing.png").stat().st_size > 1000
    md = (out / "robustness.md").read_text()
    assert "| tensor | tensor |" in md
    assert "against 'late'" in md
    g = curves[("image", "blur")]
    assert f"{g['relative']:.3f} ({g['effective']:+.3f})" in md
