"""The aligner end to end: model, cached trunks, training, checkpoints, resume, CLI and bad input."""

from __future__ import annotations

import gc
import json
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import polymodal
from polymodal.cli.main import main
from polymodal.data.openmoji import load_openmoji
from polymodal.data.pairs import load_pairs
from polymodal.errors import CheckpointError, ConfigError
from polymodal.models.aligner import Aligner, AlignerConfig
from polymodal.models.io import save
from polymodal.train.feature_cache import FeatureCache
from polymodal.train.fit import DualEncoderTrainer, TrainConfig
from polymodal.train.trunk_features import image_trunk_features

SMALL = AlignerConfig(unlock_image=1, unlock_text=1, image_size=64)


@pytest.fixture(scope="module")
def model() -> Aligner:
    return Aligner(SMALL)


@pytest.fixture(scope="module")
def emoji() -> list:
    return load_openmoji("train")[:40]


def _bomb_png(path: Path, width: int = 40000, height: int = 40000) -> None:
    """A tiny valid PNG whose header claims width x height: a decompression bomb's signature."""
    buf = Path(path)
    Image.new("1", (8, 8)).save(buf)
    d = bytearray(buf.read_bytes())
    d[16:24] = struct.pack(">II", width, height)
    d[29:33] = struct.pack(">I", zlib.crc32(bytes(d[12:29])))
    buf.write_bytes(bytes(d))


def _manifest(tmp: Path, emoji: list, *, bad: bool) -> Path:
    """A CSV of OpenMoji pairs in a folder, optionally with one row of every kind of bad input."""
    img_dir = tmp / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, r in enumerate(emoji):
        p = img_dir / f"{r.key}.png"
        im = r.image
        # Odd but valid formats that must train: RGBA, palette, grayscale, 16-bit.
        if i % 4 == 1:
            im = im.convert("RGBA")
        elif i % 4 == 2:
            im = im.convert("P")
        elif i % 4 == 3:
            im = im.convert("L")
        im.save(p)
        rows.append((f"img/{p.name}", r.text))
    arr16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(arr16).save(img_dir / "sixteen.png")
    rows.append(("img/sixteen.png", "a sixteen bit gradient"))
    if bad:
        (img_dir / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
        _bomb_png(img_dir / "bomb.png")
        rows += [("img/missing.png", "a missing file"), ("img/corrupt.png", "a corrupt png"),
                 ("img/bomb.png", "an oversized image"), (rows[0][0], "   ")]
    path = tmp / "pairs.csv"
    with open(path, "w") as f:
        f.write("image,text\n")
        for img, text in rows:
            f.write(f'{img},"{text}"\n')
    return path


# ------------------------------------------------------------------------------------------- model
def test_embeddings_are_normalised_and_shaped(model, emoji):
    img = model.encode_image([r.image for r in emoji[:3]])
    txt = model.encode_text(["a red heart", "grinning face", "a flag"])
    assert img.shape == txt.shape == (3, SMALL.embed_dim)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(3))
    raw = model.encode_text(["a red heart"], normalize=False)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(1))


def test_split_towers_equal_the_whole_tower(model, emoji):
    """Cached trunk + trainable top must equal one pass of the pretrained tower."""
    x = model.preprocess([r.image for r in emoji[:4]])
    with torch.no_grad():
        whole = model.image_tower.embed(x)
        split = model.image_top(model.image_trunk(x))
        torch.testing.assert_close(split, whole, atol=1e-3, rtol=1e-4)
        tokens = model.tokenize(["a red heart", "grinning face with big eyes"])
        full = model.text_tower.mean_pool(model.text_tower(tokens.input_ids, tokens.attention_mask), tokens.attention_mask)
        torch.testing.assert_close(model.text_top(model.text_trunk(tokens)), full, atol=1e-5, rtol=1e-5)


def test_only_unlocked_parts_train(model):
    names = set(model.trainable_state_dict())
    assert "logit_scale" in names
    assert any(n.startswith("image_tower._blocks.15.") for n in names)
    assert not any(n.startswith("image_tower._blocks.14.") for n in names)
    assert any(n.startswith("text_tower.encoder.layer.5.") for n in names)
    assert not any(n.startswith("text_tower.encoder.layer.4.") for n in names)
    assert not any(n.startswith("text_tower.embeddings") for n in names)


def test_config_validation():
    with pytest.raises(ConfigError, match="unlock_image"):
        AlignerConfig(unlock_image=17)
    with pytest.raises(ConfigError, match="unknown aligner config keys: bogus"):
        AlignerConfig.from_dict({"bogus": 1})


def test_feature_cache_reuses_trunk_outputs(model, emoji, tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path)
    images = [r.image for r in emoji[:6]]
    first = image_trunk_features(model, images, view=1, cache=cache, progress=False)
    calls = []
    monkeypatch.setattr(model, "image_trunk", lambda x: calls.append(x) or torch.zeros(1))
    again = image_trunk_features(model, images, view=1, cache=FeatureCache(tmp_path), progress=False)
    assert calls == []  # read back from disk, not recomputed
    torch.testing.assert_close(first, again)


# ---------------------------------------------------------------------------- training and resume
def _tiny_train(tmp_path, emoji, epochs, *, resume=False):
    manifest = _manifest(tmp_path / "data", emoji, bad=False)
    train = load_pairs(str(manifest), None)
    cfg = TrainConfig(epochs=epochs, batch_size=8, image_views=1, patience=10, seed=3)
    torch.manual_seed(0)
    model = Aligner(SMALL)
    trainer = DualEncoderTrainer(model, train, train, cfg, cache=FeatureCache(tmp_path / "cache"), progress=False)
    return model, trainer


def test_training_lowers_the_loss_and_resume_is_exact(tmp_path, emoji):
    model_a, tr_a = _tiny_train(tmp_path, emoji, epochs=3)
    fit_a = tr_a.fit(tmp_path / "ckpt_a")
    losses = [h["train_loss"] for h in fit_a.history]
    assert losses[-1] < losses[0]

    # Crash right after epoch 2's checkpoint, then resume to 3. (The checkpoint keeps the run's settings,
    # epochs=3 included: a resume under other settings is refused.)
    model_b, tr_b = _tiny_train(tmp_path, emoji, epochs=3)
    save = tr_b.save

    def save_then_crash(path: Path, model_config: dict) -> None:
        save(path, model_config)
        if tr_b.epoch == 2:
            raise KeyboardInterrupt

    tr_b.save = save_then_crash  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        tr_b.fit(tmp_path / "ckpt_b")
    model_c, tr_c = _tiny_train(tmp_path, emoji, epochs=3)
    fit_c = tr_c.fit(tmp_path / "ckpt_b", resume=True)
    assert [h["epoch"] for h in fit_c.history] == [1, 2, 3]
    np.testing.assert_allclose([h["train_loss"] for h in fit_c.history], losses, rtol=1e-5)
    for k, v in model_a.trainable_state_dict().items():
        torch.testing.assert_close(model_c.trainable_state_dict()[k], v)


def test_a_fixed_epoch_run_follows_the_same_schedule_and_keeps_its_last_epoch(tmp_path, emoji):
    _, tr_a = _tiny_train(tmp_path, emoji, epochs=3)
    losses = [h["train_loss"] for h in tr_a.fit().history]
    model_b, tr_b = _tiny_train(tmp_path, emoji, epochs=3)
    fit_b = tr_b.fit(tmp_path / "ckpt", fixed_epochs=2)
    assert [h["epoch"] for h in fit_b.history] == [1, 2] and fit_b.best_epoch == 2 and not fit_b.stopped_early
    np.testing.assert_allclose([h["train_loss"] for h in fit_b.history], losses[:2], rtol=1e-5)
    from polymodal.core.checkpoint import load_weights

    last = load_weights(tmp_path / "ckpt" / "model.safetensors")  # written at the end of epoch 2
    for k, v in model_b.trainable_state_dict().items():
        torch.testing.assert_close(v, last[k])
    with pytest.raises(ConfigError, match="fixed_epochs"):
        tr_b.fit(fixed_epochs=4)


def _live_images() -> int:
    gc.collect()
    return sum(issubclass(type(o), Image.Image) for o in gc.get_objects())  # type(): no __class__ lookups


def test_training_data_holds_no_decoded_images(tmp_path, emoji):
    # A decoded 1024x768 photo is 2.4 MB: a loader that kept every one filled 24 GB with 7k photos
    # (#16 item 3). Pairs read from a manifest, and a trainer built on them, keep features, not pixels.
    from polymodal.data.pairs import concat_pairs

    manifest = _manifest(tmp_path / "data", emoji, bad=False)
    before = _live_images()
    train, val = load_pairs(str(manifest), "train"), load_pairs(str(manifest), "val")
    both = concat_pairs(train, val)
    cfg = TrainConfig(epochs=1, batch_size=8, image_views=1)
    trainer = DualEncoderTrainer(Aligner(SMALL), train, val, cfg, cache=FeatureCache(tmp_path / "cache"), progress=False)
    assert _live_images() == before
    assert len(both) == len(train) + len(val) and len(trainer.views[1]) == len(train)
    # Reading an image still gives the picture, decoded on demand.
    subset = both.take([3, 1])
    assert subset.keys == [both.keys[3], both.keys[1]]
    assert np.array_equal(np.asarray(subset.images[0]), np.asarray(both.images[3]))


def test_concat_pairs_keeps_order_and_shared_labels():
    from polymodal.data.pairs import concat_pairs

    a, b = load_pairs("builtin:openmoji", "val"), load_pairs("builtin:openmoji", "test")
    both = concat_pairs(a, b)
    assert len(both) == len(a) + len(b) and both.keys == a.keys + b.keys and both.texts == a.texts + b.texts
    assert both.labels["group"] == a.labels["group"] + b.labels["group"]
    b.labels.pop("subgroup")
    assert set(concat_pairs(a, b).labels) == {"group"}
    with pytest.raises(ConfigError):
        concat_pairs()


def test_save_and_load_round_trip(tmp_path, model, emoji):
    save(model, tmp_path / "m")
    loaded = polymodal.load(tmp_path / "m")
    imgs = [r.image for r in emoji[:2]]
    torch.testing.assert_close(loaded.encode_image(imgs), model.encode_image(imgs))
    assert (tmp_path / "m" / "model.safetensors").stat().st_size < 30e6  # only the trained parts


def test_checkpoint_with_unknown_keys_is_refused(tmp_path, model):
    from safetensors.torch import save_file

    save(model, tmp_path / "m")
    sd = model.trainable_state_dict()
    sd["evil.weight"] = torch.zeros(1)
    save_file(sd, str(tmp_path / "m" / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unknown.*evil.weight"):
        polymodal.load(tmp_path / "m")
    (tmp_path / "m" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        polymodal.load(tmp_path / "m")


# ------------------------------------------------------------------------------------ CLI and bad input
def _cli_train(manifest: Path, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(manifest), "--out", str(out), "--image-size", "64", "--epochs", "2",
                 "--batch-size", "8", "--views", "0", "--unlock", "0", "--unlock-text", "0", *extra])


def test_bad_rows_are_skipped_counted_and_named(tmp_path, emoji, capsys):
    manifest = _manifest(tmp_path / "data", emoji, bad=True)
    assert _cli_train(manifest, tmp_path / "run") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    bad = metrics["bad_records"]
    problems = {Path(b["source"]).name if b["source"].endswith(".png") else "caption": b["problem"] for b in bad["items"]}
    assert bad["count"] == 4, bad
    assert set(problems) == {"missing.png", "corrupt.png", "bomb.png", "caption"}
    assert "limit" in problems["bomb.png"]
    assert sum(metrics["split_sizes"].values()) == len(emoji) + 1  # every good row, odd formats included
    report = (tmp_path / "run" / "report.md").read_text()
    assert "corrupt.png" in report and "bomb.png" in report
    out = capsys.readouterr().out
    assert "skipped 4 bad record(s)" in out


def test_the_saved_model_is_the_refit_on_train_and_val(tmp_path, emoji, capsys):
    manifest = _manifest(tmp_path / "data", emoji, bad=False)
    imgs = [r.image for r in emoji[:2]]
    assert _cli_train(manifest, tmp_path / "refit") == 0  # --refit is the default
    assert _cli_train(manifest, tmp_path / "run", "--no-refit") == 0
    refit = json.loads((tmp_path / "refit" / "metrics.json").read_text())
    sizes = refit["split_sizes"]
    assert refit["refit"] == {"epochs": refit["best_epoch"], "train_pairs": sizes["train"] + sizes["val"]}
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["refit"] is None
    assert "refit on the train and val pairs" in (tmp_path / "refit" / "report.md").read_text()
    a, b = polymodal.load(tmp_path / "refit"), polymodal.load(tmp_path / "run")
    assert len(a.support.image_emb) == sizes["train"] + sizes["val"] and len(b.support.image_emb) == sizes["train"]
    # The ImageNet transfer (on by default) is saved with the model; its gate reads the images it trained on.
    assert len(a.transfer.reference) == sizes["train"] + sizes["val"] and len(b.transfer.reference) == sizes["train"]
    assert not torch.allclose(a.encode_image(imgs), b.encode_image(imgs))
    capsys.readouterr()
    assert main(["eval", "--model", str(tmp_path / "refit"), "--data", str(manifest), "--split", "val", "--json"]) == 0
    assert "not held out" in capsys.readouterr().err

    # A run that stopped before its refit (here: one run without it) resumes into the same refit model.
    assert _cli_train(manifest, tmp_path / "run", "--resume") == 0
    torch.testing.assert_close(polymodal.load(tmp_path / "run").encode_image(imgs), a.encode_image(imgs))


def test_resume_under_other_settings_is_refused_before_any_work(tmp_path, emoji, capsys):
    # The checkpoint's optimiser and schedule would keep the old lr while config.json recorded the new
    # one (#16 item 5): a resume under other settings is an error naming them, raised before data loads.
    manifest = _manifest(tmp_path / "data", emoji, bad=False)
    assert _cli_train(manifest, tmp_path / "run", "--no-refit") == 0
    config = (tmp_path / "run" / "config.json").read_text()
    capsys.readouterr()
    assert _cli_train(manifest, tmp_path / "run", "--no-refit", "--resume", "--batch-size", "4", "--lr", "0.01") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot resume with other training settings" in err
    assert "batch_size=8, lr=0.001; this run asks for batch_size=4, lr=0.01" in err
    assert (tmp_path / "run" / "config.json").read_text() == config
    # The trainer's own resume checks too; settings that change nothing computed may differ.
    train = load_pairs(str(manifest), "train")
    cfg = TrainConfig(epochs=2, batch_size=8, image_views=0, lr=0.01)
    locked = replace(SMALL, unlock_image=0, unlock_text=0)  # as _cli_train trains it
    trainer = DualEncoderTrainer(Aligner(locked), train, train, cfg, cache=FeatureCache(None), progress=False)
    with pytest.raises(ConfigError, match="lr=0.001; this run asks for lr=0.01"):
        trainer.restore(tmp_path / "run" / "checkpoint")
    trainer = DualEncoderTrainer(Aligner(locked), train, train, replace(cfg, lr=1e-3, accum_steps=2),
                                 cache=FeatureCache(None), progress=False)
    trainer.restore(tmp_path / "run" / "checkpoint")
    assert trainer.epoch == 2


def test_strict_turns_a_bad_row_into_an_error(tmp_path, emoji, capsys):
    manifest = _manifest(tmp_path / "data", emoji, bad=True)
    assert _cli_train(manifest, tmp_path / "run", "--strict") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_wrong_column_is_a_one_line_error(tmp_path, capsys):
    p = tmp_path / "pairs.csv"
    p.write_text("path,caption\na.png,hello\n")
    assert _cli_train(p, tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "image" in err and "path, caption" in err


def _saved_model_and_pngs(tmp_path: Path, model: Aligner, records: list) -> list[str]:
    """``model`` saved in ``tmp_path/m``; the records' images as PNG files there, their paths."""
    save(model, tmp_path / "m")
    paths = [str(tmp_path / f"{r.key}.png") for r in records]
    for r, p in zip(records, paths, strict=True):
        r.image.save(p)
    return paths


def test_zeroshot_and_embed_cli(tmp_path, model, emoji, capsys):
    paths = _saved_model_and_pngs(tmp_path, model, emoji[:3])
    assert main(["zeroshot", "--model", str(tmp_path / "m"), "--labels", "cat, dog,flag", *paths, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["image"] for o in out] == paths
    for o in out:
        scores = [lb["score"] for lb in o["labels"]]
        assert scores == sorted(scores, reverse=True)
        assert {lb["label"] for lb in o["labels"]} == {"cat", "dog", "flag"}
        assert abs(sum(scores) - 1) < 1e-4

    texts = tmp_path / "t.txt"
    texts.write_text("a red heart\ngrinning face\n")
    assert main(["embed", "--model", str(tmp_path / "m"), "--texts", str(texts), "--out", str(tmp_path / "t.npy")]) == 0
    assert main(["embed", "--model", str(tmp_path / "m"), "--images", *paths, "--out", str(tmp_path / "i.npy")]) == 0
    t, i = np.load(tmp_path / "t.npy"), np.load(tmp_path / "i.npy")
    assert t.shape == (2, SMALL.embed_dim) and i.shape == (3, SMALL.embed_dim) and i.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(i, axis=1), 1, atol=1e-5)
    with torch.no_grad():
        expected = model.encode_image([r.image for r in emoji[:3]]).numpy()
    np.testing.assert_allclose(i, expected, atol=1e-5)


def test_embed_and_zeroshot_skip_an_unreadable_image_and_say_which_row_is_which(tmp_path, model, emoji, capsys):
    # One corrupt file used to abort embed and zeroshot for the whole batch, while train and index build
    # skipped it (#16 item 6). Now all four skip, report it, and stop at it with --strict.
    paths = _saved_model_and_pngs(tmp_path, model, emoji[:3])
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    inputs = [paths[0], str(corrupt), *paths[1:]]
    capsys.readouterr()

    assert main(["zeroshot", "--model", str(tmp_path / "m"), "--labels", "cat,dog", *inputs, "--json"]) == 0
    out, err = capsys.readouterr()
    assert [o["image"] for o in json.loads(out)] == paths
    assert "skipped 1 unreadable image(s)" in err and f"{corrupt}: " in err
    assert main(["zeroshot", "--model", str(tmp_path / "m"), "--labels", "cat,dog", *inputs, "--strict"]) == 2
    assert f"error: {corrupt}: " in capsys.readouterr().err

    npy = tmp_path / "new" / "folder" / "i.npy"  # a folder that does not exist yet
    assert main(["embed", "--model", str(tmp_path / "m"), "--images", *inputs, "--out", str(npy)]) == 0
    assert "skipped 1 unreadable image(s)" in capsys.readouterr().err
    rows = json.loads(npy.with_suffix(".rows.json").read_text())
    assert rows["rows"] == paths and [b["source"] for b in rows["skipped"]] == [str(corrupt)]
    with torch.no_grad():
        expected = model.encode_image([r.image for r in emoji[:3]]).numpy()
    np.testing.assert_allclose(np.load(npy), expected, atol=1e-5)
    assert main(["embed", "--model", str(tmp_path / "m"), "--images", *inputs, "--out", str(tmp_path / "s.npy"),
                 "--strict"]) == 2
    assert not (tmp_path / "s.npy").exists()

    texts = tmp_path / "t.txt"
    texts.write_text("a red heart\ngrinning face\n")
    assert main(["embed", "--model", str(tmp_path / "m"), "--texts", str(texts), "--out", str(tmp_path / "t")]) == 0
    assert json.loads((tmp_path / "t.rows.json").read_text())["rows"] == [f"{texts}:1", f"{texts}:2"]
    assert np.load(tmp_path / "t.npy").shape == (2, SMALL.embed_dim)


def test_embed_checks_its_output_before_any_work(tmp_path, model, monkeypatch, capsys):
    import polymodal.embed

    save(model, tmp_path / "m")
    texts = tmp_path / "t.txt"
    texts.write_text("a red heart\n")
    (tmp_path / "a-file").write_text("")
    monkeypatch.setattr(polymodal.embed, "embed_texts", lambda *a, **k: pytest.fail("embedded before the check"))
    out = tmp_path / "a-file" / "t.npy"  # its folder cannot be made: a file is in the way
    assert main(["embed", "--model", str(tmp_path / "m"), "--texts", str(texts), "--out", str(out)]) == 2
    assert "cannot create the output folder" in capsys.readouterr().err


def test_eval_says_which_rows_it_scored_and_can_score_all(tmp_path, model, emoji, capsys):
    # eval --data my.csv scored a hash-chosen test split without a word (#16 item 7).
    save(model, tmp_path / "m")
    manifest = _manifest(tmp_path / "data", emoji, bad=False)
    args = ["eval", "--model", str(tmp_path / "m"), "--data", str(manifest)]
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    sizes = {s: len(load_pairs(str(manifest), s)) for s in ("train", "val", "test")}
    assert (f"scored {sizes['test']} pairs of the test split (rows per split: train {sizes['train']}, "
            f"val {sizes['val']}, test {sizes['test']}; assigned by a hash of each image path") in out
    assert "--split all scores every row" in out
    assert main([*args, "--split", "all", "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["size"] == len(emoji) + 1 == sum(report["split_sizes"].values()) and report["split_by"] == "hash"
    assert "figures on every row are not held out" in captured.err

    # A split column chooses the rows; a value that names no split is a bad row, not a silent drop.
    rows = manifest.read_text().splitlines()
    column = ["train", "val", "test"] * len(rows)
    text = "\n".join([rows[0] + ",split"] + [f"{r},{column[i]}" for i, r in enumerate(rows[1:-1])]
                     + [rows[-1] + ",validation"]) + "\n"
    manifest.write_text(text)
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["split_by"] == "column" and report["size"] == report["split_sizes"]["test"] == (len(rows) - 2) // 3
    assert [b["problem"] for b in report["bad_records"]] == ["split 'validation' is not one of train, val, test"]
