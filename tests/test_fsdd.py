"""The vendored Free Spoken Digit Dataset: counts, splits, losslessness, and the vendoring script."""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from polymodal.data.fsdd import FSDD_SAMPLE_RATE, FSDD_SPEAKERS, fsdd_split, load_fsdd
from polymodal.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def everything() -> list:
    return load_fsdd()


def int16_sha256(samples: np.ndarray) -> str:
    return hashlib.sha256(np.rint(samples * 32768).astype("<i2").tobytes()).hexdigest()


def test_all_3000_clips_with_golden_sizes(everything: list) -> None:
    assert len(everything) == 3000
    assert len({r.key for r in everything}) == 3000
    frames = [r.audio.num_frames for r in everything]
    # golden values measured on the raw WAV files at upstream commit 26eb9aaf
    assert (min(frames), max(frames), sum(frames)) == (1148, 18262, 10498424)
    assert {r.audio.sample_rate for r in everything} == {FSDD_SAMPLE_RATE}
    assert collections.Counter(r.extra["speaker"] for r in everything) == dict.fromkeys(FSDD_SPEAKERS, 500)
    assert collections.Counter(r.label for r in everything) == dict.fromkeys(range(10), 300)
    for r in everything:
        digit, speaker, index = r.key.split("_")
        assert (r.label, r.extra["speaker"], r.extra["index"]) == (int(digit), speaker, int(index))
        assert r.audio.samples.ndim == 1 and r.audio.samples.dtype == np.float32


def test_clips_are_lossless_copies_of_the_wavs(everything: list) -> None:
    by_key = {r.key: r for r in everything}
    # sha256 of the int16 samples of the raw WAV files (upstream commit 26eb9aaf)
    assert int16_sha256(by_key["0_george_0"].audio.samples) == (
        "c1b8dce038e0ee30439df98852e05f30b1423d509c70cc370a0db7dcb5744ea6"
    )
    assert int16_sha256(by_key["7_jackson_32"].audio.samples) == (
        "f15ed680df0118a0af9e5aa137dcc0db2feb8ee8791cb5efbf4a668b35236f79"
    )


def test_splits_have_golden_counts_and_partition_the_data(everything: list) -> None:
    splits = {name: load_fsdd(name) for name in ("train", "val", "test")}
    assert {name: len(records) for name, records in splits.items()} == {
        "train": 2400,
        "val": 300,
        "test": 300,
    }
    keys = {name: {r.key for r in records} for name, records in splits.items()}
    assert keys["train"] | keys["val"] | keys["test"] == {r.key for r in everything}
    assert not (keys["train"] & keys["val"] or keys["train"] & keys["test"] or keys["val"] & keys["test"])
    assert {r.extra["index"] for r in splits["test"]} == set(range(5))  # the official test split
    assert {r.extra["index"] for r in splits["val"]} == set(range(5, 10))
    for name, per_cell in (("train", 40), ("val", 5), ("test", 5)):
        cells = collections.Counter((r.label, r.extra["speaker"]) for r in splits[name])
        assert len(cells) == 60 and set(cells.values()) == {per_cell}
        assert {r.extra["split"] for r in splits[name]} == {name}
    assert [fsdd_split(i) for i in (0, 4, 5, 9, 10, 49)] == ["test", "test", "val", "val", "train", "train"]
    assert [r.key for r in load_fsdd("test")] == [r.key for r in splits["test"]]  # deterministic order


def test_records_own_their_samples() -> None:
    first = load_fsdd("test", speakers=["theo"])
    first[0].audio.samples[:] = 0.0
    again = load_fsdd("test", speakers=["theo"])
    assert again[0].key == first[0].key and np.abs(again[0].audio.samples).max() > 0


def test_speaker_filter_and_resampling() -> None:
    theo = load_fsdd("val", speakers=("theo",))
    assert len(theo) == 50 and {r.extra["speaker"] for r in theo} == {"theo"}
    wide = load_fsdd("val", speakers=("theo",), sample_rate=16000)
    assert [r.key for r in wide] == [r.key for r in theo]
    assert all(
        w.audio.sample_rate == 16000 and w.audio.num_frames == 2 * t.audio.num_frames
        for w, t in zip(wide, theo)
    )


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="split"):
        load_fsdd("validation")
    with pytest.raises(ConfigError, match="unknown FSDD speakers"):
        load_fsdd(speakers=["bob"])
    with pytest.raises(ConfigError, match="sequence of names"):
        load_fsdd(speakers="theo")
    with pytest.raises(ConfigError):
        load_fsdd(sample_rate=-8000)


def test_assets_carry_licence_and_attribution() -> None:
    assets = ROOT / "src" / "polymodal" / "data" / "assets" / "fsdd"
    assert (assets / "LICENSE.txt").read_text().startswith("Attribution-ShareAlike 4.0 International")
    readme = (assets / "README.md").read_text()
    assert (
        "Jakobovski" in readme
        and "26eb9aaf76e81b692f806f9140c2d2777410d7a1" in readme
        and "CC BY-SA 4.0" in readme
    )
    with zipfile.ZipFile(assets / "fsdd.zip") as archive:
        names = archive.namelist()
    assert len(names) == 3001 and "manifest.csv" in names


def test_vendor_script_round_trips_a_tiny_raw_checkout(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("vendor_fsdd", ROOT / "scripts" / "vendor_fsdd.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    raw = tmp_path / "raw"
    (raw / "recordings").mkdir(parents=True)
    (raw / "SOURCE.txt").write_text("repo=Jakobovski/free-spoken-digit-dataset commit=0123456789abcdef\n")
    rng = np.random.default_rng(0)
    originals = {}
    for name in ("3_theo_0", "3_theo_12", "9_lucas_7"):
        samples = rng.integers(-3000, 3000, int(rng.integers(1000, 3000)), dtype=np.int16)
        soundfile.write(raw / "recordings" / f"{name}.wav", samples, 8000, subtype="PCM_16")
        originals[name] = samples
    licence = tmp_path / "licence.txt"
    licence.write_text("Attribution-ShareAlike 4.0 International\n")
    out = tmp_path / "out"
    script.vendor(raw, out, licence)
    first = (out / "fsdd.zip").read_bytes()
    script.vendor(raw, out, None)  # keeps LICENSE.txt, writes the same bytes again
    assert (out / "fsdd.zip").read_bytes() == first
    assert "0123456789abcdef" in (out / "README.md").read_text()
    assert (out / "LICENSE.txt").read_text() == licence.read_text()
    with zipfile.ZipFile(out / "fsdd.zip") as archive:
        manifest = archive.read("manifest.csv").decode().splitlines()
        assert manifest[0] == "name,digit,speaker,index,frames" and len(manifest) == 4
        for name, samples in originals.items():
            decoded, rate = soundfile.read(archive.open(f"{name}.flac"), dtype="int16")
            assert rate == 8000 and np.array_equal(decoded, samples)
