"""load_image: every colour mode becomes upright 8-bit RGB, every bad file one DataError naming it."""

from __future__ import annotations

import io
import resource
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polymodal.data.images import load_image
from polymodal.errors import ConfigError, DataError


def encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def png_with_header_size(width: int, height: int) -> bytes:
    """A tiny valid 1-bit PNG whose IHDR is patched to claim width x height (CRC fixed up)."""
    d = bytearray(encode(Image.new("1", (8, 8))))
    # PNG: 8-byte signature, then IHDR chunk = length(4) type(4) width(4) height(4) ... crc(4).
    assert d[12:16] == b"IHDR"
    d[16:24] = struct.pack(">II", width, height)
    d[29:33] = struct.pack(">I", zlib.crc32(bytes(d[12:29])))
    return bytes(d)


def rgb(im: Image.Image) -> np.ndarray:
    assert im.mode == "RGB"
    return np.asarray(im).astype(np.int64)


# --- orientation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "orientation, size, red_at",
    [
        (1, (40, 20), (0, 0)),  # stored upright
        (6, (20, 40), (19, 0)),  # stored rotated: display = rotate 90 degrees clockwise
        (8, (20, 40), (0, 39)),  # display = rotate 90 degrees counter-clockwise
        (3, (40, 20), (39, 19)),  # display = rotate 180 degrees
    ],
)
def test_exif_orientation_gives_upright_image(tmp_path, orientation, size, red_at):
    stored = Image.new("RGB", (40, 20), (255, 255, 255))
    stored.paste((255, 0, 0), (0, 0, 8, 8))  # a red block in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation tag
    p = write(tmp_path, "photo.jpg", encode(stored, "JPEG", exif=exif.tobytes(), quality=95))

    im = load_image(p)
    assert im.size == size
    px = im.getpixel(red_at)
    assert px[0] > 200 and px[1] < 60 and px[2] < 60, px
    # The opposite corner stays white.
    far = (size[0] - 1 - red_at[0], size[1] - 1 - red_at[1])
    assert min(im.getpixel(far)) > 200


# --- transparency ----------------------------------------------------------------------------------


def over(rgba: np.ndarray, bg: tuple[int, int, int]) -> np.ndarray:
    """Reference 'over' compositing (Porter & Duff): out = a * c + (1 - a) * bg."""
    a = rgba[..., 3:4] / 255.0
    return np.rint(a * rgba[..., :3] + (1 - a) * np.array(bg)).astype(np.int64)


@pytest.mark.parametrize("bg", [(255, 255, 255), (0, 0, 255)])
def test_rgba_is_composited_on_background(tmp_path, bg):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(6, 5, 4), dtype=np.uint8)
    arr[0, 0] = (255, 0, 0, 0)  # fully transparent red
    arr[0, 1] = (10, 20, 30, 255)  # opaque
    arr[0, 2] = (200, 100, 0, 128)  # half transparent
    p = write(tmp_path, "rgba.png", encode(Image.fromarray(arr, mode="RGBA")))

    out = rgb(load_image(p, background=bg))
    assert tuple(out[0, 0]) == bg
    assert tuple(out[0, 1]) == (10, 20, 30)
    np.testing.assert_allclose(out, over(arr.astype(np.int64), bg), atol=1)


def test_la_is_composited(tmp_path):
    im = Image.new("LA", (2, 1))
    im.putpixel((0, 0), (0, 0))  # transparent black
    im.putpixel((1, 0), (80, 255))  # opaque grey
    out = rgb(load_image(encode(im), background=(10, 200, 30)))
    assert tuple(out[0, 0]) == (10, 200, 30)
    assert tuple(out[0, 1]) == (80, 80, 80)


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (3, 1))
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    im.putdata([0, 1, 2])
    p = write(tmp_path, "pal.png", encode(im, transparency=1))  # green index is transparent
    assert Image.open(p).mode == "P"

    out = rgb(load_image(p, background=(7, 8, 9)))
    assert [tuple(c) for c in out[0]] == [(255, 0, 0), (7, 8, 9), (0, 0, 255)]


def test_palette_without_transparency_and_gif(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([12, 34, 56, 200, 100, 50] + [0] * (256 * 3 - 6))
    im.putdata([0, 1])
    for fmt in ("PNG", "GIF"):
        out = rgb(load_image(encode(im, fmt)))
        assert [tuple(c) for c in out[0]] == [(12, 34, 56), (200, 100, 50)], fmt


# --- grayscale and bit depth -----------------------------------------------------------------------


def test_grayscale_l_and_1bit():
    gray = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8))
    assert gray.mode == "L"
    assert rgb(load_image(encode(gray))).tolist() == [[[0, 0, 0], [77, 77, 77], [255, 255, 255]]]

    bits = Image.new("1", (2, 1))
    bits.putpixel((1, 0), 1)
    assert rgb(load_image(encode(bits))).tolist() == [[[0, 0, 0], [255, 255, 255]]]


def test_16bit_png_maps_full_range_to_8bit(tmp_path):
    values = np.array([[0, 257 * 100, 30000, 65535]], dtype=np.uint16)
    p = write(tmp_path, "deep.png", encode(Image.fromarray(values)))
    assert Image.open(p).mode.startswith("I;16")
    # Pillow's own convert("L") clips every value over 255 to white; we keep the ordering.
    assert np.asarray(Image.open(p).convert("L")).tolist() == [[0, 255, 255, 255]]

    out = rgb(load_image(p))
    assert out[0, :, 0].tolist() == [0, 100, round(30000 / 257), 255]
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_32bit_int_and_float_grayscale():
    ints = Image.fromarray(np.array([[0, 65535]], dtype=np.int32))
    assert ints.mode == "I"
    assert rgb(load_image(encode(ints, "TIFF")))[0, :, 0].tolist() == [0, 255]

    floats = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert floats.mode == "F"
    assert rgb(load_image(encode(floats, "TIFF")))[0, :, 0].tolist() == [0, 128, 255]


def test_cmyk_jpeg(tmp_path):
    im = Image.new("CMYK", (16, 8), (0, 0, 0, 0))  # no ink: white
    im.paste((255, 0, 0, 0), (8, 0, 16, 8))  # full cyan
    p = write(tmp_path, "print.jpg", encode(im, "JPEG", quality=100))
    assert Image.open(p).mode == "CMYK"

    out = rgb(load_image(p))
    np.testing.assert_allclose(out[4, 2], (255, 255, 255), atol=6)
    np.testing.assert_allclose(out[4, 13], (0, 255, 255), atol=6)


def test_path_and_bytes_give_the_same_image(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    data = encode(Image.fromarray(arr))
    a = load_image(write(tmp_path, "x.png", data))
    b = load_image(data)
    assert a.mode == "RGB" and np.array_equal(np.asarray(a), arr) and np.array_equal(np.asarray(b), arr)


# --- bad input -------------------------------------------------------------------------------------


def test_truncated_png_names_the_file(tmp_path):
    arr = np.random.default_rng(2).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(arr))
    p = write(tmp_path, "cut.png", data[: len(data) // 2])
    with pytest.raises(DataError) as err:
        load_image(p)
    assert err.value.path == str(p)
    assert "truncated or corrupt PNG" in err.value.problem
    assert str(err.value).startswith(str(p))


def test_random_bytes_are_not_an_image(tmp_path):
    junk = np.random.default_rng(3).integers(0, 256, size=500, dtype=np.uint8).tobytes()
    p = write(tmp_path, "junk.jpg", junk)
    with pytest.raises(DataError, match="not an image") as err:
        load_image(p)
    assert err.value.path == str(p)
    with pytest.raises(DataError, match="upload.bin: not an image"):
        load_image(junk, name="upload.bin")
    with pytest.raises(DataError, match="empty file"):
        load_image(write(tmp_path, "empty.png", b""))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="file not found") as err:
        load_image(tmp_path / "nope.png")
    assert err.value.path == str(tmp_path / "nope.png")
    with pytest.raises(DataError, match="directory"):
        load_image(tmp_path)


def test_oversized_header_is_refused_without_allocating(tmp_path):
    p = write(tmp_path, "bomb.png", png_with_header_size(100_000, 100_000))  # 10 Gpx: 10 GB if decoded
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(DataError) as err:
        load_image(p)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert err.value.path == str(p)
    assert err.value.problem == "image is 100000x100000 = 10000 Mpx, over the 64 Mpx limit (max_pixels)"
    assert grown_mib < 200


def test_pixel_limit_between_ours_and_pillows():
    # 9000 x 9000 = 81 Mpx: under Pillow's own error limit (~179 Mpx), so our header check decides.
    data = png_with_header_size(9000, 9000)
    with pytest.raises(DataError, match=r"9000x9000 = 81 Mpx, over the 64 Mpx limit \(max_pixels\)"):
        load_image(data, name="big.png")
    with pytest.raises(DataError, match=r"over the 1 Mpx limit"):
        load_image(png_with_header_size(2000, 1000), max_pixels=1_000_000)
    # A raised limit lets the header through; this file's pixel data is then found to be short.
    with pytest.raises(DataError, match="truncated or corrupt PNG"):
        load_image(data, max_pixels=100_000_000)


def test_limit_above_pillows_names_pillows_knob():
    with pytest.raises(DataError, match=r"30000x30000, over Pillow's decompression-bomb limit .*MAX_IMAGE_PIXELS"):
        load_image(png_with_header_size(30000, 30000), max_pixels=10**10)


def test_bad_arguments_are_config_errors():
    data = encode(Image.new("RGB", (2, 2)))
    with pytest.raises(ConfigError, match="max_pixels"):
        load_image(data, max_pixels=0)
    with pytest.raises(ConfigError, match="background"):
        load_image(data, background=(300, 0, 0))
    with pytest.raises(ConfigError, match="background"):
        load_image(data, background=(1, 2))
