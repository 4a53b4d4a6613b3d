"""The support set: golden mixing on hand-made embeddings, persistence, and its use by zero-shot."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from polymodal.errors import CheckpointError, ConfigError, ShapeError
from polymodal.models.support import SUPPORT_FILE, SupportConfig, SupportSet


def _unit(*rows: list[float]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


@pytest.fixture
def support() -> SupportSet:
    # Three training pairs in a 3-d joint space: pair i's image lies along axis i, its caption at 45°.
    images = torch.eye(3)
    captions = _unit([1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0])
    return SupportSet(images, captions, SupportConfig(text_k=1, text_weight=2.0, image_k=2, image_temperature=0.5,
                                                      image_weight=0.5))


def test_augment_text_mixes_in_the_image_of_the_nearest_caption(support: SupportSet) -> None:
    t = _unit([0.9, 0.1, 0.8])  # nearest caption: pair 0's (1, 0, 1)
    want = F.normalize(t + 2.0 * torch.tensor([[1.0, 0.0, 0.0]]), dim=-1)
    torch.testing.assert_close(support.augment_text(t), want)


def test_augment_image_weights_neighbour_captions_by_softmax(support: SupportSet) -> None:
    x = _unit([0.8, 0.6, 0.0])  # nearest images: pair 0 (cos 0.8) then pair 1 (cos 0.6)
    w = torch.softmax(torch.tensor([0.8, 0.6]) / 0.5, dim=0)
    proto = F.normalize(w[0] * support.text_emb[0] + w[1] * support.text_emb[1], dim=0)
    want = F.normalize(x + 0.5 * proto, dim=-1)
    torch.testing.assert_close(support.augment_image(x), want)


def test_zero_weight_is_the_identity_and_k_is_capped(support: SupportSet) -> None:
    plain = SupportSet(support.image_emb, support.text_emb, SupportConfig(text_k=50, text_weight=0.0, image_weight=0.0))
    x = torch.randn(4, 3)
    torch.testing.assert_close(plain.augment_text(x), F.normalize(x, dim=-1))
    torch.testing.assert_close(plain.augment_image(x), F.normalize(x, dim=-1))


def test_bad_shapes_and_settings_are_named() -> None:
    with pytest.raises(ShapeError, match="support"):
        SupportSet(torch.zeros(3, 4), torch.zeros(2, 4))
    s = SupportSet(torch.randn(3, 4), torch.randn(3, 4))
    with pytest.raises(ShapeError, match="text_emb"):
        s.augment_text(torch.zeros(2, 5))
    with pytest.raises(ConfigError, match="text_k"):
        SupportConfig(text_k=0)


def test_save_load_round_trip(tmp_path, support: SupportSet) -> None:
    back = SupportSet.load(support.save(tmp_path / SUPPORT_FILE))
    assert back.config == support.config
    torch.testing.assert_close(back.image_emb, support.image_emb, atol=1e-3, rtol=0)  # stored as float16
    torch.testing.assert_close(back.text_emb, support.text_emb, atol=1e-3, rtol=0)


def test_load_rejects_foreign_files(tmp_path) -> None:
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, str(other))
    with pytest.raises(CheckpointError, match="not a support set"):
        SupportSet.load(other)
    bad_cfg = tmp_path / "bad.safetensors"
    save_file({"image_emb": torch.zeros(1, 2), "text_emb": torch.zeros(1, 2)}, str(bad_cfg),
              metadata={"config": json.dumps({"text_k": 1, "unknown": 3})})
    with pytest.raises(CheckpointError, match="bad support config"):
        SupportSet.load(bad_cfg)


@pytest.fixture(scope="module")
def aligner():
    from polymodal.models.aligner import Aligner, AlignerConfig

    torch.manual_seed(0)
    return Aligner(AlignerConfig(image_size=64)).eval()


def test_zeroshot_uses_the_support_set_and_it_survives_save_load(tmp_path, aligner) -> None:
    from polymodal.models.io import load, save

    img = Image.new("RGB", (64, 64), (220, 40, 40))
    x = aligner.encode_image([img])  # (1, D)
    labels = ["a cat", "a rocket"]
    # Two support pairs: caption "a rocket" with this very image, caption "a cat" with an image orthogonal
    # to it. With support, "a rocket" must gain probability over the untrained model's plain prediction.
    other = torch.randn_like(x)
    other = F.normalize(other - (other @ x.T) * x, dim=-1)
    aligner.support = SupportSet(torch.cat([x, other]), aligner.encode_text(["a rocket", "a cat"]),
                                 SupportConfig(text_k=1, text_weight=4.0))
    try:
        plain = dict(aligner.zeroshot([img], labels, support=False)[0])
        mixed = dict(aligner.zeroshot([img], labels)[0])
        assert mixed["a rocket"] > plain["a rocket"] + 0.05
        assert mixed["a rocket"] > 0.5
        save(aligner, tmp_path / "m")
        assert (tmp_path / "m" / SUPPORT_FILE).is_file()
        back = load(tmp_path / "m")
        assert back.support is not None and back.support.config == aligner.support.config
        assert dict(back.zeroshot([img], labels)[0]) == pytest.approx(mixed, abs=1e-3)
    finally:
        aligner.support = None
    save(aligner, tmp_path / "m")  # a model without a support set removes the stale file
    assert not (tmp_path / "m" / SUPPORT_FILE).exists()
    assert load(tmp_path / "m").support is None


def test_zeroshot_cli_support_switch(tmp_path, aligner, capsys) -> None:
    from polymodal.cli.main import main
    from polymodal.models.io import save

    img = Image.new("RGB", (64, 64), (40, 40, 220))
    path = tmp_path / "blue.png"
    img.save(path)
    x = aligner.encode_image([img])
    other = F.normalize(torch.randn_like(x), dim=-1)
    aligner.support = SupportSet(torch.cat([x, other]), aligner.encode_text(["a rocket", "a cat"]),
                                 SupportConfig(text_k=1, text_weight=4.0))
    try:
        save(aligner, tmp_path / "m")
        want = {flag: dict(aligner.zeroshot([img], ["a cat", "a rocket"], support=flag)[0]) for flag in (True, False)}
    finally:
        aligner.support = None
    for flag, args in ((True, []), (False, ["--no-support"])):
        assert main(["zeroshot", "--model", str(tmp_path / "m"), "--labels", "a cat,a rocket", str(path), "--json", *args]) == 0
        got = {lb["label"]: lb["score"] for lb in json.loads(capsys.readouterr().out)[0]["labels"]}
        assert got == pytest.approx(want[flag], abs=1e-3)
    assert want[True]["a rocket"] > want[False]["a rocket"]
