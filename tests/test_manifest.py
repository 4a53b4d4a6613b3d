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
    # A source names the physical line (the header is line 1); Parquet has no lines, so its row.
    first_line = {".csv": 2, ".jsonl": 1, ".parquet": 0}[suffix]
    assert [r.source for r in src.records] == [f"{manifest}:{i + first_line}" for i in (0, 2, 4, 6, 8)]
    assert src.records[0].extra == {"note": "n-imgs/rgb.jpg"}

    assert [b.row for b in src.bad] == [1, 3, 5, 7]
    # A bad file is named by its path; an empty caption by the manifest row.
    assert [b.source for b in src.bad] == [
        str(dataset / "imgs/missing.png"),
        str(dataset / "imgs/corrupt.png"),
        f"{manifest}:{5 + first_line}",
        str(dataset / "imgs/huge.png"),
    ]
    for bad, (*_, problem) in zip(src.bad, BAD, strict=True):
        assert problem in bad.problem, (bad, problem)


def test_strict_raises_at_first_bad_row(dataset):
    manifest = write_csv(dataset / "strict.csv", rows())
    with pytest.raises(DataError) as err:
        read_pairs(manifest, strict=True)
    assert err.value.path == str(dataset / "imgs/missing.png")
    assert "file not found" in err.value.problem and "line 3 of strict.csv" in err.value.problem


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
        (0, f"{manifest}:2", "column 'text' is not valid UTF-8")
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


# --- CSV structure: a damaged row is reported with its physical line, never absorbed (issue #16) ---


def _forty_rows(folder: Path, damage: dict[int, str] | None = None) -> Path:
    """A 40-row manifest of copies of one image; ``damage`` replaces the text of some data lines."""
    imgs = folder / "imgs"
    imgs.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 6), (0, 128, 0)).save(imgs / "g.png")
    lines = ["image,text,label"] + [f"imgs/g.png,caption {i},l{i % 3}" for i in range(40)]
    for i, text in (damage or {}).items():
        lines[i + 1] = text
    manifest = folder / "m.csv"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


def test_csv_unclosed_quote_is_one_bad_row_not_the_rest_of_the_file(tmp_path):
    # Data row 11 sits on line 13 (line 1 is the header); its quote never closes.
    manifest = _forty_rows(tmp_path, {11: 'imgs/g.png,"a caption with a stray quote,l2'})
    src = read_pairs(manifest)
    assert len(src.records) == 39
    assert [r.text for r in src.records][10:12] == ["caption 10", "caption 12"]
    assert [(b.line, b.source) for b in src.bad] == [(13, f"{manifest}:13")]
    assert "quote" in src.bad[0].problem and "never closes" in src.bad[0].problem
    assert str(src.bad[0]).startswith(f"{manifest}:13: ")
    with pytest.raises(DataError, match=r"line 13 of m\.csv"):
        read_pairs(manifest, strict=True)


def test_csv_a_quote_closed_rows_later_does_not_swallow_the_rows_between(tmp_path):
    # Line 6 opens a quote that line 10's quoted caption closes: the rows between are their own rows.
    manifest = _forty_rows(tmp_path, {4: 'imgs/g.png,"broken,l1', 8: 'imgs/g.png,"quoted caption",l2'})
    src = read_pairs(manifest)
    assert [b.line for b in src.bad] == [6]
    assert len(src.records) == 39 and "quoted caption" in [r.text for r in src.records]


@pytest.mark.parametrize(("line_text", "problem"), [
    ("imgs/g.png,a caption, with a comma,l1", "4 cells where the header has 3"),
    ("imgs/g.png,no label", "2 cells where the header has 3"),
])
def test_csv_extra_or_missing_cells_are_bad_rows(tmp_path, line_text, problem):
    src = read_pairs(_forty_rows(tmp_path, {20: line_text}))
    assert len(src.records) == 39
    assert [(b.line, b.row) for b in src.bad] == [(22, 20)] and problem in src.bad[0].problem


def test_csv_line_numbers_are_physical_lines(tmp_path):
    # A legal multi-line quoted caption and a blank line shift the lines after them; reports follow.
    manifest = _forty_rows(tmp_path, {2: 'imgs/g.png,"two\nlines",l2', 5: "imgs/missing.png,gone,l2"})
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text.replace("caption 1,l1\n", "caption 1,l1\n\n", 1), encoding="utf-8")
    src = read_pairs(manifest)
    assert "two\nlines" in [r.text for r in src.records]
    # Header 1, rows 0-1 on lines 2-3, blank line 4, row 2 on lines 5-6, rows 3-4 on 7-8, row 5 on 9.
    assert [(b.row, b.line, b.problem) for b in src.bad] == [(5, 9, "file not found")]
    assert "line 9" in str(src.bad[0])
    assert src.records[3].source == f"{manifest}:7"


def test_jsonl_line_numbers_count_blank_lines(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"image": "a.png", "text": "x"}\n\n{not json\n', encoding="utf-8")
    src = read_pairs(manifest, check_images=False)
    assert [(b.row, b.line) for b in src.bad] == [(0, 1), (1, 3)]


def test_csv_caption_over_the_csv_module_field_limit_is_read(tmp_path):
    long = "word " * 40_000  # 200,000 characters, over csv's default 131,072
    manifest = _forty_rows(tmp_path, {7: f'imgs/g.png,"{long}",l1'})
    src = read_pairs(manifest)
    assert len(src.records) == 40 and src.bad == [] and src.records[7].text == long
    import csv as csv_module

    assert csv_module.field_size_limit() == 131_072  # the process-wide limit is left as it was


def test_inspect_and_the_training_loader_report_the_unclosed_quote(tmp_path):
    # The three readers of a manifest (data inspect, train's pair loader, read_pairs) share one parser.
    from click.testing import CliRunner

    from polymodal.cli.main import cli
    from polymodal.data.pairs import load_pairs

    manifest = _forty_rows(tmp_path, {11: 'imgs/g.png,"a caption with a stray quote,l2'})
    out = CliRunner().invoke(cli, ["data", "inspect", str(manifest)], catch_exceptions=False).output
    assert "records: 39 good, 1 bad" in out and f"{manifest}:13: a quote opened on this line never closes" in out
    pairs = load_pairs(str(manifest))
    assert len(pairs) == 39 and [(b.source, b.line) for b in pairs.bad] == [(f"{manifest}:13", 13)]
