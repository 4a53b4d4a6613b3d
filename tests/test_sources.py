"""Sources: manifests with any modality per row, label/file.ext folders, shards and builtins by spec."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _mmdata import (
    HAVE_VIDEO,
    LABELS,
    make_folder_dataset,
    make_manifest_dataset,
    png_bytes,
    text_of,
    wav_bytes,
)
from polymodal.data.audio import Audio
from polymodal.data.hashing import content_hash
from polymodal.data.record import MODALITIES, Record
from polymodal.data.sources import (
    BuiltinSource,
    FolderSource,
    ManifestSource,
    ShardSource,
    open_source,
)
from polymodal.errors import ConfigError, DataError

BROKEN = 4 * 3 if HAVE_VIDEO else 3 * 3  # 3 broken files (1 %) per modality, each in its own record


@pytest.fixture(scope="module")
def manifest_data(tmp_path_factory):
    return make_manifest_dataset(tmp_path_factory.mktemp("manifest"), 300, corrupt=3)


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory):
    return make_folder_dataset(tmp_path_factory.mktemp("folder"), 300, corrupt=3)


# --- 1 % corrupt files of each modality: all good records load, the skipped count is exact -------------


def test_manifest_with_one_percent_corrupt_files_per_modality(manifest_data):
    source = open_source(manifest_data.manifest)
    assert isinstance(source, ManifestSource)
    records = source.load()
    assert {r.key for r in records} == manifest_data.good
    assert len(records) == 300 - BROKEN
    assert len(source.bad) == BROKEN  # 3 images + 3 audio + 3 video + 3 texts, in 12 different rows
    named = {b.source for b in source.bad}
    for modality in ("image", "audio", "video")[: 3 if HAVE_VIDEO else 2]:
        for path in manifest_data.broken[modality].values():
            assert str(path) in named, f"{path} not reported"
    text_rows = {int(k[1:]) for k in manifest_data.broken["text"]}
    assert {b.row for b in source.bad if "not valid UTF-8" in b.problem} == text_rows
    assert all(b.problem for b in source.bad)


def test_manifest_records_carry_each_present_modality_decoded(manifest_data):
    records = {r.key: r for r in open_source(manifest_data.manifest)}
    for key, record in records.items():
        present = manifest_data.modalities[key]
        assert record.present() == present, key
        i = int(key[1:])
        assert isinstance(record.image, Image.Image) and record.image.mode == "RGB"
        assert np.array_equal(np.asarray(record.image), np.asarray(Image.open(io.BytesIO(png_bytes(i)))))
        assert record.text == (text_of(i) if present["text"] else None)
        if present["audio"]:
            assert isinstance(record.audio, Audio) and record.audio.sample_rate == 8000
        if present["video"]:
            from polymodal.data.video import Video

            assert isinstance(record.video, Video) and record.video.num_frames == 3 + i % 3
        assert record.label == LABELS[i % 3]
        assert record.extra == {"speaker": f"sp{i % 4}"}
        assert record.source.endswith(f"data.csv:{i + 2}")  # line 1 is the header


def test_folder_with_one_percent_corrupt_files_per_modality(folder_data):
    source = open_source(folder_data.root)
    assert isinstance(source, FolderSource)
    records = source.load()
    assert {r.key for r in records} == folder_data.good
    assert len(source.bad) == BROKEN
    broken = {str(p) for per in folder_data.broken.values() for p in per.values()}
    assert {b.source for b in source.bad} == broken  # each bad record names exactly its broken file
    for r in records:
        assert r.present() == folder_data.modalities[r.key]
        assert r.label == r.key.split("/")[0]


def test_same_content_from_manifest_and_folder(manifest_data, folder_data):
    """The two layouts of the same files give the same decoded modalities, record by record."""
    by_stem = {r.key.split("/")[1]: r for r in open_source(folder_data.root)}
    both = manifest_data.good & {k.split("/")[1] for k in folder_data.good}
    checked = 0
    for r in open_source(manifest_data.manifest):
        if r.key in both:
            other = by_stem[r.key]
            for m in MODALITIES:
                a, b = getattr(r, m), getattr(other, m)
                assert (a is None) == (b is None)
                if a is not None:
                    assert content_hash(_only(m, a)) == content_hash(_only(m, b))
            checked += 1
    assert checked > 250


def _only(modality, value):
    return Record(**{modality: value})


def test_iteration_is_lazy_and_each_pass_starts_a_fresh_account(manifest_data):
    source = open_source(manifest_data.manifest)
    it = iter(source)
    first = next(it)
    first_good = min(manifest_data.good)
    assert first.key == first_good
    assert len(source.bad) == int(first_good[1:]) < BROKEN  # only the rows read so far are accounted for
    list(it)
    assert len(source.bad) == BROKEN
    source.load()
    assert len(source.bad) == BROKEN  # not twice as many


def test_decode_false_keeps_paths_and_check_still_finds_bad_files(manifest_data):
    checked = open_source(manifest_data.manifest, decode=False)
    records = checked.load()
    assert {r.key for r in records} == manifest_data.good and len(checked.bad) == BROKEN
    r = next(r for r in records if r.audio is not None)
    assert isinstance(r.image, Path) and isinstance(r.audio, Path)
    assert r.image.is_absolute()
    unchecked = open_source(manifest_data.manifest, decode=False, check=False)
    # without decoding, only the text rows (bad bytes in the manifest itself) are found
    assert len(unchecked.load()) == 300 - 3 and len(unchecked.bad) == 3


def test_strict_raises_at_the_first_bad_record_naming_the_file(manifest_data):
    first_broken = min((k, p) for per in manifest_data.broken.values() for k, p in per.items() if p is not None)
    with pytest.raises(DataError) as e:
        open_source(manifest_data.manifest, strict=True).load()
    assert e.value.path == str(first_broken[1])


# --- manifests: formats, missing modalities, rows without any ------------------------------------


def _write(tmp: Path, rows: list[dict]) -> dict[str, Path]:
    """The same rows as CSV, JSONL and Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp / "im.png").write_bytes(png_bytes(1))
    (tmp / "a.wav").write_bytes(wav_bytes(2))
    cols = list(rows[0])
    csv = ",".join(cols) + "\n" + "".join(",".join(str(r[c] or "") for c in cols) + "\n" for r in rows)
    (tmp / "m.csv").write_text(csv)
    (tmp / "m.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n" for r in rows))
    pq.write_table(pa.table({c: [r[c] for r in rows] for c in cols}), tmp / "m.parquet")
    return {s: tmp / f"m.{s}" for s in ("csv", "jsonl", "parquet")}


ROWS = [
    {"id": "a", "image": "im.png", "audio": None, "text": "only an image and a text", "label": "x", "note": "n1"},
    {"id": "b", "image": None, "audio": "a.wav", "text": None, "label": "y", "note": "n2"},
    {"id": "c", "image": None, "audio": None, "text": "text alone", "label": None, "note": "n3"},
    {"id": "d", "image": None, "audio": None, "text": None, "label": "z", "note": "n4"},
    {"id": "e", "image": "missing.png", "audio": None, "text": "t", "label": "x", "note": "n5"},
]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_each_modality_optional_per_row_in_every_format(tmp_path, fmt):
    source = open_source(_write(tmp_path, ROWS)[fmt])
    records = {r.key: r for r in source}
    assert sorted(records) == ["a", "b", "c"]
    assert records["a"].present() == {"image": True, "text": True, "audio": False, "video": False}
    assert records["b"].present() == {"image": False, "text": False, "audio": True, "video": False}
    assert records["c"].present() == {"image": False, "text": True, "audio": False, "video": False}
    assert records["c"].label is None and records["a"].label == "x"
    assert records["b"].extra == {"note": "n2"}
    assert [(b.row, b.problem) for b in source.bad] == [
        (3, "no modality: image, text, audio and video are all empty"),
        (4, "file not found"),
    ]
    assert source.bad[1].source == str(tmp_path / "missing.png")


def test_the_three_formats_give_identical_records(tmp_path):
    paths = _write(tmp_path, ROWS)
    hashes = {fmt: [content_hash(r) for r in open_source(p)] for fmt, p in paths.items()}
    assert hashes["csv"] == hashes["jsonl"] == hashes["parquet"]


def test_manifest_without_modality_columns_names_the_columns_found(tmp_path):
    (tmp_path / "m.csv").write_text("id,caption\n1,hello\n")
    with pytest.raises(DataError, match="no modality column.*columns found: id, caption"):
        open_source(tmp_path / "m.csv").load()


def test_jsonl_with_wrong_types_and_bad_lines(tmp_path):
    (tmp_path / "im.png").write_bytes(png_bytes(0))
    lines = ['{"image": "im.png", "text": "ok"}', "not json", "[1, 2]", '{"image": 5, "text": "x"}',
             '{"text": 7}', '{"text": "fine", "label": 3}']
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    source = open_source(tmp_path / "m.jsonl")
    records = source.load()
    assert [r.key for r in records] == ["0", "5"] and records[1].label == 3
    assert [b.row for b in source.bad] == [1, 2, 3, 4]
    assert "must be a file path" in source.bad[2].problem and "must be a string" in source.bad[3].problem


# --- folders ---------------------------------------------------------------------------------------


def test_folder_groups_by_stem_and_reports_conflicts(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "1.png").write_bytes(png_bytes(0))
    (tmp_path / "cats" / "1.txt").write_text("a cat")
    (tmp_path / "cats" / "2.png").write_bytes(png_bytes(1))
    (tmp_path / "cats" / "2.jpg").write_bytes(png_bytes(2))  # two images for one record
    (tmp_path / "cats" / "3.wav").write_bytes(wav_bytes(0))
    (tmp_path / "cats" / "notes.md").write_text("ignored")
    (tmp_path / "cats" / ".hidden.png").write_bytes(b"not even an image")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.png").write_bytes(b"junk")
    (tmp_path / "loose.txt").write_text("no label folder")
    source = open_source(tmp_path)
    records = {r.key: r for r in source}
    assert sorted(records) == ["cats/1", "cats/3", "loose"]
    assert records["cats/1"].text == "a cat" and records["cats/1"].image is not None
    assert records["cats/3"].audio is not None and records["cats/3"].label == "cats"
    assert records["loose"].label is None and records["loose"].text == "no label folder"
    assert len(source.bad) == 1 and "two image files" in source.bad[0].problem
    assert [p.name for p in source.ignored] == ["notes.md"]


def test_text_files_drop_a_byte_order_mark(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_bytes(b"\xef\xbb\xbfhello")
    assert [r.text for r in open_source(tmp_path)] == ["hello"]


# --- open_source dispatch ----------------------------------------------------------------------------


def test_open_source_dispatch(tmp_path, manifest_data):
    from polymodal.data.shards import write_shards

    few = open_source(manifest_data.manifest, decode=False)
    write_shards((r for _, r in zip(range(6), few)), tmp_path / "sh", shard_size=2)
    assert isinstance(open_source(tmp_path / "sh"), ShardSource)
    assert isinstance(open_source(str(tmp_path / "sh" / "shard-{000000..000002}.tar")), ShardSource)
    assert isinstance(open_source(str(tmp_path / "sh" / "*.tar")), ShardSource)
    assert isinstance(open_source(tmp_path / "sh" / "shard-000001.tar"), ShardSource)
    assert len(open_source(str(tmp_path / "sh" / "shard-{000000..000001}.tar")).load()) == 4
    assert isinstance(open_source("builtin:openmoji"), BuiltinSource)
    with pytest.raises(DataError, match="shard not found"):
        open_source(str(tmp_path / "sh" / "shard-{000000..000009}.tar"))
    with pytest.raises(DataError, match="no such file or folder"):
        open_source(tmp_path / "nothing")
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(DataError, match="not a known source"):
        open_source(tmp_path / "x.bin")
    with pytest.raises(DataError, match="manifest not found"):
        open_source(tmp_path / "missing.csv")
    with pytest.raises(ConfigError, match="unknown builtin dataset 'nope'"):
        open_source("builtin:nope")
    with pytest.raises(ConfigError, match="unknown split"):
        open_source("builtin:openmoji:training")


def test_builtin_openmoji_split_matches_its_loader():
    from polymodal.data.openmoji import load_openmoji

    source = open_source("builtin:openmoji:test")
    got = [content_hash(r) for r in source]
    assert got == [content_hash(r) for r in load_openmoji("test")] and len(got) > 100
    assert source.bad == []


def test_a_nul_byte_in_a_path_is_a_bad_row_not_a_crash(tmp_path):
    (tmp_path / "m.csv").write_bytes(b"image,audio,text\nim\x00.png,,x\n,a\x00.wav,y\n,,fine\n")
    source = open_source(tmp_path / "m.csv")
    assert [r.text for r in source] == ["fine"]
    assert [b.problem for b in source.bad] == ["column 'image' holds a NUL byte", "column 'audio' holds a NUL byte"]


def test_builtin_shapes_by_kind_and_split():
    from polymodal.data.shapes import load_shapes

    vqa = open_source("builtin:shapes-vqa:val").load()
    assert [content_hash(r) for r in vqa] == [content_hash(r) for r in load_shapes("val", kind="vqa")]
    assert len(vqa) == 1000 and vqa[0].key.startswith("shapes-0-val-vqa-")


def test_builtin_shapes_are_image_text_pairs_with_their_captions():
    from polymodal.data.pairs import SHAPES_PAIR_SIZES, load_pairs
    from polymodal.data.shapes import load_shapes

    pairs = load_pairs("builtin:shapes", "test")
    scenes = load_shapes("test", n=SHAPES_PAIR_SIZES["test"], kind="scenes")
    assert len(pairs) == len(scenes) == 1000
    assert pairs.keys == [r.key for r in scenes] and pairs.texts == [r.text for r in scenes]
    assert pairs.images[0].tobytes() == scenes[0].image.tobytes()
    assert pairs.labels["count"] == [str(len(r.extra["scene"]["shapes"])) for r in scenes]
    assert load_pairs("builtin:shapes:test").keys == pairs.keys
    assert not set(pairs.keys) & set(load_pairs("builtin:shapes", "val").keys)


def test_content_hash_sees_every_part_of_a_record():
    from polymodal.data.hashing import content_hash as h

    base = Record(image=Image.new("RGB", (2, 2)), text="t", label=1, key="k", extra={"a": [1, 2]})
    variants = [
        Record(image=Image.new("RGB", (2, 2), (0, 0, 1)), text="t", label=1, key="k", extra={"a": [1, 2]}),
        Record(image=Image.new("L", (2, 2)), text="t", label=1, key="k", extra={"a": [1, 2]}),
        Record(image=Image.new("RGB", (2, 2)), text="u", label=1, key="k", extra={"a": [1, 2]}),
        Record(image=Image.new("RGB", (2, 2)), text="t", label="1", key="k", extra={"a": [1, 2]}),
        Record(image=Image.new("RGB", (2, 2)), text="t", label=1, key="k2", extra={"a": [1, 2]}),
        Record(image=Image.new("RGB", (2, 2)), text="t", label=1, key="k", extra={"a": [2, 1]}),
        Record(audio=Image.new("RGB", (2, 2)), text="t", label=1, key="k", extra={"a": [1, 2]}),
    ]
    assert len({h(base)} | {h(v) for v in variants}) == len(variants) + 1
    same_but_tuple = Record(image=Image.new("RGB", (2, 2)), text="t", label=1, key="k", extra={"a": (1, 2)},
                            source="elsewhere")
    assert h(same_but_tuple) == h(base)  # JSON turns the tuple into a list; the source is not content
    audio = Audio(samples=np.zeros(4, np.float32), sample_rate=8000)
    assert h(Record(audio=audio)) != h(Record(audio=Audio(samples=np.zeros(4, np.float32), sample_rate=16000)))
    with pytest.raises(ConfigError, match="no defined content"):
        h(Record(image=object()))
