"""Tar shards: write from a manifest, stream back over workers and ranks, lose and duplicate nothing."""

from __future__ import annotations

import hashlib
import json
import random
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader

from _mmdata import HAVE_VIDEO, make_manifest_dataset, png_bytes
from polymodal.core import distributed
from polymodal.data.audio import Audio
from polymodal.data.hashing import content_hash
from polymodal.data.record import BadRecord, Record
from polymodal.data.shards import (
    ShardStream,
    collate_records,
    read_index,
    read_shard,
    shuffled,
    write_shards,
)
from polymodal.data.sources import open_source
from polymodal.errors import ConfigError, DataError

N = 60
SHARD_SIZE = 7  # 9 shards for the good records: enough for 2 ranks x 2 workers, last one short


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_manifest_dataset(tmp_path_factory.mktemp("m"), N, corrupt=1)


@pytest.fixture(scope="module")
def expected(data):
    """Content hashes of the manifest's good records, decoded."""
    return Counter(content_hash(r) for r in open_source(data.manifest))


@pytest.fixture(scope="module")
def shards(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    index = write_shards(open_source(data.manifest, decode=False), out, shard_size=SHARD_SIZE)
    return out, index


def _stream_hashes(stream, workers: int) -> Counter:
    if workers == 0:
        return Counter(content_hash(r) for r in stream)
    loader = DataLoader(stream, batch_size=4, num_workers=workers, collate_fn=collate_records)
    return Counter(content_hash(r) for batch in loader for r in batch)


# --- round trip ------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_round_trip_manifest_to_shards_to_stream(shards, expected, workers):
    out, _ = shards
    got = _stream_hashes(ShardStream(out, shuffle_buffer=10, seed=3), workers)
    assert got == expected  # same multiset: nothing lost, nothing duplicated, nothing changed
    assert max(got.values()) == 1 and sum(got.values()) == len(expected)


def test_index_counts_hashes_and_skipped_records(shards, data):
    out, index = shards
    on_disk = read_index(out)
    good = len(data.good)
    assert on_disk.records == index.records == good
    assert [s.count for s in on_disk.shards] == [SHARD_SIZE] * (good // SHARD_SIZE) + (
        [good % SHARD_SIZE] if good % SHARD_SIZE else [])
    for s in on_disk.shards:
        path = out / s.name
        assert s.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and s.bytes == path.stat().st_size
    assert len(on_disk.bad) == N - good and all(isinstance(b, BadRecord) for b in on_disk.bad)
    assert on_disk.modalities["image"] == good
    assert on_disk.modalities["audio"] == sum(data.modalities[k]["audio"] for k in data.good)
    raw = json.loads((out / "index.json").read_text())
    assert raw["format"] == "polymodal.shards/1" and raw["shards"][0]["name"] == "shard-000000.tar"


def test_members_are_the_original_file_bytes(shards, data):
    out, _ = shards
    with tarfile.open(out / "shard-000000.tar") as tar:
        names = tar.getnames()
        meta = json.loads(tar.extractfile("00000000.json").read())
        key = meta["key"]
        assert tar.extractfile("00000000.png").read() == (data.root / "files" / f"{key}.png").read_bytes()
        wavs = [n for n in names if n.endswith(".wav")]
        first_wav = wavs[0]
        wav_meta = json.loads(tar.extractfile(first_wav.replace(".wav", ".json")).read())
        assert tar.extractfile(first_wav).read() == (data.root / "files" / f"{wav_meta['key']}.wav").read_bytes()
        if HAVE_VIDEO:
            mp4 = next(n for n in names if n.endswith(".mp4"))
            mp4_key = json.loads(tar.extractfile(mp4.replace(".mp4", ".json")).read())["key"]
            assert tar.extractfile(mp4).read() == (data.root / "files" / f"{mp4_key}.mp4").read_bytes()
    assert set(meta) == {"key", "label", "source", "extra"} and meta["extra"] == {"speaker": meta["extra"]["speaker"]}
    tar_keys = [n.split(".")[0] for n in names]
    assert tar_keys == sorted(tar_keys)  # a sample's members are consecutive, as WebDataset groups them


def test_webdataset_itself_reads_the_shards(shards, data):
    import webdataset as wds

    out, index = shards
    urls = [str(out / s.name) for s in index.shards]
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert len(samples) == index.records
    keys = [json.loads(s["json"])["key"] for s in samples]
    assert set(keys) == data.good
    assert all("png" in s for s in samples)


def test_writing_twice_gives_byte_identical_shards(data, tmp_path):
    a = write_shards(open_source(data.manifest, decode=False), tmp_path / "a", shard_size=SHARD_SIZE)
    b = write_shards(open_source(data.manifest, decode=False), tmp_path / "b", shard_size=SHARD_SIZE)
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards]


# --- splitting by shard over workers and ranks -----------------------------------------------------


def test_ranks_times_workers_partition_the_samples(shards, expected, monkeypatch):
    out, index = shards
    assert len(index.shards) >= 4
    per_rank = []
    for rank in range(2):
        monkeypatch.setattr(distributed, "rank", lambda r=rank: r)
        monkeypatch.setattr(distributed, "world_size", lambda: 2)
        per_rank.append(_stream_hashes(ShardStream(out, shuffle_buffer=5, seed=1), workers=2))
    assert not set(per_rank[0]) & set(per_rank[1])  # no sample on both ranks
    assert per_rank[0] + per_rank[1] == expected  # and together every sample once


def test_consumers_read_disjoint_shards(shards, monkeypatch):
    out, index = shards
    stream = ShardStream(out, shuffle_buffer=4, seed=0)
    seen = []
    for rank in range(3):
        monkeypatch.setattr(distributed, "rank", lambda r=rank: r)
        monkeypatch.setattr(distributed, "world_size", lambda: 3)
        seen += stream.my_shards()
    assert sorted(p.name for p in seen) == sorted(s.name for s in index.shards)


def test_shuffle_is_seeded_and_changes_with_the_epoch(shards):
    out, _ = shards
    keys = lambda s: [r.key for r in s]  # noqa: E731
    plain = keys(ShardStream(out, decode=False))
    a = ShardStream(out, shuffle_buffer=16, seed=7, decode=False)
    first = keys(a)
    assert first == keys(ShardStream(out, shuffle_buffer=16, seed=7, decode=False))  # same seed, same order
    assert sorted(first) == sorted(plain) and first != plain
    a.set_epoch(1)
    assert keys(a) != first and sorted(keys(a)) == sorted(plain)
    assert plain == sorted(plain)  # without a buffer, write order (the manifest's order)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(), max_size=50), st.integers(1, 20), st.integers(0, 2**32 - 1))
def test_shuffle_buffer_yields_a_permutation(items, size, seed):
    out = list(shuffled(iter(items), size, random.Random(seed)))
    assert sorted(out) == sorted(items)


# --- decoded values, raw bytes, damage ----------------------------------------------------------------


def test_decoded_records_are_stored_losslessly(tmp_path):
    rng = np.random.default_rng(0)
    records = [
        Record(image=Image.fromarray(rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)), text="one", label=1, key="a.1",
               extra={"tags": ["x", "y"], "n": 2.5}),
        Record(audio=Audio(samples=rng.standard_normal(300).astype(np.float32), sample_rate=16000), label="two",
               key="b"),
        Record(audio=Audio(samples=rng.standard_normal((2, 100)).astype(np.float32), sample_rate=8000), key="c"),
    ]
    write_shards(records, tmp_path, shard_size=2)
    back = open_source(tmp_path).load()
    records[2] = Record(audio=Audio(samples=records[2].audio.samples.mean(axis=0, dtype=np.float32),
                                    sample_rate=8000), key="c")  # the reader mixes down to mono
    assert [content_hash(r) for r in back] == [content_hash(r) for r in records]


def test_raw_read_keeps_bytes_and_can_be_resharded(shards, tmp_path):
    out, index = shards
    raw = open_source(out, decode=False)
    records = raw.load()
    assert isinstance(records[0].image, bytes) and records[0].image.startswith(b"\x89PNG")
    again = write_shards(records, tmp_path / "again", shard_size=100)
    decoded = [content_hash(r) for r in open_source(tmp_path / "again")]
    assert sorted(decoded) == sorted(content_hash(r) for r in open_source(out))
    assert again.records == index.records


def test_a_corrupt_member_is_a_bad_record_naming_it(tmp_path):
    good = Record(image=Image.fromarray(np.zeros((4, 4, 3), np.uint8)), text="fine", key="g")
    write_shards([good, good], tmp_path, shard_size=10)
    tar_path = tmp_path / "shard-000000.tar"
    data = bytearray(tar_path.read_bytes())
    # Damage the second sample's PNG: overwrite its bytes past the 8-byte signature.
    png_at = data.find(b"\x89PNG", data.find(b"00000001.png"))
    data[png_at + 8: png_at + 40] = b"\xff" * 32
    tar_path.write_bytes(bytes(data))
    items = list(read_shard(tar_path))
    assert isinstance(items[0], Record)
    assert isinstance(items[1], BadRecord) and items[1].source == f"{tar_path}:00000001.png"
    stream = ShardStream(tmp_path, decode=True)
    assert len(list(stream)) == 1 and len(stream.bad) == 1
    with pytest.raises(DataError) as e:
        list(ShardStream(tmp_path, strict=True))
    assert e.value.path == f"{tar_path}:00000001.png"


def test_a_truncated_shard_keeps_the_samples_before_the_damage(tmp_path):
    records = [Record(image=Image.fromarray(np.full((4, 4, 3), i, np.uint8)), key=str(i)) for i in range(5)]
    write_shards(records, tmp_path, shard_size=10)
    tar_path = tmp_path / "shard-000000.tar"
    data = tar_path.read_bytes()
    cut = data.find(b"00000003.json")  # header of the 4th sample's first member
    tar_path.write_bytes(data[: cut + 300])
    items = list(read_shard(tar_path))
    assert [r.key for r in items if isinstance(r, Record)] == ["0", "1", "2"]
    assert isinstance(items[-1], BadRecord) and items[-1].source == str(tar_path)
    assert "damaged tar shard" in items[-1].problem


def test_writer_refuses_to_mix_with_old_shards(shards, tmp_path):
    rec = [Record(text="x", key="k")]
    write_shards(rec, tmp_path)
    with pytest.raises(ConfigError, match="already holds shards"):
        write_shards(rec, tmp_path)
    assert write_shards(rec * 3, tmp_path, overwrite=True).records == 3
    with pytest.raises(ConfigError, match="shard_size"):
        write_shards(rec, tmp_path / "x", shard_size=0)


def test_decoded_video_cannot_be_stored(tmp_path):
    class FakeVideo:
        frames = np.zeros((1, 2, 2, 3), np.uint8)

    with pytest.raises(ConfigError, match="cannot store a decoded video"):
        write_shards([Record(video=FakeVideo(), key="v")], tmp_path)


def test_stream_arguments_are_checked(shards, tmp_path):
    out, _ = shards
    with pytest.raises(ConfigError):
        ShardStream(out, shuffle_buffer=-1)
    with pytest.raises(DataError, match="no .tar shards"):
        ShardStream(tmp_path)


def test_torch_default_worker_seeding_does_not_change_the_stream(shards):
    """The stream depends on (seed, epoch, consumer) only, not on torch's global RNG."""
    out, _ = shards
    torch.manual_seed(0)
    a = [r.key for r in ShardStream(out, shuffle_buffer=8, seed=5, decode=False)]
    torch.manual_seed(1)
    b = [r.key for r in ShardStream(out, shuffle_buffer=8, seed=5, decode=False)]
    assert a == b


def test_png_test_image_is_deterministic():
    assert png_bytes(3) == png_bytes(3)


def _five_image_shard(tmp_path):
    records = [Record(image=Image.fromarray(np.full((4, 4, 3), i, np.uint8)), key=str(i)) for i in range(5)]
    write_shards(records, tmp_path, shard_size=10)
    return tmp_path / "shard-000000.tar"


def test_a_damaged_member_header_is_reported_not_silently_ending_the_shard(tmp_path):
    """tarfile stops without an error at a bad header past the first member; we must notice."""
    tar_path = _five_image_shard(tmp_path)
    data = bytearray(tar_path.read_bytes())
    header = data.find(b"00000003.json")
    data[header + 148: header + 156] = b"9999999\0"  # the header checksum field (ustar offset 148)
    tar_path.write_bytes(bytes(data))
    with tarfile.open(tar_path) as tar:  # the standard library itself reads 3 samples and says nothing
        assert len(tar.getnames()) == 6
    items = list(read_shard(tar_path))
    assert [r.key for r in items if isinstance(r, Record)] == ["0", "1", "2"]
    assert items[-1].source == str(tar_path) and "unreadable member header" in items[-1].problem


def test_a_shard_cut_at_a_member_boundary_is_truncated(tmp_path):
    tar_path = _five_image_shard(tmp_path)
    data = tar_path.read_bytes()
    tar_path.write_bytes(data[: data.find(b"00000004.json")])  # whole samples 0..3, no end marker
    items = list(read_shard(tar_path))
    assert len([r for r in items if isinstance(r, Record)]) == 4
    assert "truncated tar shard" in items[-1].problem
