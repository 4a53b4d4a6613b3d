"""A user's labelled folder as classifier splits: the hashed split, the train/val/test layout, skipped files,
frames and audio read compactly yet identical to the full decode, and ``fuse train|eval --data FOLDER``."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from polymodal.data.labelled_folder import folder_modalities, load_labelled_folder, split_of
from polymodal.errors import ConfigError, DataError


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (200, 10, 10)).save(path)


def test_split_of_draws_one_tenth_val_one_tenth_test_and_depends_only_on_the_key() -> None:
    keys = [f"label{i % 7}/file{i:05d}" for i in range(5000)]
    splits = [split_of(k) for k in keys]
    assert splits == [split_of(k) for k in keys]  # a function of the key alone
    for name, p in (("val", 0.1), ("test", 0.1), ("train", 0.8)):
        got = splits.count(name) / len(keys)
        assert abs(got - p) < 4 * math.sqrt(p * (1 - p) / len(keys)), (name, got)
    # golden values: a change of the hash would move users' files between splits
    held_out = {k: split_of(k) for k in (f"cat/{i:03d}" for i in range(30)) if split_of(k) != "train"}
    assert held_out == {"cat/002": "test", "cat/004": "test", "cat/008": "test", "cat/009": "test",
                        "cat/015": "val", "cat/018": "test", "cat/028": "val", "cat/029": "val"}


def test_a_one_level_folder_is_split_by_the_hash_and_strays_are_named(tmp_path: Path) -> None:
    for label in ("cat", "dog"):
        for i in range(60):
            _png(tmp_path / label / f"{i:03d}.png")
    _png(tmp_path / "stray.png")  # outside any label folder
    got = load_labelled_folder(tmp_path)
    assert got.layout == "hashed"
    seen = {r.key: split for split, records in got.splits.items() for r in records}
    assert len(seen) == 120 and all(split_of(k) == s for k, s in seen.items())
    assert all(r.label == r.key.split("/")[0] and isinstance(r.image, Path) for rs in got.splits.values() for r in rs)
    assert [(Path(b.source).name, b.problem) for b in got.bad] == [("stray.png", "not inside a label folder (LABEL/FILE)")]
    assert folder_modalities(tmp_path) == {"image"}
    only = load_labelled_folder(tmp_path, ["val"])
    assert set(only.splits) == {"val"} and only.splits["val"] == got.splits["val"]


def test_train_val_test_folders_are_the_splits(tmp_path: Path) -> None:
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        for i in range(n):
            _png(tmp_path / split / ("a" if i % 2 else "b") / f"{i}.png")
    got = load_labelled_folder(tmp_path)
    assert got.layout == "splits" and {s: len(r) for s, r in got.splits.items()} == {"train": 5, "val": 2, "test": 3}
    assert {r.label for r in got.splits["train"]} == {"a", "b"}
    shutil.rmtree(tmp_path / "val")
    with pytest.raises(DataError, match="no val/ folder"):
        load_labelled_folder(tmp_path)


def test_bad_folders_and_splits_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder"):
        load_labelled_folder(tmp_path / "missing")
    with pytest.raises(ConfigError, match="unknown split"):
        load_labelled_folder(tmp_path, ["validation"])
    _png(tmp_path / "cat" / "only.png")
    wanted = "val" if split_of("cat/only") != "val" else "test"
    with pytest.raises(DataError, match=f"no readable {wanted} records.*train/, val/ and test/ folders"):
        load_labelled_folder(tmp_path, [wanted])


# ---------------------------------------------------------------------------------------------------
# Videos: compact reading and the commands (need PyAV and the MNIST glyphs avclips draws)
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list:
    pytest.importorskip("av")
    pytest.importorskip("mlxtend")
    from polymodal.data.avclips import load_avclips

    return load_avclips("val", n=8, cache_dir=tmp_path_factory.mktemp("avclips"))


def _layout(root: Path, clips: list, splits: dict[str, slice]) -> None:
    from polymodal.data.avclips import AVCLIPS_LABELS

    for split, part in splits.items():
        for r in clips[part]:
            dst = root / split / AVCLIPS_LABELS[r.label] / Path(r.source).name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(r.source, dst)


def test_read_compact_gives_the_model_the_same_inputs_as_the_full_decode(clips) -> None:
    """Frames kept at the model's count and size and the track at its rate: the inputs are bit for bit those
    of the fully decoded file (every frame, native size and rate), for grey and RGB frame encoders."""
    from dataclasses import replace

    from polymodal.data.decode import decode
    from polymodal.data.record import Record
    from polymodal.models.build import load_preset
    from polymodal.models.classifier import MultimodalClassifier
    from polymodal.models.classifier_inputs import read_compact

    grey = load_preset("avclips-gated").replace(labels=("a", "b"))
    video = grey.encoders["video"]
    rgb = grey.replace(encoders={**grey.encoders, "video": replace(video, channels=3, image_size=24)})
    for config in (grey, rgb):
        model = MultimodalClassifier(config)
        paths = [Record(video=Path(r.source), label="x", key=f"x/{i}", source=r.source) for i, r in enumerate(clips[:3])]
        full = [replace(p, video=decode("video", p.video)) for p in paths]
        compact = [read_compact(config, p) for p in paths]
        assert compact[0].video.frames.shape == (video.num_frames, config.encoders["video"].image_size,
                                                 config.encoders["video"].image_size, 3)
        assert compact[0].video.audio.sample_rate == config.encoders["audio"].sample_rate
        a, b = model.preprocess(full), model.preprocess(compact)
        for m in ("video", "audio"):
            assert torch.equal(a.values[m], b.values[m]), m


def test_fuse_train_and_eval_read_a_labelled_folder_and_name_a_broken_clip(tmp_path: Path, clips, capsys) -> None:
    from polymodal.cli.main import main

    root = tmp_path / "videos"
    _layout(root, clips, {"train": slice(0, 8), "val": slice(0, 8), "test": slice(0, 8)})  # the plumbing, not generalisation
    for split in ("train", "test"):
        broken = root / split / "left-rising" / "broken.mp4"
        broken.parent.mkdir(parents=True, exist_ok=True)
        broken.write_bytes(b"not a video at all")
    out = tmp_path / "run"
    assert main(["fuse", "train", "--data", str(root), "--fusion", "gated", "--epochs", "1", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"skipped 1 file(s) that could not be used: {root / 'train' / 'left-rising' / 'broken.mp4'}: " in err
    # said also with --quiet, which silences the progress lines
    assert main(["fuse", "train", "--data", str(root), "--fusion", "gated", "--epochs", "1", "--out", str(tmp_path / "q"), "-q"]) == 0
    err = capsys.readouterr().err
    assert "epoch" not in err and f"skipped 1 file(s) that could not be read, first {root / 'train' / 'left-rising' / 'broken.mp4'}: " in err
    cfg = json.loads((out / "config.json").read_text())
    assert "video" in json.dumps(cfg)  # a folder of videos picks the avclips preset
    capsys.readouterr()
    assert main(["fuse", "eval", "--model", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["accuracy"]) == {"all", "missing:video", "missing:audio"}
    assert doc["data"] == str(root.resolve()) and doc["n"] == 8
    assert [Path(b["source"]).name for b in doc["skipped"]] == ["broken.mp4"]
    assert "cannot" in doc["skipped"][0]["problem"] or "decode" in doc["skipped"][0]["problem"]
