"""Image preprocessing: every model's pixels, pinned bit for bit to the pipelines as they were before #17.

The references below are frozen copies of the separate pipelines the project had (EfficientNet tower crop
and pad, CLIP, FLAVA, the text-to-image generator, the fusion classifier, and the Hugging Face-style eval
transform), written with NumPy on top of Pillow. They are the golden outputs: whatever the code does
internally, each model's input tensor must equal its reference exactly on RGBA, grey, palette and
odd-aspect images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from polymodal.data.pixels import ImagePreprocess, Normalization, preprocess_images
from polymodal.errors import ConfigError, DataError

# ------------------------------------------------------------------------------------------ images


def _noise(h: int, w: int, channels: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)


def sample_images() -> dict[str, Image.Image]:
    """Fixed images covering every branch: aspect ratios, upsampling, alpha, grey, palette."""
    rgba = _noise(25, 40, 4, 3)
    rgba[..., 3] = np.linspace(0, 255, 40, dtype=np.uint8)[None, :]  # alpha ramp left to right
    palette = Image.fromarray(_noise(20, 20, 3, 4)).quantize(8)
    palette.info["transparency"] = 0
    la = _noise(23, 17, 2, 6)
    la[..., 1] = 128
    return {
        "tall": Image.fromarray(_noise(70, 50, 3, 0)),
        "wide": Image.fromarray(_noise(50, 70, 3, 1)),
        "square": Image.fromarray(_noise(33, 33, 3, 2)),
        "strip": Image.fromarray(_noise(31, 200, 3, 7)),
        "small": Image.fromarray(_noise(30, 7, 3, 8)),
        "rgba": Image.fromarray(rgba, "RGBA"),
        "grey": Image.fromarray(_noise(45, 31, 1, 5)[..., 0], "L"),
        "palette": palette,
        "la": Image.fromarray(la, "LA"),
    }


IMAGES = sample_images()
NAMES = sorted(IMAGES)


# ------------------------------------------------------------------------------------------ references
# Frozen copies of the pipelines before #17. Do not "fix" them: they define today's numerics.


def ref_effnet(img: Image.Image, size: int, fit: str) -> np.ndarray:
    """towers/preprocess.py image_to_tensor: (3, S, S) float32, (x - 127) / 128."""
    img = img.convert("RGB")
    if fit == "pad":
        w, h = img.size
        if w != h:
            arr = np.asarray(img)
            border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
            colour = tuple(int(c) for c in np.median(border, axis=0))
            side = max(w, h)
            out = Image.new("RGB", (side, side), colour)
            out.paste(img, ((side - w) // 2, (side - h) // 2))
            img = out
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    else:
        short = size + 32
        scale = short / min(img.width, img.height)
        w, h = max(size, round(img.width * scale)), max(size, round(img.height * scale))
        img = img.resize((w, h), Image.Resampling.BICUBIC)
        left, top = (w - size) // 2, (h - size) // 2
        img = img.crop((left, top, left + size, top + size))
    arr = np.asarray(img, dtype=np.float32)
    return ((arr - 127.0) / 128.0).transpose(2, 0, 1)


def ref_clip(img: Image.Image, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """models/clip.py pixels + CLIP.preprocess: transparency onto white, bicubic shorter side, centre crop."""
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        img = bg
    else:
        img = img.convert("RGB")
    w, h = img.size
    scale = size / min(w, h)
    rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
    if (rw, rh) != (w, h):
        img = img.resize((rw, rh), Image.Resampling.BICUBIC)
    left, top = (rw - size) // 2, (rh - size) // 2
    arr = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    m, s = np.asarray(mean, dtype=np.float32), np.asarray(std, dtype=np.float32)
    return ((arr - m) / s).transpose(2, 0, 1)


def ref_squash(img: Image.Image, size: int, mode: str, resample: Image.Resampling) -> np.ndarray:
    """The plain resize to size x size of FLAVA, the generator and the classifier, as uint8 (S, S, C)."""
    arr = np.asarray(img.convert(mode).resize((size, size), resample))
    return arr[..., None] if arr.ndim == 2 else arr


def ref_flava(img: Image.Image, size: int) -> np.ndarray:
    """flava/data.py pixels: Lanczos, (x / 255 - 0.5) / 0.5."""
    x = ref_squash(img, size, "RGB", Image.Resampling.LANCZOS).astype(np.float32) / np.float32(255.0)
    return ((x - np.float32(0.5)) / np.float32(0.5)).transpose(2, 0, 1)


def ref_generator(img: Image.Image, size: int) -> np.ndarray:
    """generate/train.py from_pil: Lanczos, x / 127.5 - 1."""
    x = ref_squash(img, size, "RGB", Image.Resampling.LANCZOS).astype(np.float32)
    return (x / np.float32(127.5) - np.float32(1.0)).transpose(2, 0, 1)


def ref_classifier(img: Image.Image, size: int, channels: int) -> np.ndarray:
    """models/classifier_inputs.py: grey or RGB, bilinear, x / 255."""
    mode = "L" if channels == 1 else "RGB"
    return (ref_squash(img, size, mode, Image.Resampling.BILINEAR).astype(np.float32) / 255.0).transpose(2, 0, 1)


def ref_hf_clip(img: Image.Image, size: int) -> np.ndarray:
    """data/image_transforms.py EvalTransform.clip: the long side truncated, as Hugging Face's processor."""
    img = img.convert("RGB")
    if img.width <= img.height:
        w, h = size, max(size, int(img.height * size / img.width))
    else:
        w, h = max(size, int(img.width * size / img.height)), size
    if (w, h) != img.size:
        img = img.resize((w, h), Image.Resampling.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    arr = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32).transpose(2, 0, 1)
    mean = torch.tensor([255.0 * m for m in (0.48145466, 0.4578275, 0.40821073)]).reshape(3, 1, 1)
    std = torch.tensor([255.0 * s for s in (0.26862954, 0.26130258, 0.27577711)]).reshape(3, 1, 1)
    return ((torch.from_numpy(arr) - mean) / std).numpy()


def stack(refs: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(refs))


def assert_identical(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == torch.float32 and got.shape == want.shape, (got.dtype, got.shape, want.shape)
    assert torch.equal(got, want), f"max abs difference {(got - want).abs().max().item()}"


# ------------------------------------------------------------------------------------------ golden parity


@pytest.mark.parametrize("fit", ["crop", "pad"])
@pytest.mark.parametrize("size", [24, 32])
def test_efficientnet_tower_pixels_are_unchanged(size: int, fit: str) -> None:
    from polymodal.towers.preprocess import effnet_preprocess

    images = [IMAGES[n] for n in NAMES]
    want = stack([ref_effnet(im, size, fit) for im in images])
    assert_identical(effnet_preprocess(size, fit)(images), want)
    assert_identical(preprocess_images(images, ImagePreprocess.effnet(size, fit)), want)


def test_clip_pixels_are_unchanged() -> None:
    from polymodal.models.clip import CLIP, CLIPConfig
    from polymodal.towers.text_transformer import TextTransformerConfig
    from polymodal.towers.vit import ViTConfig

    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    config = CLIPConfig(
        embed_dim=8,
        vision=ViTConfig(image_size=16, patch_size=8, width=16, layers=1, heads=2),
        text=TextTransformerConfig(context_length=8, vocab_size=300, width=16, layers=1, heads=2),
        image_mean=mean,
        image_std=std,
    )
    model = CLIP(config)
    images = [IMAGES[n] for n in NAMES]
    assert_identical(model.preprocess(images), stack([ref_clip(im, 16, mean, std) for im in images]))


def test_flava_pixels_are_unchanged() -> None:
    from polymodal.flava.data import pixels

    images = [IMAGES[n] for n in NAMES]
    assert_identical(pixels(images, size=16), stack([ref_flava(im, 16) for im in images]))


def test_generator_pixels_are_unchanged() -> None:
    from polymodal.generate import from_pil

    images = [IMAGES[n] for n in NAMES]
    assert_identical(from_pil(images, size=8), stack([ref_generator(im, 8) for im in images]))


@pytest.mark.parametrize("channels", [1, 3])
def test_classifier_pixels_are_unchanged(channels: int) -> None:
    from polymodal.data.record import Record
    from polymodal.models.classifier import ClassifierConfig
    from polymodal.models.classifier_encoders import ImageEncoderConfig
    from polymodal.models.classifier_inputs import raw_inputs

    config = ClassifierConfig(
        encoders={"image": ImageEncoderConfig(channels=channels, image_size=12, widths=(4, 4))}
    )
    records = [Record(image=IMAGES[n], label=0, key=n) for n in NAMES]
    got = raw_inputs(config, records).values["image"]
    assert_identical(got, stack([ref_classifier(IMAGES[n], 12, channels) for n in NAMES]))


def test_hugging_face_clip_eval_pixels_are_unchanged() -> None:
    for n in NAMES:
        assert_identical(ImagePreprocess.hf_clip(16).one(IMAGES[n]), torch.from_numpy(ref_hf_clip(IMAGES[n], 16)))


# ------------------------------------------------------------------------------------------ models carry theirs


def test_every_model_carries_its_preprocessing() -> None:
    """Each model's ``preprocess`` is its ``image_preprocess`` spec, and the spec reproduces the old pixels."""
    from polymodal.caption.model import CaptionConfig, Captioner
    from polymodal.flava.config import FlavaConfig
    from polymodal.flava.model import FlavaModel
    from polymodal.generate.model import FlowUNet, GeneratorConfig
    from polymodal.models.classifier import ClassifierConfig, MultimodalClassifier
    from polymodal.models.classifier_encoders import ImageEncoderConfig
    from polymodal.text import WordTokenizer

    images = [IMAGES[n] for n in NAMES]
    flava = FlavaModel(FlavaConfig(vocab_size=16, image_size=16, patch_size=8, width=16, heads=2))
    assert_identical(flava.preprocess(images), stack([ref_flava(im, 16) for im in images]))
    gen = FlowUNet(GeneratorConfig(image_size=8))
    assert_identical(gen.image_preprocess(images), stack([ref_generator(im, 8) for im in images]))
    clf = MultimodalClassifier(ClassifierConfig(
        encoders={"image": ImageEncoderConfig(channels=3, image_size=12, widths=(4, 4))}, labels=("a", "b")))
    assert clf.image_preprocess is not None
    assert_identical(clf.image_preprocess(images), stack([ref_classifier(im, 12, 3) for im in images]))
    tok = WordTokenizer.build(["a b"])
    cap = Captioner(CaptionConfig(vocab_size=tok.vocab_size, image_size=32), tok)
    assert_identical(cap.image_preprocess(images), stack([ref_effnet(im, 32, "crop") for im in images]))


# ------------------------------------------------------------------------------------------ the spec


def test_spec_round_trips_through_json() -> None:
    import json

    from polymodal.flava.data import image_preprocess as flava_spec

    specs = [ImagePreprocess.effnet(224, "pad"), ImagePreprocess.clip(32, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)),
             ImagePreprocess.hf_clip(24), flava_spec(16, channels=1)]
    for spec in specs:
        back = ImagePreprocess.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert back == spec and back.id == spec.id
    assert len({s.id for s in specs}) == len(specs)
    with pytest.raises(ConfigError, match="unknown image preprocessing keys: colour"):
        ImagePreprocess.from_dict({"size": 8, "colour": "rgb"})


def test_spec_validates_its_fields() -> None:
    with pytest.raises(ConfigError, match="fit must be one of crop, pad, squash"):
        ImagePreprocess(size=8, fit="stretch")
    with pytest.raises(ConfigError, match="resize must be an int >= size=32"):
        ImagePreprocess(size=32, resize=16)
    with pytest.raises(ConfigError, match="1 channels but a normalisation of 3"):
        ImagePreprocess(size=8, channels=1)
    with pytest.raises(ConfigError, match="positive stds"):
        Normalization((0.0, 0.0, 0.0), (1.0, 0.0, 1.0))
    with pytest.raises(ConfigError, match="size must be a positive int"):
        ImagePreprocess(size=0)


def test_bad_images_are_named_errors() -> None:
    spec = ImagePreprocess(size=8)
    with pytest.raises(DataError, match="expected a PIL.Image.Image or a uint8 array, got list"):
        spec([[1, 2, 3]])  # type: ignore[list-item]
    with pytest.raises(DataError, match="got a float32 array of shape \\(4, 4, 3\\)"):
        spec([np.zeros((4, 4, 3), dtype=np.float32)])
    with pytest.raises(DataError, match="single image"):
        spec(IMAGES["tall"])  # type: ignore[arg-type]
    empty = Image.new("RGB", (0, 3))
    with pytest.raises(DataError, match="no pixels"):
        spec([empty])
    assert spec([]).shape == (0, 3, 8, 8)


def test_arrays_and_images_give_the_same_input() -> None:
    spec = ImagePreprocess.clip(16)
    arrays = [np.asarray(IMAGES[n]) for n in ("tall", "rgba", "grey")]
    assert_identical(spec(arrays), spec([Image.fromarray(a) for a in arrays]))


def test_with_size_keeps_the_crop_margin() -> None:
    spec = ImagePreprocess.effnet(224).with_size(96)
    assert spec == ImagePreprocess.effnet(96) and spec.resize == 128
    assert ImagePreprocess.clip(224).with_size(64) == ImagePreprocess.clip(64)


@pytest.mark.parametrize("unit_stats", [True, False])
def test_hugging_face_processor_config_does_what_the_spec_does(unit_stats: bool) -> None:
    """``preprocessor_config.json`` written for a spec makes transformers' CLIPImageProcessor compute it."""
    transformers = pytest.importorskip("transformers")
    from dataclasses import replace

    from polymodal.models.hf_clip import preprocessor_config

    spec = replace(ImagePreprocess.clip(32), alpha="drop", long_side="floor") if unit_stats else ImagePreprocess.hf_clip(32)
    config = {k: v for k, v in preprocessor_config(spec).items() if k != "image_processor_type"}
    processor_cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    processor = processor_cls(**config)
    for n in ("tall", "wide", "strip", "grey"):
        ref = processor(images=IMAGES[n].convert("RGB"), return_tensors="pt")["pixel_values"][0]
        torch.testing.assert_close(spec.one(IMAGES[n]), ref, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="only centre-crops RGB"):
        preprocessor_config(ImagePreprocess(size=8, fit="squash"))


def test_normalization_leaves_its_input_alone_and_keeps_cache_ids() -> None:
    from polymodal.towers.preprocess import PREPROCESS_ID, preprocess_id

    x = torch.full((3, 2, 2), 255.0)
    out = Normalization((0.5,) * 3, (0.5,) * 3, scale=255.0)(x)
    assert torch.equal(out, torch.ones(3, 2, 2)) and torch.equal(x, torch.full((3, 2, 2), 255.0))
    assert torch.equal(Normalization()(torch.full((1, 3, 1, 1), 7, dtype=torch.uint8)), torch.full((1, 3, 1, 1), 7.0))
    # caches of tower outputs written before the refactor stay valid: the ids did not change
    assert PREPROCESS_ID == "effnet-lite0:224:bicubic:center256:x-127/128"
    assert preprocess_id(128, "pad") == "effnet-lite0:128:bicubic:padsquare:x-127/128"
