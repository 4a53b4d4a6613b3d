"""Deterministic train/val/test assignment from a hash of each example's key.

The rule: ``u = int.from_bytes(sha256((salt + key).encode("utf-8")).digest()[:8], "big") / 2**64``
places each key at a pseudo-random point of [0, 1); keys with ``u < test`` are ``"test"``, keys with
``test <= u < test + val`` are ``"val"``, the rest ``"train"``.

Why a hash and not a seeded shuffle: a key's split depends on nothing but the key and the salt, so
adding, removing or reordering examples never moves any other example between splits, and the same
file lands in the same split on every machine. Test is the first interval, so changing ``val`` never
moves an example into or out of test. Changing ``salt`` draws a fresh, independent split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Literal, TypeVar

from polymodal.errors import ConfigError

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
DEFAULT_SALT = "polymodal-v1"

T = TypeVar("T")


def split_unit(key: str, *, salt: str = DEFAULT_SALT) -> float:
    """The point in [0, 1) that ``key`` hashes to (first 8 bytes of sha256(salt + key), big-endian).

    Args:
        key: a stable id of the example (a hexcode, an image path relative to its manifest).
        salt: prefix mixed into the hash; another salt gives an independent split.
    """
    digest = hashlib.sha256((salt + key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(key: str, *, val: float = 0.1, test: float = 0.15, salt: str = DEFAULT_SALT) -> Split:
    """Which split ``key`` belongs to: ``"test"`` if u < test, ``"val"`` if u < test + val, else ``"train"``.

    Args:
        key: a stable id of the example.
        val: expected fraction of keys in the validation split.
        test: expected fraction of keys in the test split.
        salt: prefix mixed into the hash (see :func:`split_unit`).

    Raises:
        ConfigError: fractions outside [0, 1] or summing to more than 1.
    """
    _check_fractions(val, test)
    u = split_unit(key, salt=salt)
    if u < test:
        return "test"
    if u < test + val:
        return "val"
    return "train"


def select_split(
    items: Iterable[T],
    split: Split,
    *,
    key: Callable[[T], str],
    val: float = 0.1,
    test: float = 0.15,
    salt: str = DEFAULT_SALT,
) -> list[T]:
    """Keep the items whose ``key(item)`` falls in ``split``, in their original order.

    Args:
        items: records (or anything) to filter.
        split: ``"train"``, ``"val"`` or ``"test"``.
        key: gives the stable id of an item, e.g. ``lambda r: r.key``.
        val: validation fraction, as in :func:`split_of`.
        test: test fraction, as in :func:`split_of`.
        salt: hash salt, as in :func:`split_of`.

    Raises:
        ConfigError: an unknown split name or bad fractions.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    _check_fractions(val, test)
    return [it for it in items if split_of(key(it), val=val, test=test, salt=salt) == split]


def _check_fractions(val: float, test: float) -> None:
    if not (0.0 <= val <= 1.0 and 0.0 <= test <= 1.0 and val + test <= 1.0):
        raise ConfigError(f"split fractions need 0 <= val, test and val + test <= 1; got val={val}, test={test}")
