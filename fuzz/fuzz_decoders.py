"""Coverage-guided fuzz target (atheris, libFuzzer) for every polymodal decoder.

Run: ``python fuzz/fuzz_decoders.py -runs=2000`` (add a corpus folder to keep what it finds, and
``-max_total_time=60`` to bound it by time). The first input byte picks the decoder; the rest is the file:

    0 load_image   1 load_audio   2 load_video   3 text   4 CSV manifest   5 JSONL manifest   6 tar shard

The property: a decoder returns a value or raises :class:`polymodal.errors.DataError` that names the
file; any other exception is a crash that libFuzzer reports (with the input that caused it). Seed
inputs (valid files of each kind) are generated in memory, so the fuzzer starts from real formats.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["polymodal"]):
    from polymodal.data.audio import load_audio
    from polymodal.data.decode import decode_text
    from polymodal.data.images import load_image
    from polymodal.data.shards import read_shard
    from polymodal.data.sources import open_source
    from polymodal.errors import DataError

NAME = "fuzzed-input"
WORK = Path(tempfile.mkdtemp(prefix="polymodal-fuzz-"))


def _video(data: bytes) -> object:
    try:
        from polymodal.data.video import load_video
    except ImportError:  # PyAV missing: nothing to fuzz on this path
        return None
    return load_video(data, name=NAME)


def _manifest(suffix: str):
    def run(data: bytes) -> object:
        path = WORK / f"m{suffix}"
        path.write_bytes(data)
        return open_source(path).load()

    return run


def _shard(data: bytes) -> object:
    path = WORK / "s.tar"
    path.write_bytes(data)
    return list(read_shard(path))


TARGETS = [
    lambda d: load_image(d, name=NAME),
    lambda d: load_audio(d, name=NAME),
    _video,
    lambda d: decode_text(d, name=NAME),
    _manifest(".csv"),
    _manifest(".jsonl"),
    _shard,
]


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name atheris expects)
    if not data:
        return
    which, payload = data[0] % len(TARGETS), data[1:]
    try:
        TARGETS[which](payload)
    except DataError as e:
        if e.path is None:
            raise AssertionError(f"DataError without a file name: {e}") from None


def seeds(folder: Path) -> None:
    """Write one valid input per target into ``folder`` (a libFuzzer corpus)."""
    import numpy as np
    import soundfile
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(buf, format="PNG")
    png = buf.getvalue()
    buf = io.BytesIO()
    soundfile.write(buf, np.zeros(64, np.float32), 8000, format="WAV")
    wav = buf.getvalue()
    files = {"image": b"\x00" + png, "audio": b"\x01" + wav, "text": b"\x03hello",
             "csv": b"\x04id,text\n1,hi\n", "jsonl": b'\x05{"text": "hi"}\n'}
    from polymodal.data.record import Record
    from polymodal.data.shards import write_shards

    shard_dir = WORK / "seed-shard"
    write_shards([Record(text="hi", key="a")], shard_dir)
    files["shard"] = b"\x06" + (shard_dir / "shard-000000.tar").read_bytes()
    try:
        import av

        buf = io.BytesIO()
        with av.open(buf, "w", format="mp4") as c:
            stream = c.add_stream("mpeg4", rate=4)
            stream.width = stream.height = 16
            for k in range(3):
                frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 80 * k, np.uint8), format="rgb24")
                for p in stream.encode(frame):
                    c.mux(p)
            for p in stream.encode():
                c.mux(p)
        files["video"] = b"\x02" + buf.getvalue()
    except ImportError:
        pass
    for name, data in files.items():
        (folder / name).write_bytes(data)


if __name__ == "__main__":
    args = sys.argv[:]
    if not any(not a.startswith("-") for a in args[1:]):  # no corpus folder given: start from the seeds
        corpus = WORK / "corpus"
        seeds(corpus)
        args.append(str(corpus))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    atheris.Setup(args, TestOneInput)
    atheris.Fuzz()
