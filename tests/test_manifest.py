"""read_pairs: CSV / JSONL / Parquet manifests, relative paths, one BadRecord per bad row."""

from __future__ import annotations

import csv
import io
import json
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polymodal.data.manifest import PairsSource, read_pairs
from polymodal.data.splits import split_of
from polymodal.errors import DataError


def png(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def oversized_png() -> bytes:
    d = bytearray(png(Image.new("1", (8, 8))))
    d[16:24] = struct.pack(">II", 30000, 30000)  # IHDR width, height
    d[29:33] = struct.pack(">I", zlib.crc32(bytes(d[12:29])))
    return bytes(d)


# Rows of the test manifest: (image path as written, caption, label, note); None caption = empty.
GOOD = [
    ("imgs/rgb.jpg", "a red square", "shape"),
    ("imgs/rgba.png", "a see-through circle", "shape"),
    ("imgs/palette.png", "a palette image", "flat"),
    ("imgs/gray.png", "a grey ramp", "flat"),
    ("imgs/deep16.png", "a sixteen-bit ramp", "flat"),
]
BAD = [
    ("imgs/missing.png", "never saved", "x", "file not found"),
    ("imgs/corrupt.png", "half a file", "x", "truncated or corrupt PNG"),
    ("imgs/rgb.jpg", "   ", "x", "empty caption"),
    ("imgs/huge.png", "a bomb", "x", "over the 64 Mpx limit"),
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pairs")
    imgs = root / "imgs"
    imgs.mkdir()
    Image.new("RGB", (12, 10), (255, 0, 0)).save(imgs / "rgb.jpg", "JPEG")
    rgba = np.zeros((10, 10, 4), dtype=np.uint8)
    rgba[3:7, 3:7] = (0, 0, 255, 255)
    (imgs / "rgba.png").write_bytes(png(Image.fromarray(rgba, mode="RGBA")))
    pal = Image.new("P", (4, 4))
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    (imgs / "palette.png").write_bytes(png(pal, transparency=0))
    (imgs / "gray.png").write_bytes(png(Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4))))
    (imgs / "deep16.png").write_bytes(png(Image.fromarray(np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000)))
    full = png(Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    (imgs / "corrupt.png").write_bytes(full[: len(full) // 2])
    (imgs / "huge.png").write_bytes(oversized_png())
    return root


def rows() -> list[dict[str, str]]:
    """Good and bad rows interleaved, so row numbers of the bad ones are known: 1, 3, 5, 7."""
    out = []
    for (g_path, g_text, g_label), (b_path, b_text, b_label, _) in zip(GOOD, BAD, strict=False):
        out.append({"image": g_path, "text": g_text, "label": g_label, "note": f"n-{g_path}"})
        out.append({"image": b_path, "text": b_text, "label": b_label, "note": "bad"})
    out.append({"image": GOOD[-1][0], "text": GOOD[-1][1], "label": GOOD[-1][2], "note": f"n-{GOOD[-1][0]}"})
    return out


def write_csv(path: Path, table: list[dict[str, str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    return path


def write_jsonl(path: Path, table: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in table), encoding="utf-8")
    return path


def write_parquet(path: Path, table: list[dict[str, str]]) -> Path:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(table), path)
    return path


WRITERS = {".csv": write_csv, ".jsonl": write_jsonl, ".parquet": write_parquet}


@pytest.mark.parametrize("suffix", list(WRITERS))
def test_good_rows_and_one_bad_record_per_bad_row(dataset, suffix):
    manifest = WRITERS[suffix](dataset / f"pairs{suffix}", rows())
    src = read_pairs(manifest)

    assert isinstance(src, PairsSource) and src.manifest == manifest
    assert [r.image for r in src.records] == [dataset / p for p, _, _ in GOOD]
    assert all(r.image.is_absolute() for r in src.records)
    assert [r.text for r in src.records] == [t for _, t, _ in GOOD]
    assert [r.label for r in src.records] == [lab for _, _, lab in GOOD]
    assert [r.key for r in src.records] == ["0", "2", "4", "6", "8"]
    assert [r.source for r in src.records] == [f"{manifest}:{i}" for i in (0, 2, 4, 6, 8)]
    assert src.records[0].extra == {"note": "n-imgs/rgb.jpg"}

    assert [b.row for b in src.bad] == [1, 3, 5, 7]
    # A bad file is named by its path; an empty caption by the manifest row.
    assert [b.source for b in src.bad] == [
        str(dataset / "imgs/missing.png"),
        str(dataset / "imgs/corrupt.png"),
        f"{manifest}:5",
        str(dataset / "imgs/huge.png"),
    ]
    for bad, (*_, problem) in zip(src.bad, BAD, strict=True):
        assert problem in bad.problem, (bad, problem)


def test_strict_raises_at_first_bad_row(dataset):
    manifest = write_csv(dataset / "strict.csv", rows())
    with pytest.raises(DataError) as err:
        read_pairs(manifest, strict=True)
    assert err.value.path == str(dataset / "imgs/missing.png")
    assert "file not found" in err.value.problem and "row 1 of strict.csv" in err.value.problem


def test_wrong_column_lists_columns_found(dataset):
    manifest = dataset / "pairs_wrong.csv"
    manifest.write_text("path,caption\nimgs/rgb.jpg,a red square\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_pairs(manifest)
    assert str(err.value) == f"{manifest}: no column 'image'; columns found: path, caption"
    assert "\n" not in str(err.value)
    # Naming the right columns reads it.
    src = read_pairs(manifest, image_col="path", text_col="caption")
    assert [r.text for r in src.records] == ["a red square"] and src.bad == []

    jsonl = write_jsonl(dataset / "wrong.jsonl", [{"image": "imgs/rgb.jpg", "caption": "x"}])
    with pytest.raises(DataError, match="no column 'text'; columns found: image, caption"):
        read_pairs(jsonl)


def test_unknown_suffix_and_missing_manifest(dataset):
    with pytest.raises(DataError, match=r"unknown manifest format '\.tsv'; use one of \.csv, \.jsonl, \.parquet"):
        read_pairs(dataset / "pairs.tsv")
    with pytest.raises(DataError, match="manifest not found"):
        read_pairs(dataset / "nothing.csv")
    empty = dataset / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="no header row"):
        read_pairs(empty)


def test_non_utf8_caption_is_a_bad_row(dataset):
    manifest = dataset / "latin1.csv"
    manifest.write_bytes(b"image,text\nimgs/rgb.jpg,caf\xe9 au lait\nimgs/gray.png,ok caption\n")
    src = read_pairs(manifest)
    assert [r.text for r in src.records] == ["ok caption"]
    assert [(b.row, b.source, b.problem) for b in src.bad] == [
        (0, f"{manifest}:0", "column 'text' is not valid UTF-8")
    ]

    jsonl = dataset / "latin1.jsonl"
    jsonl.write_bytes(
        b'{"image": "imgs/rgb.jpg", "text": "caf\xe9"}\n\n{"image": "imgs/gray.png", "text": "fine"}\n'
        b"{not json\n[1, 2]\n"
    )
    src = read_pairs(jsonl)
    assert [r.text for r in src.records] == ["fine"] and src.records[0].key == "1"
    assert [(b.row, b.problem.split(" (")[0]) for b in src.bad] == [
        (0, "line is not valid UTF-8"),
        (2, "not valid JSON"),
        (3, "not a JSON object"),
    ]


def test_absolute_paths_ids_and_bom(dataset, tmp_path):
    manifest = tmp_path / "abs.csv"  # manifest in another folder than the images
    text = f"\ufeffid,image,text\nk-1,{dataset / 'imgs/gray.png'},grey\n"
    manifest.write_text(text, encoding="utf-8")
    src = read_pairs(manifest)
    assert [(r.key, r.image, r.extra) for r in src.records] == [("k-1", dataset / "imgs/gray.png", {})]


def test_check_images_false_skips_decoding_but_not_existence(dataset):
    manifest = write_csv(dataset / "nocheck.csv", rows())
    src = read_pairs(manifest, check_images=False)
    # The corrupt and oversized files are not opened; the missing file and empty caption still count.
    assert [b.row for b in src.bad] == [1, 5]
    assert dataset / "imgs/corrupt.png" in [r.image for r in src.records]


def test_parquet_without_pyarrow_is_a_clear_error(dataset, monkeypatch):
    manifest = write_parquet(dataset / "p.parquet", rows())
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # makes `import pyarrow.parquet` fail
    with pytest.raises(DataError, match=r"p\.parquet: reading \.parquet needs pyarrow"):
        read_pairs(manifest)


def test_manifest_split_is_by_relative_image_path_and_survives_a_move(dataset, tmp_path):
    # The split key is the image path relative to the manifest folder.
    moved = tmp_path / "moved"
    (moved / "imgs").mkdir(parents=True)
    for i in range(200):
        shutil.copy(dataset / "imgs/gray.png", moved / "imgs" / f"g{i}.png")
    table = [{"image": f"imgs/g{i}.png", "text": f"caption {i}"} for i in range(200)]
    src = read_pairs(write_csv(moved / "m.csv", table), check_images=False)
    parts = {s: src.split(s) for s in ("train", "val", "test")}
    keys = {s: [r.image.relative_to(moved).as_posix() for r in recs] for s, recs in parts.items()}
    assert sum(len(v) for v in keys.values()) == 200
    assert set(keys["train"]).isdisjoint(keys["test"]) and set(keys["val"]).isdisjoint(keys["test"])
    for s, ks in keys.items():
        assert all(split_of(k) == s for k in ks)

    # Same relative paths elsewhere, rows reversed: the same split.
    other = tmp_path / "other"
    shutil.copytree(moved, other)
    src2 = read_pairs(write_csv(other / "m.csv", table[::-1]), check_images=False)
    keys2 = {s: sorted(r.image.relative_to(other).as_posix() for r in src2.split(s)) for s in parts}
    assert keys2 == {s: sorted(v) for s, v in keys.items()}
