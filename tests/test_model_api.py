"""One model API (#17): every kind of the kind table goes create -> save -> load with the same class, config
and outputs, through polymodal.create / polymodal.save / polymodal.load alone; a model of the wrong kind
is refused with one sentence ("runs/fuse is a classifier; zeroshot needs an image-text model") before
any weight is read; a folder of an unknown kind names its file and the kind."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import polymodal
from polymodal.caption.model import CaptionConfig
from polymodal.data.audio import Audio
from polymodal.data.record import Record
from polymodal.errors import CheckpointError, ConfigError
from polymodal.flava.config import FlavaConfig
from polymodal.generate.model import GeneratorConfig
from polymodal.models.aligner import AlignerConfig
from polymodal.models.build import KINDS, config_to_dict, folder_kind, load_preset, require_kind
from polymodal.models.protocol import Model
from polymodal.text import WordTokenizer

WORDS = ["red", "heart", "green", "apple", "dog", "face", "cat", "a", "is", "there", "circle"]
TEXTS = ["a red heart", "green apple", "dog face", "is there a circle"]


def _images(n: int = 2, size: int = 40) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def _words() -> WordTokenizer:
    return WordTokenizer(WORDS)


# ------------------------------------------------------------------------------------------ one case per kind
@dataclass
class Case:
    """How to build a tiny model of a kind and what to compare after a round trip."""

    kind: str
    make: Callable[[], Any]  # -> a fresh model, from polymodal.create
    run: Callable[[Any], Any]  # model -> outputs on a fixed input
    save_kind: str | None = None


def _aligner() -> Any:
    model = polymodal.create(AlignerConfig(image_size=64, image_head_hidden=32))
    with torch.no_grad():  # move the heads off their initialisation, so a weight not loaded would show
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def _clip() -> Any:
    model = polymodal.create("clip-tiny")
    model.fit_tokenizer(TEXTS * 3)
    return model


def _classifier() -> Any:
    config = load_preset("fusion-late").replace(labels=("zero", "one", "two"))
    return polymodal.create(config)


def _audio_records() -> list[Record]:
    rng = np.random.default_rng(1)
    return [Record(image=img.convert("L"), audio=Audio(rng.uniform(-0.5, 0.5, 4000).astype(np.float32), 8000))
            for img in _images(2)]


def _vqa_classifier() -> Any:
    import dataclasses

    config = load_preset("vqa-cross")
    text = dataclasses.replace(config.encoders["text"], vocab=tuple(WORDS))
    return polymodal.create(config.replace(labels=("yes", "no"), encoders={**config.encoders, "text": text}))


def _vqa_records() -> list[Record]:
    return [Record(image=img, text=q) for img, q in zip(_images(2), ["is there a red circle", "a green dog"])]


def _captioner() -> Any:
    tok = _words()
    cfg = CaptionConfig(vocab_size=tok.vocab_size, feature_dim=12, grid_cells=4, dim=16, heads=2, depth=1, dropout=0.0)
    return polymodal.create(cfg, tokenizer=tok)


def _caption_run(model: Any) -> Any:
    grid = torch.randn(2, 12, 2, 2, generator=torch.Generator().manual_seed(0))
    ids = model.tokenizer.encode(["a red heart", "dog"], max_length=6).input_ids
    return model(grid, torch.as_tensor(ids))


def _generator() -> Any:
    return polymodal.create(GeneratorConfig(image_size=8, channels=8, cond_dim=6, emb_dim=8))


def _generate_run(model: Any) -> Any:
    g = torch.Generator().manual_seed(0)
    x, cond = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 6, generator=g)
    return model(x, torch.tensor([0.2, 0.7]), cond), model(x, torch.tensor([0.5, 0.5]), None)


def _flava_config() -> FlavaConfig:
    return FlavaConfig(vocab_size=_words().vocab_size, max_text_length=8, image_size=8, patch_size=4, width=16,
                       heads=2, image_layers=1, text_layers=1, multimodal_layers=1, embed_dim=8)


def _flava_run(model: Any) -> Any:
    tokens = model.tokenize(TEXTS[:2])
    images = model.preprocess(_images(2))
    return (model.multimodal_cls(images, tokens.input_ids, tokens.attention_mask),
            model.image_embedding(images), model.text_embedding(tokens.input_ids, tokens.attention_mask))


def _flava_vqa_run(model: Any) -> Any:
    tokens = model.flava.tokenize(TEXTS[:2])
    logits = model(model.flava.preprocess(_images(2)), tokens.input_ids, tokens.attention_mask)
    return logits, model.answer(_images(2), TEXTS[:2])


def _image_text_run(model: Any) -> Any:
    return model.encode_image(_images(2)), model.encode_text(TEXTS)


# case name -> case; the fusion and the VQA classifiers are one kind with different inputs
CASES = {
    "aligner": Case("aligner", _aligner, _image_text_run),
    "clip": Case("clip", _clip, _image_text_run),
    "hf-clip": Case("clip", _clip, _image_text_run, save_kind="hf-clip"),
    "classifier": Case("classifier", _classifier, lambda m: m(m.preprocess(_audio_records()))),
    "vqa-classifier": Case("classifier", _vqa_classifier, lambda m: m(m.preprocess(_vqa_records()))),
    "captioner": Case("captioner", _captioner, _caption_run),
    "text2image": Case("text2image", _generator, _generate_run),
    "flava": Case("flava", lambda: polymodal.create(_flava_config(), tokenizer=_words()), _flava_run),
    "flava-vqa": Case("flava-vqa", lambda: polymodal.create(_flava_config(), kind="flava-vqa", tokenizer=_words(),
                                                            answers=["yes", "no", "2"]), _flava_vqa_run),
}


def test_every_kind_of_the_table_has_a_round_trip_case():
    assert {c.save_kind or c.kind for c in CASES.values()} == set(KINDS)


def _same(a: Any, b: Any) -> None:
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    else:
        assert a == b


@pytest.mark.parametrize("name", sorted(CASES))
def test_create_save_load_round_trip(name, tmp_path):
    case = CASES[name]
    torch.manual_seed(0)
    model = case.make()
    assert isinstance(model, Model) and model.extra == {}
    model.eval()
    kind = case.save_kind or case.kind
    foreign = KINDS[kind].foreign
    extra = {} if foreign else {"data": "builtin:test", "training": {"epochs": 1}}
    polymodal.save(model, tmp_path / "m", kind=case.save_kind, extra=extra)
    assert folder_kind(tmp_path / "m")[0] == kind
    assert require_kind(str(tmp_path / "m"), {kind}, what="this test") == kind

    loaded = polymodal.load(tmp_path / "m")
    assert type(loaded) is type(model) and loaded.kind == model.kind and isinstance(loaded, Model)
    assert not loaded.training and loaded.source == tmp_path / "m" and len(loaded.model_id) == 16
    assert loaded.extra == extra
    if not foreign:  # a Hugging Face folder spells the config its own way (tokenizer kind, pixel stats)
        assert config_to_dict(loaded.config) == config_to_dict(model.config)
    with torch.no_grad():
        _same(case.run(loaded), case.run(model))

    # a loaded model saves again to the same folder contents, its extra included
    polymodal.save(loaded, tmp_path / "again", kind=case.save_kind)
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == json.loads(
        (tmp_path / "m" / "config.json").read_text())
    if not foreign:  # folders written before format_version (captioner, generator, FLAVA) still load
        cfg_path = tmp_path / "m" / "config.json"
        cfg = json.loads(cfg_path.read_text())
        del cfg["format_version"]
        cfg_path.write_text(json.dumps(cfg))
        with torch.no_grad():
            _same(case.run(polymodal.load(tmp_path / "m")), case.run(model))


# ------------------------------------------------------------------------------------------ wrong kinds
@pytest.fixture(scope="module")
def fuse_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("runs") / "fuse"
    torch.manual_seed(0)
    polymodal.save(_classifier(), folder)
    return folder


def test_wrong_kind_is_one_sentence_from_the_folder_alone(fuse_dir, tmp_path):
    image_text = {"aligner", "clip", "hf-clip"}
    with pytest.raises(ConfigError) as e:
        require_kind(str(fuse_dir), image_text, what="zeroshot")
    assert str(e.value) == f"{fuse_dir} is a classifier; zeroshot needs an image-text model"
    # the folder's config.json decides: no weight file is read
    bare = tmp_path / "fuse"
    bare.mkdir()
    (bare / "config.json").write_text((fuse_dir / "config.json").read_text())
    with pytest.raises(ConfigError, match=r"is a classifier; zeroshot needs an image-text model"):
        polymodal.load(bare, kinds=image_text, what="zeroshot")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        polymodal.load(bare, kinds={"classifier"}, what="fuse eval")


def test_wrong_kind_of_a_loaded_model_names_its_folder(fuse_dir):
    model = polymodal.load(fuse_dir)
    assert require_kind(model, {"classifier"}, what="fuse eval") == "classifier"
    with pytest.raises(ConfigError, match=rf"^{fuse_dir} is a classifier; polymodal caption needs a captioner$"):
        require_kind(model, {"captioner"}, what="polymodal caption")
    with pytest.raises(ConfigError, match="needs an image-text model or a FLAVA model$"):
        require_kind(model, {"clip", "flava"}, what="embed")
    with pytest.raises(ConfigError, match=r"^this Linear is not a polymodal model; embed needs"):
        require_kind(torch.nn.Linear(2, 2), {"clip"}, what="embed")
    with pytest.raises(ConfigError, match="unknown model kind 'clap'"):
        require_kind(model, {"clap"}, what="embed")


def test_unknown_kind_names_the_file_and_the_kind(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"kind": "diffusion", "model": {}}))
    with pytest.raises(CheckpointError, match=rf"^{tmp_path / 'config.json'}: unknown model kind 'diffusion'; known: aligner"):
        polymodal.load(tmp_path)
    with pytest.raises(CheckpointError, match="nothing: not a model folder \\(no such directory\\)"):
        polymodal.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty: not a model folder \\(no config.json\\)"):
        require_kind(tmp_path / "empty", {"clip"}, what="embed")


def test_save_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(ConfigError, match="Linear is not a polymodal model"):
        polymodal.save(torch.nn.Linear(2, 2), tmp_path / "x")
    with pytest.raises(ConfigError, match="kind 'hf-clip' saves CLIP models; got MultimodalClassifier"):
        polymodal.save(_classifier(), tmp_path / "x", kind="hf-clip")
    flava = polymodal.create(_flava_config())  # no tokenizer: the folder would not be self-contained
    with pytest.raises(ConfigError, match="no tokenizer"):
        polymodal.save(flava, tmp_path / "x")
    with pytest.raises(ConfigError, match=r"extra must not set \['tokenizer'\]"):
        polymodal.save(_captioner(), tmp_path / "x", extra={"tokenizer": "mine"})


# ------------------------------------------------------------------------------------------ usable alone
def test_a_loaded_captioner_and_generator_take_pictures_and_words_directly(tmp_path):
    """A loaded model carries its preprocessing: captions from PIL images, pictures from prompts, equal to
    the explicit pipeline (pretrained tower grids -> beam search; MiniLM vectors -> guided sampling)."""
    from polymodal.caption.decode import beam_search
    from polymodal.caption.model import extract_grids
    from polymodal.generate.flow import sample_images
    from polymodal.generate.model import to_pil
    from polymodal.towers.minilm import MiniLMTextTower

    torch.manual_seed(0)
    tok = _words()
    cfg = CaptionConfig(vocab_size=tok.vocab_size, grid_cells=4, dim=16, heads=2, depth=1, max_length=6, image_size=64)
    polymodal.save(polymodal.create(cfg, tokenizer=tok), tmp_path / "cap")
    captioner = polymodal.load(tmp_path / "cap")
    images = _images(2)
    want = beam_search(captioner, extract_grids(images, image_size=64), beam_size=1, no_repeat_ngram_size=2)
    assert captioner.caption(images).texts == want.texts and len(want.texts) == 2

    polymodal.save(polymodal.create(GeneratorConfig(image_size=8, channels=8, emb_dim=8)), tmp_path / "gen")
    generator = polymodal.load(tmp_path / "gen")
    pictures = generator.generate(["a red heart", "a dog"], num=2, steps=2, generator=torch.Generator().manual_seed(0))
    cond = MiniLMTextTower.pretrained().encode(["a red heart", "a dog"], normalize=True).repeat_interleave(2, 0)
    x = sample_images(generator, cond, steps=2, guidance=2.0, generator=torch.Generator().manual_seed(0))
    assert len(pictures) == 4 and all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(pictures, to_pil(x)))
    assert generator.preprocess(pictures).shape == (4, 3, 8, 8)
