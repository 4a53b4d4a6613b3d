"""RecordLoader: the same batches with 0 and 2 workers, seeded augmentation, bad records counted exactly,
decode cache hits and misses."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from polymodal.data.image_transforms import TrainTransform
from polymodal.data.loader import DecodeCache, DecodeOptions, ItemTransforms, RecordLoader, _SeedWorker
from polymodal.data.pixels import EFFNET, ImagePreprocess
from polymodal.data.record import Record
from polymodal.data.shapes import load_shapes
from polymodal.errors import ConfigError
from polymodal.text import Tokenize, WordTokenizer

# The deterministic per-image transform: shorter side to 16, centre crop, EfficientNet's (x - 127) / 128.
EVAL_16 = ImagePreprocess(size=16, long_side="floor", normalization=EFFNET).one


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Record], set[str]]:
    """24 scenes as PNG + WAV files; two images and one sound are corrupt."""
    root = tmp_path_factory.mktemp("scenes")
    records, broken = [], set()
    for i, r in enumerate(load_shapes("train", n=24, config=None)):
        image, sound = root / f"{i}.png", root / f"{i}.wav"
        r.image.save(image)
        soundfile.write(sound, r.audio.samples, r.audio.sample_rate)
        if i in (5, 17):
            image.write_bytes(image.read_bytes()[:60])  # truncated PNG
            broken.add(str(image))
        if i == 11:
            sound.write_bytes(b"RIFF....WAVEjunk")
            broken.add(str(sound))
        records.append(
            Record(image=image, audio=sound, text=r.text, label=i % 3, key=f"s{i}", source=str(image))
        )
    return records, broken


def loader(records: list[Record], **kw) -> RecordLoader:
    tok = WordTokenizer.build([r.text for r in records])
    return RecordLoader(
        records,
        batch_size=5,
        shuffle=True,
        seed=7,
        transforms=ItemTransforms(
            image=TrainTransform(size=24, degrees=10),
            audio=lambda a, generator: torch.from_numpy(a.samples[:4000]),
        ),
        text_fn=Tokenize(tok, max_length=16),
        decode=DecodeOptions(sample_rate=8000),
        **kw,
    )


def run_epoch(ld: RecordLoader) -> tuple[list[str], torch.Tensor, torch.Tensor, list]:
    batches = list(ld)
    keys = [k for b in batches for k in b.keys]
    images = torch.cat([b.image for b in batches])
    audio = torch.cat([b.audio for b in batches])
    return keys, images, audio, sorted(ld.bad, key=lambda x: (x.source, x.problem))


def test_zero_and_two_workers_give_the_same_batches(files: tuple[list[Record], set[str]]) -> None:
    records, broken = files
    k0, img0, aud0, bad0 = run_epoch(loader(records, num_workers=0))
    k2, img2, aud2, bad2 = run_epoch(loader(records, num_workers=2))
    assert k0 == k2 and torch.equal(img0, img2) and torch.equal(aud0, aud2)
    assert bad0 == bad2
    # exactly the broken files are skipped, each named with its problem; all good records are there
    assert {b.source for b in bad0} == broken and len(bad0) == 3
    assert all(b.problem for b in bad0)
    assert sorted(k0) == sorted(f"s{i}" for i in range(24) if i not in (5, 11, 17))
    assert img0.shape == (21, 3, 24, 24) and aud0.shape == (21, 4000)


def test_epochs_and_seeds_change_order_and_augmentation(files: tuple[list[Record], set[str]]) -> None:
    records, _ = files
    good = [r for i, r in enumerate(records) if i not in (5, 11, 17)]
    ld = loader(good)
    k_a, img_a, _, _ = run_epoch(ld)
    k_b, img_b, _, _ = run_epoch(ld)  # the next epoch
    assert k_a != k_b and sorted(k_a) == sorted(k_b)
    order = {k: i for i, k in enumerate(k_b)}
    assert not torch.equal(img_a, img_b[[order[k] for k in k_a]])  # fresh augmentations
    ld.set_epoch(0)
    k_again, img_again, _, _ = run_epoch(ld)
    assert k_again == k_a and torch.equal(img_again, img_a)
    other = RecordLoader(good, batch_size=5, shuffle=True, seed=8)
    assert [k for b in other for k in b.keys] != k_a
    assert len(ld) == 5 and len(RecordLoader(good, batch_size=5, drop_last=True)) == 4


def test_decode_cache(files: tuple[list[Record], set[str]], tmp_path) -> None:
    records, _ = files
    good = [Record(image=r.image, key=r.key) for i, r in enumerate(records) if i not in (5, 17)][:8]
    plain = RecordLoader(good, batch_size=4, image_fn=EVAL_16)
    reference = torch.cat([b.image for b in plain])
    cache = DecodeCache(memory_items=0, directory=tmp_path / "cache")
    cached = RecordLoader(good, batch_size=4, image_fn=EVAL_16, cache=cache)
    first = torch.cat([b.image for b in cached])
    assert (cache.hits, cache.misses) == (0, 8) and len(list((tmp_path / "cache").glob("*.npz"))) == 8
    second = torch.cat([b.image for b in cached])
    assert (cache.hits, cache.misses) == (8, 8)
    assert torch.equal(first, reference) and torch.equal(second, reference)
    # the disk level serves worker processes too (their counters are their own): same pixels
    workers = RecordLoader(good, batch_size=4, image_fn=EVAL_16, cache=cache, num_workers=2)
    assert torch.equal(torch.cat([b.image for b in workers]), reference)
    memory = DecodeCache(memory_items=2)
    for r in good[:3] + good[:1]:
        memory.get("image", r.image, DecodeOptions())
    assert (memory.hits, memory.misses) == (0, 4)  # LRU of 2: the first one was evicted
    memory.get("image", good[0].image, DecodeOptions())
    assert memory.hits == 1
    # a damaged cache file is a miss, not an error
    for f in (tmp_path / "cache").glob("*.npz"):
        f.write_bytes(b"junk")
    assert torch.equal(torch.cat([b.image for b in cached]), reference) and cache.misses == 16


def test_worker_seeding_and_arguments() -> None:
    seeder = _SeedWorker(seed=1, epoch=2)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    try:
        seeder(0)
        a = (torch.rand(2), np.random.rand())
        seeder(0)
        b = (torch.rand(2), np.random.rand())
        seeder(1)
        c = torch.rand(2)
    finally:
        torch.set_rng_state(state)
        torch.set_num_threads(threads)  # the seeder sets one thread, meant for worker processes
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and not torch.equal(a[0], c)
    with pytest.raises(ConfigError):
        RecordLoader([], batch_size=0)
    with pytest.raises(ConfigError):
        DecodeOptions(video_frames=4, video_fps=2.0)


def test_video_records_decode_and_cache(tmp_path) -> None:
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    clip = load_shapes("train", n=1, kind="clips")[0].video
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=8)
        vs.width, vs.height, vs.pix_fmt = 64, 64, "yuv420p"
        a = c.add_stream("pcm_s16le", rate=16_000, layout="mono")
        for frame in clip.frames:
            c.mux(vs.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        c.mux(vs.encode())
        pcm = (clip.audio.samples * 32767).astype(np.int16)[None]
        af = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        af.sample_rate = 16_000
        c.mux(a.encode(af))
        c.mux(a.encode())
    options = DecodeOptions(video_frames=4)
    cache = DecodeCache(memory_items=0, directory=tmp_path / "cache")
    first = cache.get("video", path, options)
    again = cache.get("video", path, options)  # from the .npz
    assert (cache.hits, cache.misses) == (1, 1)
    assert np.array_equal(first.frames, again.frames) and np.array_equal(first.times, again.times)
    assert first.audio is not None and again.audio is not None
    assert np.array_equal(first.audio.samples, again.audio.samples) and again.audio.sample_rate == 16_000
    assert (
        first.frames.shape == (4, 64, 64, 3)
        and np.abs(first.frames.astype(int) - clip.frames[first.indices]).mean() < 8
    )
    batch = next(
        iter(RecordLoader([Record(video=path, key="v"), Record(key="none")], batch_size=2, decode=options))
    )
    assert batch.video is not None and batch.video.shape == (2, 4, 3, 64, 64)
    assert batch.video_mask is not None and batch.video_mask.tolist() == [[True] * 4, [False] * 4]
