"""split_of: the documented sha256 rule, expected fractions, and stability."""

from __future__ import annotations

import hashlib

import pytest

from polymodal.data.splits import select_split, split_of, split_unit
from polymodal.errors import ConfigError


def reference_unit(key: str, salt: str = "polymodal-v1") -> float:
    """The rule as written in the docstring and the OpenMoji README."""
    return int(hashlib.sha256((salt + key).encode("utf-8")).hexdigest()[:16], 16) / 2**64


def test_matches_documented_rule():
    for key in ["1F600", "imgs/a.png", "", "é/ü.jpg"]:
        assert split_unit(key) == reference_unit(key)
        assert split_unit(key, salt="other") == reference_unit(key, "other")
    # Golden values, so an accidental change of the rule (and of every split) fails here.
    keys = ["1F600", "1F603", "1F604", "1F601", "1F606", "1F605", "1F923", "1F602"]
    assert [split_of(k) for k in keys] == ["train", "test", "train", "train", "train", "val", "train", "val"]


def test_fractions_are_respected():
    keys = [f"img_{i:05d}.png" for i in range(20000)]
    counts = {s: 0 for s in ("train", "val", "test")}
    for k in keys:
        counts[split_of(k)] += 1
    # Binomial std for n=20000: about 42 (val) and 50 (test); allow 4 std.
    assert abs(counts["val"] - 2000) < 170 and abs(counts["test"] - 3000) < 200


def test_test_split_does_not_move_when_val_changes_and_salt_reshuffles():
    keys = [f"k{i}" for i in range(3000)]
    test_a = {k for k in keys if split_of(k, val=0.1) == "test"}
    test_b = {k for k in keys if split_of(k, val=0.3) == "test"}
    assert test_a == test_b
    test_c = {k for k in keys if split_of(k, salt="polymodal-v2") == "test"}
    assert 0.05 < len(test_a & test_c) / len(test_a) < 0.3  # independent draw: overlap about 15%


def test_select_split_partitions_in_order():
    items = [f"x{i}" for i in range(500)]
    parts = [select_split(items, s, key=str) for s in ("train", "val", "test")]
    assert sorted(sum(parts, [])) == sorted(items)
    assert all(p == sorted(p, key=items.index) for p in parts)


@pytest.mark.parametrize("kw", [{"val": -0.1}, {"test": 1.5}, {"val": 0.6, "test": 0.5}])
def test_bad_fractions(kw):
    with pytest.raises(ConfigError, match="fractions"):
        split_of("a", **kw)


def test_unknown_split_name():
    with pytest.raises(ConfigError, match="split must be one of train, val, test"):
        select_split(["a"], "dev", key=str)  # type: ignore[arg-type]
