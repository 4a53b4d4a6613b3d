"""Video decoding (PyAV) and the video encoder.

The videos are written by PyAV in the test: frame ``i`` is a flat grey of value ``10 i``, so a decoded
frame's mean pixel says which source frame it is, and the audio track is a 440 Hz sine.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from polymodal.data.video import Video, load_video, sample_indices
from polymodal.errors import ConfigError, DataError, ShapeError
from polymodal.towers.video import VideoEncoder

av = pytest.importorskip("av")

N_FRAMES, RATE, SR = 20, 10, 16_000


def make_video(
    *, codec: str = "mpeg4", fmt: str = "mp4", frames: int = N_FRAMES, audio: bool = True
) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        vs = c.add_stream(codec, rate=RATE)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        if codec == "libx264":
            vs.options = {"bf": "2", "g": "8"}  # B-frames: packets arrive out of presentation order
        as_ = c.add_stream("aac", rate=SR, layout="mono") if audio else None
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 10 * i, np.uint8), format="rgb24")
            for p in vs.encode(frame):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        if as_ is not None:
            n = int(SR * frames / RATE)
            tone = np.sin(2 * np.pi * 440 * np.arange(n) / SR).astype(np.float32)[None] * 0.5
            step = as_.frame_size or 1024
            for k in range(0, n, step):
                af = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(tone[:, k : k + step]), format="fltp", layout="mono"
                )
                af.sample_rate, af.pts = SR, k
                for p in as_.encode(af):
                    c.mux(p)
            for p in as_.encode():
                c.mux(p)
    return buf.getvalue()


@pytest.fixture(scope="module")
def mp4() -> bytes:
    return make_video()


def grey_index(frames: np.ndarray) -> np.ndarray:
    """Which source frame each decoded frame is (mean pixel / 10)."""
    return np.rint(frames.reshape(len(frames), -1).mean(axis=1) / 10).astype(int)


# --- sampling --------------------------------------------------------------------------------------


def test_all_frames_count_timestamps_and_content(mp4: bytes) -> None:
    v = load_video(mp4)
    assert isinstance(v, Video)
    assert v.frames.shape == (N_FRAMES, 48, 64, 3) and v.frames.dtype == np.uint8
    assert v.num_source_frames == N_FRAMES and v.fps == RATE
    np.testing.assert_allclose(v.times, np.arange(N_FRAMES) / RATE, atol=1e-6)
    np.testing.assert_array_equal(grey_index(v.frames), np.arange(N_FRAMES))
    assert v.duration == pytest.approx(2.0)
    assert v.to_tensor().shape == (N_FRAMES, 3, 48, 64)


def test_uniform_sampling_takes_segment_centres(mp4: bytes) -> None:
    v = load_video(mp4, num_frames=4)
    np.testing.assert_array_equal(v.indices, [2, 7, 12, 17])  # floor((i + 0.5) * 20 / 4)
    np.testing.assert_allclose(v.times, [0.2, 0.7, 1.2, 1.7], atol=1e-6)
    np.testing.assert_array_equal(grey_index(v.frames), v.indices)


def test_rate_sampling_picks_the_frame_on_screen(mp4: bytes) -> None:
    v = load_video(mp4, fps=3.0)
    # sampling times 0, 1/3, 2/3, 1, 4/3, 5/3 s; the frame on screen is floor(t * 10)
    np.testing.assert_array_equal(v.indices, [0, 3, 6, 10, 13, 16])
    np.testing.assert_array_equal(grey_index(v.frames), v.indices)
    assert len(load_video(mp4, fps=20.0).indices) == 40  # above the source rate frames repeat


def test_b_frames_come_out_in_presentation_order() -> None:
    data = make_video(codec="libx264", audio=False)
    v = load_video(data, num_frames=5)
    np.testing.assert_array_equal(v.indices, [2, 6, 10, 14, 18])
    np.testing.assert_array_equal(grey_index(v.frames), v.indices)
    assert v.audio is None


def test_resize_and_audio_track(mp4: bytes) -> None:
    v = load_video(mp4, num_frames=3, size=(32, 24))
    assert v.frames.shape == (3, 24, 32, 3)
    a = v.audio
    assert a is not None and a.sample_rate == SR and a.samples.ndim == 1
    assert 2.0 <= a.duration < 2.2  # AAC adds priming and padding samples
    spectrum = np.abs(np.fft.rfft(a.samples))
    assert np.fft.rfftfreq(len(a.samples), 1 / SR)[spectrum.argmax()] == pytest.approx(440, abs=2)
    half = load_video(mp4, num_frames=1, sample_rate=8000).audio
    assert half is not None and half.sample_rate == 8000 and abs(len(half.samples) - len(a.samples) / 2) <= 2
    assert load_video(mp4, num_frames=1, audio=False).audio is None


def test_sample_indices_pure() -> None:
    times = np.arange(10) / 5.0
    np.testing.assert_array_equal(sample_indices(times, num_frames=2, source_fps=5.0), [2, 7])
    np.testing.assert_array_equal(
        sample_indices(times, num_frames=20, source_fps=5.0), np.repeat(np.arange(10), 2)
    )
    np.testing.assert_array_equal(sample_indices(times, fps=1.0, source_fps=5.0), [0, 5])
    np.testing.assert_array_equal(sample_indices(times, source_fps=5.0), np.arange(10))
    with pytest.raises(ConfigError):
        sample_indices(times, num_frames=2, fps=1.0, source_fps=5.0)


# --- failures --------------------------------------------------------------------------------------


def test_errors_name_the_file(tmp_path, mp4: bytes) -> None:
    with pytest.raises(DataError, match="missing.mp4: file not found"):
        load_video(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(DataError, match="empty.mp4: empty"):
        load_video(tmp_path / "empty.mp4")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(DataError, match="noise.mp4: cannot decode as video"):
        load_video(tmp_path / "noise.mp4")
    with pytest.raises(DataError, match="clip.mp4: frames are 64x48, over"):
        load_video(mp4, max_pixels=1000, name="clip.mp4")
    with pytest.raises(DataError, match="more than 5 frames"):
        load_video(mp4, max_frames=5)
    # an audio-only file is a container without a video stream
    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as c:
        s = c.add_stream("pcm_s16le", rate=8000, layout="mono")
        f = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        f.sample_rate = 8000
        for p in [*s.encode(f), *s.encode()]:
            c.mux(p)
    with pytest.raises(DataError, match="tone.wav: no video stream"):
        load_video(buf.getvalue(), name="tone.wav")
    with pytest.raises(ConfigError):
        load_video(mp4, num_frames=2, fps=1.0)
    with pytest.raises(ConfigError):
        load_video(mp4, num_frames=0)


def _decodes_or_data_error(data: bytes) -> None:
    start = time.perf_counter()
    try:
        v = load_video(data, num_frames=4, name="fuzz.mp4")
        assert v.frames.shape[0] == 4
    except DataError as e:
        assert e.path == "fuzz.mp4"
    assert time.perf_counter() - start < 5.0


@pytest.mark.parametrize("fmt,codec", [("mp4", "mpeg4"), ("webm", "libvpx")])
def test_truncated_files_fail_cleanly(fmt: str, codec: str) -> None:
    data = make_video(codec=codec, fmt=fmt, audio=fmt == "mp4")  # WebM takes no AAC
    for cut in np.linspace(1, len(data) - 1, 12).astype(int):
        _decodes_or_data_error(data[:cut])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.integers(0, 100_000), st.integers(0, 255)), min_size=1, max_size=8),
    st.one_of(st.none(), st.integers(1, 100_000)),
)
def test_corrupted_bytes_never_crash(mp4: bytes, flips: list[tuple[int, int]], cut: int | None) -> None:
    data = bytearray(mp4)
    for pos, value in flips:
        data[pos % len(data)] = value
    _decodes_or_data_error(bytes(data if cut is None else data[: cut % len(data)]))


# --- the encoder -----------------------------------------------------------------------------------


class MeanColour(nn.Module):
    """A tiny frame encoder: per-channel means through a linear layer."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(3, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=(2, 3)))


def test_encoder_matches_pooling_of_real_frames_only() -> None:
    torch.manual_seed(0)
    enc = VideoEncoder(MeanColour(8), 8, positions=False)
    frames = torch.randn(2, 5, 3, 4, 4)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out = enc(frames, mask)
    garbage = frames.clone()
    garbage[1, 3:] = 1e3  # padded frames must not matter
    torch.testing.assert_close(enc(garbage, mask).embedding, out.embedding)
    # reference: the additive attention over the frame encoder's output of the 3 real frames
    ref = enc.pool(enc.frame_encoder(frames[1, :3])[None]).context[0]
    torch.testing.assert_close(out.embedding[1], ref)
    assert torch.all(out.weights[1, 3:] == 0) and torch.allclose(out.weights.sum(1), torch.ones(2))


def test_positions_make_order_matter() -> None:
    torch.manual_seed(0)
    frames = torch.randn(1, 6, 3, 4, 4)
    reverse = frames.flip(1)
    with_pos = VideoEncoder(MeanColour(8), 8)
    nn.init.normal_(with_pos.positions.weight, std=1.0)  # type: ignore[union-attr]
    without = VideoEncoder(MeanColour(8), 8, positions=False)
    torch.testing.assert_close(without(frames).embedding, without(reverse).embedding)  # a set of frames
    assert not torch.allclose(with_pos(frames).embedding, with_pos(reverse).embedding, atol=1e-4)


def test_temporal_attention_ignores_padding_and_missing_videos_are_zero() -> None:
    torch.manual_seed(0)
    enc = VideoEncoder(MeanColour(8), 8, heads=2, max_frames=6).eval()
    frames = torch.randn(3, 6, 3, 4, 4, requires_grad=True)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [False] * 6])
    out = enc(frames, mask)
    short = enc(frames[1:2, :4].detach())
    torch.testing.assert_close(out.embedding[1], short.embedding[0], atol=1e-5, rtol=1e-5)
    assert torch.all(out.embedding[2] == 0) and torch.all(out.weights[2] == 0)
    out.embedding.sum().backward()
    assert frames.grad is not None and torch.isfinite(frames.grad).all()
    assert (
        frames.grad[0].abs().sum() > 0
        and torch.all(frames.grad[1, 4:] == 0)
        and torch.all(frames.grad[2] == 0)
    )
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all() for p in enc.parameters() if p.requires_grad
    )


def test_encoder_checks_shapes() -> None:
    enc = VideoEncoder(MeanColour(8), 8, max_frames=4)
    with pytest.raises(ShapeError, match="max_frames"):
        enc(torch.randn(1, 5, 3, 4, 4))
    with pytest.raises(ShapeError, match="mask"):
        enc(torch.randn(1, 3, 3, 4, 4), torch.ones(1, 3))
    with pytest.raises(ShapeError, match="frame_encoder"):
        VideoEncoder(MeanColour(4), 8)(torch.randn(1, 3, 3, 4, 4))


def test_encoder_learns_motion_direction_from_shape_clips() -> None:
    """A small CNN per frame + positions + attention pooling tells left from right motion (about 3 s on one thread, so it runs in the default suite)."""
    from polymodal.data.shapes import ShapesConfig, load_shapes

    cfg = ShapesConfig(image_size=32, max_shapes=1, clip_frames=6)
    clips = [r for r in load_shapes("train", n=200, kind="clips", config=cfg) if r.label in (0, 1)]
    test = [r for r in load_shapes("test", n=100, kind="clips", config=cfg) if r.label in (0, 1)]

    def tensors(rs: list) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([r.video.to_tensor() for r in rs]).float() / 255.0  # (B, T, 3, H, W)
        return x, torch.tensor([r.label for r in rs])

    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 32))
    enc = VideoEncoder(cnn, 32, max_frames=6)
    head = nn.Linear(32, 2)
    x, y = tensors(clips)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(80):
        loss = nn.functional.cross_entropy(head(enc(x).embedding), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    xt, yt = tensors(test)
    with torch.no_grad():
        accuracy = (head(enc(xt).embedding).argmax(1) == yt).float().mean().item()
    assert accuracy > 0.85, accuracy
