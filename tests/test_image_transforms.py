"""Image preprocessing parity with Hugging Face's CLIP processor; seeded augmentations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.data.image_transforms import (
    CLIP,
    EFFNET,
    IMAGENET,
    ColorJitter,
    TrainTransform,
    to_float_tensor,
)
from polymodal.data.pixels import ImagePreprocess
from polymodal.errors import ConfigError, DataError

SHAPES = [(50, 70), (70, 50), (33, 33), (200, 31)]


def noise(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("hw", SHAPES)
def test_clip_eval_matches_transformers(hw: tuple[int, int]) -> None:
    transformers = pytest.importorskip("transformers")
    processor_cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    processor = processor_cls(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    img = noise(*hw, seed=1)
    ref = processor(images=img, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(ImagePreprocess.hf_clip(32).one(img), ref, atol=1e-5, rtol=0)


def test_normalizations() -> None:
    x = torch.full((3, 2, 2), 127.0)
    assert torch.all(EFFNET(x) == 0)
    white = IMAGENET(torch.full((3, 1, 1), 255.0)).flatten()
    torch.testing.assert_close(
        white, torch.tensor([(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225])
    )
    assert CLIP.mean[0] == pytest.approx(0.48145466 * 255)
    with pytest.raises(ConfigError):
        ImagePreprocess(size=32, resize=16)
    with pytest.raises(DataError, match="expected a PIL"):
        ImagePreprocess().one(np.zeros((4, 4, 3)))


def test_train_transform_is_seeded_by_its_generator() -> None:
    img = noise(60, 80)
    t = TrainTransform(size=32, degrees=10, jitter=ColorJitter(0.3, 0.3, 0.3))
    a = t(img, generator=torch.Generator().manual_seed(5))
    b = t(img, generator=torch.Generator().manual_seed(5))
    c = t(img, generator=torch.Generator().manual_seed(6))
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_identity_crop_and_flip() -> None:
    img = noise(40, 40)
    full = TrainTransform(size=20, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)
    plain = ImagePreprocess(size=20, normalization=EFFNET).one
    g = torch.Generator().manual_seed(0)
    assert torch.equal(full(img, generator=g), plain(img))
    flipped = TrainTransform(size=20, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=1.0)(img, generator=g)
    assert torch.equal(flipped, plain(img).flip(-1))


def test_crop_boxes_respect_scale_and_ratio() -> None:
    t = TrainTransform(size=16, scale=(0.2, 0.6), ratio=(0.5, 2.0))
    g = torch.Generator().manual_seed(0)
    areas, ratios = [], []
    for _ in range(300):
        left, top, w, h = t.crop_box(120, 80, g)
        assert 0 <= left and left + w <= 120 and 0 <= top and top + h <= 80
        areas.append(w * h / (120 * 80))
        ratios.append(w / h)
    assert 0.18 < min(areas) and max(areas) < 0.62  # rounding to whole pixels blurs the bounds a little
    assert 0.48 < min(ratios) and max(ratios) < 2.1
    assert np.std(np.log(ratios)) > 0.25  # log-uniform over log 4 has std 0.4
    # an impossible request falls back to the largest central crop at the nearest ratio
    assert TrainTransform(size=8, scale=(1.0, 1.0), ratio=(2.0, 2.0)).crop_box(100, 100, g) == (
        0,
        25,
        100,
        50,
    )


def test_rotation_fills_corners_and_jitter_stays_bounded() -> None:
    white = Image.new("RGB", (32, 32), (255, 255, 255))
    rotated = TrainTransform(
        size=32, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, degrees=45, normalization=EFFNET
    )
    out = rotated(white, generator=torch.Generator().manual_seed(1))
    pixels = out * 128 + 127  # undo (x - 127) / 128
    assert pixels[:, 0, 0].max() < 128 and pixels[:, 16, 16].min() > 250  # a black corner, a white centre
    jitter = ColorJitter(brightness=0.5, contrast=0.0, saturation=0.0)
    grey = Image.new("RGB", (4, 4), (100, 100, 100))
    values = [
        to_float_tensor(jitter(grey, torch.Generator().manual_seed(s)))[0, 0, 0].item() for s in range(40)
    ]
    assert 50 - 1 <= min(values) and max(values) <= 150 + 1 and max(values) - min(values) > 40
    with pytest.raises(ConfigError):
        ColorJitter(brightness=1.5)
    with pytest.raises(ConfigError):
        TrainTransform(scale=(0.5, 0.2))
    assert math.isclose(TrainTransform().ratio[1], 4 / 3)
