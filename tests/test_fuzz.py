"""Fuzzing: truncated, corrupted and random bytes into every decoder, manifest parser and shard reader.

The property is the same everywhere: no crash (only a polymodal ``DataError``, naming the file, or a
good value), no hang (a per-example deadline, and a pytest timeout over the whole test). Inputs start from
valid files (PNG, JPEG, GIF, TIFF, WebP, WAV, FLAC, OGG, MP4, a tar shard) and are cut short, have bytes
overwritten, or get garbage after a valid header; plus plain random bytes. The exact-count test for 1 %
corrupt files per modality is in ``test_sources.py``; the atheris target is ``fuzz/fuzz_decoders.py``.
"""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from _mmdata import HAVE_VIDEO, mp4_bytes, png_bytes, wav_bytes
from polymodal.data.audio import Audio, load_audio
from polymodal.data.decode import decode_text
from polymodal.data.images import load_image
from polymodal.data.record import BadRecord, Record
from polymodal.data.shards import read_shard, write_shards
from polymodal.data.sources import open_source
from polymodal.errors import DataError

# A generous per-example deadline (2 shared CPU cores); a hang fails it, and pytest-timeout backs it up.
FUZZ = settings(
    max_examples=150,
    deadline=timedelta(seconds=5),
    database=None,  # keep no example database in the repository
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.filterwarnings("ignore::UserWarning"),  # Pillow warns about every broken TIFF tag
]


def _image(fmt: str, **save) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(buf, format=fmt, **save)
    return buf.getvalue()


IMAGE_SEEDS = {
    "png": png_bytes(0),
    "jpeg": _image("JPEG", quality=80),
    "gif": _image("GIF"),
    "tiff": _image("TIFF"),
    "webp": _image("WEBP"),
    "bmp": _image("BMP"),
}
AUDIO_SEEDS = {"wav": wav_bytes(0), "flac": wav_bytes(1, fmt="FLAC"), "ogg": wav_bytes(2, fmt="OGG")}


def mutated(seed: bytes) -> st.SearchStrategy[bytes]:
    """Truncations, overwritten bytes, garbage after the header, and plain random bytes."""
    n = len(seed)

    def overwrite(edits: list[tuple[int, int]]) -> bytes:
        out = bytearray(seed)
        for pos, value in edits:
            out[pos % n] = value
        return bytes(out)

    return st.one_of(
        st.integers(0, n - 1).map(lambda k: seed[:k]),
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 255)), min_size=1, max_size=12).map(overwrite),
        st.tuples(st.integers(4, 64), st.binary(min_size=1, max_size=256)).map(lambda t: seed[: t[0]] + t[1]),
        st.binary(max_size=512),
    )


def _expect_data_error_or(value_type, fn, data: bytes, name: str):
    try:
        out = fn(data)
    except DataError as e:
        assert e.path == name, f"error names {e.path!r}, not the file {name!r}"
        assert e.problem
        return None
    assert isinstance(out, value_type)
    return out


# --- decoders -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(IMAGE_SEEDS))
def test_load_image_fuzz(fmt):
    @FUZZ
    @given(mutated(IMAGE_SEEDS[fmt]))
    def run(data):
        out = _expect_data_error_or(Image.Image, lambda d: load_image(d, name="f.img"), data, "f.img")
        if out is not None:
            assert out.mode == "RGB"

    run()


@pytest.mark.parametrize("fmt", sorted(AUDIO_SEEDS))
def test_load_audio_fuzz(fmt):
    @FUZZ
    @given(mutated(AUDIO_SEEDS[fmt]))
    def run(data):
        out = _expect_data_error_or(Audio, lambda d: load_audio(d, name="f.snd"), data, "f.snd")
        if out is not None:
            assert np.isfinite(out.samples).all() and out.num_frames > 0

    run()


@pytest.mark.skipif(not HAVE_VIDEO, reason="PyAV (the video decoder) is not installed")
def test_load_video_truncated_inside_moov():
    """Found by the fuzz test below: the stream of an MP4 cut inside its moov box has no codec context."""
    from polymodal.data.video import load_video

    with pytest.raises(DataError):
        load_video(mp4_bytes(1)[:427], name="f.mp4")


@pytest.mark.skipif(not HAVE_VIDEO, reason="PyAV (the video decoder) is not installed")
def test_load_video_fuzz():
    from polymodal.data.video import Video, load_video

    @settings(FUZZ, max_examples=100)
    @given(mutated(mp4_bytes(1)))
    def run(data):
        out = _expect_data_error_or(Video, lambda d: load_video(d, name="f.mp4"), data, "f.mp4")
        if out is not None:
            assert out.frames.dtype == np.uint8 and out.num_frames > 0

    run()


@FUZZ
@given(st.binary(max_size=256))
def test_text_decoding_fuzz(data):
    _expect_data_error_or(str, lambda d: decode_text(d, name="t.txt"), data, "t.txt")


def test_decoding_files_on_disk_names_the_path(tmp_path):
    """The same decoders reading paths: the error names the path, not '<bytes>'."""
    for name, data in [("a.png", IMAGE_SEEDS["png"][:30]), ("b.wav", AUDIO_SEEDS["wav"][:50]), ("c.txt", b"\xff")]:
        (tmp_path / name).write_bytes(data)
    source = open_source(tmp_path)
    assert source.load() == []
    assert sorted(b.source for b in source.bad) == [str(tmp_path / n) for n in ("a.png", "b.wav", "c.txt")]


# --- manifests -----------------------------------------------------------------------------------------


CSV_SEED = b"id,image,audio,text,label\n1,im.png,a.wav,a caption,x\n2,,a.wav,,y\n3,im.png,,\"quoted, text\",z\n"
JSONL_SEED = b'{"id": 1, "image": "im.png", "text": "a caption", "label": "x"}\n{"audio": "a.wav", "label": 2}\n'


@pytest.fixture(scope="module")
def manifest_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("manifests")
    (d / "im.png").write_bytes(IMAGE_SEEDS["png"])
    (d / "a.wav").write_bytes(AUDIO_SEEDS["wav"])
    return d


@pytest.mark.parametrize("suffix, seed", [(".csv", CSV_SEED), (".jsonl", JSONL_SEED)])
def test_manifest_source_fuzz(manifest_dir, suffix, seed):
    path = manifest_dir / f"fuzz{suffix}"

    @FUZZ
    @given(mutated(seed))
    def run(data):
        path.write_bytes(data)
        source = open_source(path)
        try:
            records = source.load()
        except DataError as e:  # a problem of the whole file names the manifest
            assert e.path is not None and Path(e.path).name == path.name, e
            return
        assert all(isinstance(r, Record) for r in records)
        for bad in source.bad:  # a skipped row names the manifest row or the file it points to
            assert isinstance(bad, BadRecord) and bad.problem
            # Row paths resolve against the manifest's folder; "." is that folder itself (found by fuzzing).
            # An absolute row path names that file itself ("/", found by fuzzing): test_absolute_row_path.
            assert bad.source.startswith((str(path), str(manifest_dir))) or Path(bad.source).is_absolute(), bad

    run()


# Found by fuzzing: a row whose image is "/" is skipped and named by that absolute path and its line.
def test_absolute_row_path_is_named_as_written(manifest_dir):
    path = manifest_dir / "root.csv"
    path.write_bytes(b",image,,,\n,/,,,")
    source = open_source(path)
    assert source.load() == []
    (bad,) = source.bad
    assert (bad.source, bad.line) == ("/", 2) and "directory" in bad.problem, bad


# Found by fuzzing: a path holding a NUL byte once let pathlib's ValueError out of load_image.
def test_read_pairs_nul_byte_in_image_path(manifest_dir):
    from polymodal.data.manifest import read_pairs

    path = manifest_dir / "nul.csv"
    path.write_bytes(b"image,text\nim\x00.png,x\n")
    assert read_pairs(path).bad[0].problem


@pytest.mark.parametrize("suffix, seed", [(".csv", CSV_SEED), (".jsonl", JSONL_SEED)])
def test_read_pairs_fuzz(manifest_dir, suffix, seed):
    from polymodal.data.manifest import read_pairs

    path = manifest_dir / f"pairs{suffix}"

    @FUZZ
    @given(mutated(seed))
    def run(data):
        path.write_bytes(data)
        try:
            assert all(isinstance(r, Record) for r in read_pairs(path).records)
        except DataError as e:
            assert e.path is not None and Path(e.path).name == path.name, e

    run()


# --- tar shards ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shard_seed(tmp_path_factory):
    d = tmp_path_factory.mktemp("shard")
    records = [
        Record(image=Image.open(io.BytesIO(IMAGE_SEEDS["png"])), text="one", label=1, key="a"),
        Record(audio=load_audio(AUDIO_SEEDS["wav"]), text="two", key="b"),
        Record(text="three", label="c", key="c", extra={"n": 1}),
    ]
    write_shards(records, d, shard_size=10)
    return (d / "shard-000000.tar").read_bytes()


def test_tar_shard_reading_fuzz(shard_seed, tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzzshard") / "shard-000000.tar"

    @settings(FUZZ, max_examples=300)
    @given(mutated(shard_seed))
    def run(data):
        path.write_bytes(data)
        items = list(read_shard(path))  # never raises: damage becomes BadRecords
        for item in items:
            assert isinstance(item, Record | BadRecord)
            if isinstance(item, BadRecord):
                assert item.source.startswith(str(path)) and item.problem
        try:
            open_source(path, strict=True).load()
        except DataError as e:
            assert e.path is not None and e.path.startswith(str(path))

    run()


def test_unmodified_seeds_decode(shard_seed, tmp_path):
    """The fuzz seeds themselves are valid, so the mutations start from real files."""
    for fmt, data in IMAGE_SEEDS.items():
        assert load_image(data).size == ((8, 6) if fmt == "png" else (10, 12))
    for data in AUDIO_SEEDS.values():
        assert load_audio(data).num_frames > 0
    (tmp_path / "s.tar").write_bytes(shard_seed)
    assert [r.key for r in read_shard(tmp_path / "s.tar")] == ["a", "b", "c"]
