"""The vendored OpenMoji subset: count, images, captions, splits, assets, and the script that made them."""

from __future__ import annotations

import csv
import importlib.util
import io
import zipfile
from collections import Counter
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polymodal.data.openmoji import OPENMOJI_GROUPS, load_openmoji, openmoji_subgroups
from polymodal.data.splits import split_of
from polymodal.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
ASSETS = resources.files("polymodal.data").joinpath("assets", "openmoji")
GOLDEN_SPLITS = {"train": 1857, "val": 245, "test": 362}


@pytest.fixture(scope="module")
def records():
    return load_openmoji()


def test_count_and_fields(records):
    assert len(records) == 2464
    assert len({r.key for r in records}) == 2464
    for r in records:
        assert r.image.mode == "RGB" and r.image.size == (72, 72)
        assert r.text and r.text.strip() and r.text == r.extra["annotation"]
        assert r.label in OPENMOJI_GROUPS and r.label == r.extra["group"]
        assert r.extra["subgroup"] and r.extra["emoji"]
        assert isinstance(r.extra["tags"], list) and all(t.strip() == t and t for t in r.extra["tags"])
        assert r.source == f"openmoji72.zip:{r.key}.png"
    # Every group is represented; skin-tone modifiers appear only alone (component group), never applied.
    assert set(Counter(r.label for r in records)) == set(OPENMOJI_GROUPS)
    toned = [r.key for r in records if any(t in r.key for t in ("1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"))]
    assert toned == ["1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"]
    first = records[0]
    assert (first.key, first.text, first.label, first.extra["emoji"]) == (
        "1F600", "grinning face", "smileys-emotion", "\U0001f600",
    )


def test_images_are_the_pngs_composited_on_white(records):
    with zipfile.ZipFile(io.BytesIO(ASSETS.joinpath("openmoji72.zip").read_bytes())) as z:
        for r in records[::250]:
            rgba = np.asarray(Image.open(io.BytesIO(z.read(f"{r.key}.png"))).convert("RGBA")).astype(float)
            a = rgba[..., 3:] / 255.0
            expected = np.rint(a * rgba[..., :3] + (1 - a) * 255.0)  # "over" a white background
            np.testing.assert_allclose(np.asarray(r.image), expected, atol=1)
    assert records[0].image.getpixel((0, 0)) == (255, 255, 255)


def test_splits_disjoint_stable_and_golden(records):
    parts = {s: load_openmoji(s) for s in ("train", "val", "test")}
    keys = {s: [r.key for r in recs] for s, recs in parts.items()}
    assert {s: len(k) for s, k in keys.items()} == GOLDEN_SPLITS
    assert len(keys["test"]) >= 350
    assert sorted(sum(keys.values(), [])) == sorted(r.key for r in records)
    for s, ks in keys.items():
        assert all(split_of(k) == s for k in ks)
    # Same order as the full list.
    order = {r.key: i for i, r in enumerate(records)}
    assert all([order[k] for k in ks] == sorted(order[k] for k in ks) for ks in keys.values())


def test_bad_split_name():
    with pytest.raises(ConfigError, match="split must be None or one of train, val, test"):
        load_openmoji("validation")


def test_subgroups():
    assert openmoji_subgroups("component") == ["skin-tone", "hair-style"]
    all_subgroups = openmoji_subgroups()
    assert all_subgroups[0] == "face-smiling" and len(all_subgroups) == len(set(all_subgroups))
    assert set(openmoji_subgroups("flags")) <= set(all_subgroups)
    with pytest.raises(ConfigError, match="unknown OpenMoji group 'faces'"):
        openmoji_subgroups("faces")


def test_vendored_files():
    z = zipfile.ZipFile(io.BytesIO(ASSETS.joinpath("openmoji72.zip").read_bytes()))
    infos = z.infolist()
    assert len(infos) == 2464 and all(i.compress_type == zipfile.ZIP_STORED for i in infos)
    rows = list(csv.DictReader(io.StringIO(ASSETS.joinpath("openmoji.csv").read_text(encoding="utf-8"))))
    assert [f"{r['hexcode']}.png" for r in rows] == [i.filename for i in infos]
    assert list(rows[0]) == ["hexcode", "emoji", "annotation", "tags", "group", "subgroup"]
    size_mb = sum(ASSETS.joinpath(n).read_bytes().__len__() for n in ("openmoji72.zip", "openmoji.csv")) / 1e6
    assert size_mb < 7
    assert "Attribution-ShareAlike 4.0 International" in ASSETS.joinpath("LICENSE.txt").read_text(encoding="utf-8")
    readme = ASSETS.joinpath("README.md").read_text(encoding="utf-8")
    for needle in ("OpenMoji – the open-source emoji and icon project", "https://openmoji.org", "17.0.0",
                   "CC BY-SA 4.0", "1,857 train, 245 val, 362 test", "polymodal-v1"):
        assert needle in readme, needle


# --- the vendoring script, on a tiny fake npm package ---------------------------------------------


def _vendor_module():
    spec = importlib.util.spec_from_file_location("vendor_openmoji", ROOT / "scripts" / "vendor_openmoji.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_raw(root: Path) -> Path:
    (root / "color" / "png72").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "LICENSE.txt").write_text("Attribution-ShareAlike 4.0 International\n", encoding="utf-8")
    header = ["emoji", "hexcode", "group", "subgroups", "annotation", "tags", "openmoji_tags", "skintone"]
    rows = [
        ["A", "AAA", "g1", "s1", "ay", "x, y", "y, z", ""],
        ["B", "BBB", "g1", "s1", "bee", "", "", "1"],  # skin-tone variant: dropped
        ["C", "CCC", "g2", "s2", "see", "", "only, openmoji", ""],
        ["D", "DDD", "g2", "s2", "dee", "", "", ""],  # no PNG: skipped
    ]
    with open(root / "data" / "openmoji.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    for hexcode in ("AAA", "BBB", "CCC"):
        buf = io.BytesIO()
        Image.new("RGBA", (72, 72), (len(hexcode), 0, 0, 128)).save(buf, "PNG")
        (root / "color" / "png72" / f"{hexcode}.png").write_bytes(buf.getvalue())
    return root


def test_vendor_script_is_reproducible(tmp_path, capsys):
    vendor = _vendor_module()
    raw = _fake_raw(tmp_path / "raw")
    assert vendor.main(["--raw", str(raw), "--out", str(tmp_path / "a")]) == 0
    assert "skipped DDD (dee)" in capsys.readouterr().err
    assert vendor.main(["--raw", str(raw), "--out", str(tmp_path / "b")]) == 0
    for name in ("openmoji72.zip", "openmoji.csv", "LICENSE.txt"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name

    with zipfile.ZipFile(tmp_path / "a" / "openmoji72.zip") as z:
        assert z.namelist() == ["AAA.png", "CCC.png"]
        assert z.read("AAA.png") == (raw / "color" / "png72" / "AAA.png").read_bytes()  # byte-for-byte
    assert (tmp_path / "a" / "openmoji.csv").read_text(encoding="utf-8") == (
        "hexcode,emoji,annotation,tags,group,subgroup\n"
        'AAA,A,ay,"x, y, z",g1,s1\n'
        'CCC,C,see,"only, openmoji",g2,s2\n'
    )


def test_every_group_and_subgroup_has_designed_label_text() -> None:
    from polymodal.data.openmoji import OPENMOJI_GROUPS, openmoji_subgroups
    from polymodal.data.openmoji_labels import GROUP_TEXT, SUBGROUP_MEMBERS, SUBGROUP_TEXT, subclass_texts

    assert set(GROUP_TEXT) == set(OPENMOJI_GROUPS)
    assert set(openmoji_subgroups()) <= set(SUBGROUP_TEXT)
    assert set(openmoji_subgroups()) <= set(SUBGROUP_MEMBERS)
    # six members each, so the sum of member probabilities favours no subgroup by its list's length
    assert {len(m) for m in SUBGROUP_MEMBERS.values()} == {6}
    assert all(len(set(m)) == 6 for m in SUBGROUP_MEMBERS.values())
    for group in OPENMOJI_GROUPS:  # hierarchical zero-shot: a group's subclasses are its subgroups and their members
        subgroups = openmoji_subgroups(group)
        want = [SUBGROUP_TEXT[s] for s in subgroups] + [m for s in subgroups for m in SUBGROUP_MEMBERS[s]]
        assert subclass_texts("group", group) == want
    assert subclass_texts("subgroup", "heart") == list(SUBGROUP_MEMBERS["heart"])
    assert subclass_texts("subgroup", "not-a-subgroup") == [] and subclass_texts("group", "not-a-group") == []
