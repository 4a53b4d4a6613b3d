"""Decode one image file (or bytes) into an upright 8-bit RGB ``PIL.Image``, or say why it cannot be.

Real image folders hold more than clean RGB JPEGs: phone photos stored sideways with an EXIF
orientation tag, RGBA and palette PNGs with transparency, grayscale and 16-bit scans, CMYK JPEGs from
print workflows, half-downloaded files, and now and then a "decompression bomb" whose header claims
a gigantic canvas. :func:`load_image` turns each of those into the same thing a model expects, and
every failure into one :class:`~polymodal.errors.DataError` that names the file and the problem.
"""

from __future__ import annotations

import hashlib
import io
import re
import struct
import warnings
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, overload

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from polymodal.data.record import BadRecord
from polymodal.errors import ConfigError, DataError

DEFAULT_MAX_PIXELS = 64_000_000  # 8000x8000; far above any training resolution, far below a bomb

# Errors Pillow raises while decoding pixel data of a truncated or damaged file.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


def load_image(
    source: str | Path | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: Sequence[int] = (255, 255, 255),
    name: str | None = None,
    min_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Decode an image into an upright, 8-bit RGB ``PIL.Image.Image``.

    Steps, in order: identify the format from the header; refuse images whose header size
    (width * height) is over ``max_pixels`` before any pixel is decoded; with ``min_size``, have a
    JPEG decoded reduced (below); decode; apply the EXIF
    orientation (``ImageOps.exif_transpose``) so that a sideways phone photo comes out upright;
    convert to RGB. Transparent images (RGBA, LA, PA, palette or L/RGB with a ``transparency``
    entry) are composited onto ``background``; 16-bit and 32-bit grayscale are rescaled to 8 bits
    over their full range (a 16-bit value v becomes round(v / 257), so 65535 -> 255), rather than
    clipped at 255 as Pillow's own ``convert("L")`` does; CMYK, YCbCr and bilevel images go through
    Pillow's conversion. Multi-frame files (GIF, APNG, TIFF) give their first frame.

    Args:
        source: a file path, or the encoded bytes of an image.
        max_pixels: largest width * height accepted; checked from the header, before decoding.
        background: RGB colour (three ints in 0..255) that transparent pixels are composited on.
        name: what to call the image in error messages when ``source`` is bytes
            (defaults to ``"<bytes>"``); ignored for paths.
        min_size: ``(shorter, longer)``: the smallest sides the caller needs (a model's
            :attr:`~polymodal.data.pixels.ImagePreprocess.min_source_size`). A JPEG is then decoded at
            1/2, 1/4 or 1/8 scale in the DCT domain (Pillow's ``draft``), the strongest reduction that
            keeps its shorter side >= ``shorter`` and its longer side >= ``longer``, so a 4000x3000 photo
            costs a fraction of its full decode and nothing downstream is upscaled. Other formats, and
            ``None`` (the default: training data and anything that needs every pixel), decode at full
            size. The pixel limit is applied to the size in the header either way.

    Returns:
        A new RGB image, independent of any open file.

    Raises:
        DataError: the file is missing, not an image, truncated or corrupt, too large, or in a
            colour mode that cannot be turned into RGB. ``error.path`` names the file.
        ConfigError: ``max_pixels`` or ``background`` is invalid.
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels <= 0:
        raise ConfigError(f"max_pixels must be a positive int, got {max_pixels!r}")
    bg = _check_background(background)

    if isinstance(source, bytes | bytearray | memoryview):
        label = name or "<bytes>"
        data = bytes(source)
    elif isinstance(source, str | Path):
        label = str(source)
        data = _read_file(Path(source))
    else:
        raise ConfigError(f"load_image: source must be a path or bytes, got {type(source).__name__}")
    if not data:
        raise DataError(label, "not an image (empty file)")

    reduce = _check_min_size(min_size)
    im = _open(io.BytesIO(data), label, max_pixels)  # the pixel limit sees the full size, before draft
    try:
        fmt = im.format or "image"
        try:
            if reduce is not None and im.format in ("JPEG", "MPO"):
                _draft(im, reduce)
            im.load()
            # Orientation is applied after decoding: PNG may carry its EXIF block after the pixels.
            # exif_transpose copies the image even when there is nothing to do, so check first.
            turned = im.getexif().get(ExifTags.Base.Orientation, 1) not in (1, None)
            upright = ImageOps.exif_transpose(im) if turned else im
        except _DECODE_ERRORS as e:
            raise DataError(label, f"truncated or corrupt {fmt} ({_short(e)})") from None
        out = _to_rgb(upright, bg, label)
        if out is im:  # never hand back the object tied to the decoder (closed below)
            out = im.copy()
    finally:
        im.close()
    return out


@dataclass
class LoadedImages:
    """The images of a list of files that could be read, and the files that could not.

    Attributes:
        images: the decoded images, in input order.
        kept: for each image, its index in the input list.
        bad: one :class:`BadRecord` per unreadable file (its path and the problem).
    """

    images: list[Image.Image] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)


def load_images(
    paths: Sequence[str | Path], *, strict: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS,
    min_size: tuple[int, int] | None = None,
) -> LoadedImages:
    """Decode each file with :func:`load_image`; one that cannot be read is skipped and reported.

    The command-line tools that take image files (``embed``, ``zeroshot``) read them through this, as
    ``train`` and ``index build`` read theirs: a corrupt file among many costs its own result only.

    Args:
        paths: the files.
        strict: raise the first file's :class:`DataError` instead of skipping it.
        max_pixels: size limit passed to :func:`load_image`.
        min_size: smallest sides needed, passed to :func:`load_image` (JPEGs decode reduced to it).
    """
    out = LoadedImages()
    for i, path in enumerate(paths):
        try:
            out.images.append(load_image(path, max_pixels=max_pixels, min_size=min_size))
        except DataError as e:
            if strict:
                raise
            out.bad.append(BadRecord(source=str(path), problem=e.problem))
            continue
        out.kept.append(i)
    return out


def image_content_hash(img: Image.Image) -> str:
    """Hash of the decoded pixels (mode, size, bytes): the same picture hashes the same whatever its file."""
    h = hashlib.sha256(f"{img.mode}:{img.size[0]}x{img.size[1]}:".encode())
    h.update(img.tobytes())
    return h.hexdigest()[:32]


class ImageFiles(Sequence[Image.Image]):
    """Image files that are decoded one at a time, when an item is read, and never kept.

    A training set of 7,000 1024x768 photos held as decoded images is 17 GB; held as an ``ImageFiles``
    it is 7,000 paths, and whoever reads it keeps only what it makes of each image (trunk features).
    ``hashes`` are the images' :func:`image_content_hash` where whoever checked the files computed
    them, so a feature cache is looked up without decoding anything again.
    """

    def __init__(self, paths: Sequence[Path], *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 hashes: Sequence[str] | None = None) -> None:
        if hashes is not None and len(hashes) != len(paths):
            raise ConfigError(f"ImageFiles: {len(hashes)} hashes for {len(paths)} paths")
        self.paths = list(paths)
        self.max_pixels = max_pixels
        self.hashes = None if hashes is None else list(hashes)

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, i: int) -> Image.Image: ...

    @overload
    def __getitem__(self, i: slice) -> ImageFiles: ...

    def __getitem__(self, i: int | slice) -> Image.Image | ImageFiles:
        if isinstance(i, slice):
            return self.take(range(len(self))[i])
        return load_image(self.paths[i], max_pixels=self.max_pixels)

    def take(self, indices: Iterable[int]) -> ImageFiles:
        """The files at ``indices``, still undecoded."""
        idx = [int(i) for i in indices]
        hashes = None if self.hashes is None else [self.hashes[i] for i in idx]
        return ImageFiles([self.paths[i] for i in idx], max_pixels=self.max_pixels, hashes=hashes)

    @staticmethod
    def concat(parts: Sequence[ImageFiles]) -> ImageFiles:
        """The files of ``parts`` in order (the first part's pixel limit applies)."""
        known = all(p.hashes is not None for p in parts)
        return ImageFiles([path for p in parts for path in p.paths],
                          max_pixels=parts[0].max_pixels if parts else DEFAULT_MAX_PIXELS,
                          hashes=[h for p in parts for h in (p.hashes or [])] if known else None)

    def __repr__(self) -> str:
        return f"ImageFiles({len(self)} files)"


def content_hashes(images: Sequence[Image.Image]) -> list[str]:
    """:func:`image_content_hash` of each image; for :class:`ImageFiles` the hashes it carries, if any."""
    if isinstance(images, ImageFiles) and images.hashes is not None:
        return list(images.hashes)
    return [image_content_hash(img) for img in images]


# --- helpers, in the order load_image uses them -------------------------------------------------


def _check_background(background: Sequence[int]) -> tuple[int, int, int]:
    try:
        bg = tuple(int(c) for c in background)
    except (TypeError, ValueError):
        bg = ()
    if len(bg) != 3 or not all(0 <= c <= 255 for c in bg):
        raise ConfigError(f"background must be three ints in 0..255 (RGB), got {background!r}")
    return bg[0], bg[1], bg[2]


def _check_min_size(min_size: tuple[int, int] | None) -> tuple[int, int] | None:
    if min_size is None:
        return None
    sides = tuple(min_size) if isinstance(min_size, Sequence) else ()
    if len(sides) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sides):
        raise ConfigError(f"min_size must be two positive ints (shorter, longer), got {min_size!r}")
    return sides[0], sides[1]


def _draft(im: Image.Image, min_size: tuple[int, int]) -> None:
    """Ask the JPEG decoder for the smallest 1/1, 1/2, 1/4 or 1/8 scale that keeps both needed sides.

    Pillow picks the largest factor s with ``s <= width // want_w`` and ``s <= height // want_h``, and the
    result is ``ceil(width / s) x ceil(height / s)``, so each side stays >= what was asked for it. The sides
    are matched by length, not by axis: the EXIF rotation applied after decoding swaps width and height but
    not which side is shorter.
    """
    short, long = min_size
    w, h = im.size
    im.draft("RGB", (short, long) if w <= h else (long, short))


def _read_file(path: Path) -> bytes:
    """Read the whole file: images are small next to RAM, and it lets one code path serve bytes too."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a directory, not an image file") from None
    except PermissionError:
        raise DataError(path, "permission denied") from None
    except OSError as e:
        raise DataError(path, f"cannot read file ({_short(e)})") from None
    except ValueError:  # the OS cannot name such a file, e.g. a path with a NUL byte
        raise DataError(repr(str(path)), "not a valid file path (contains a NUL byte)") from None


def _open(fp: IO[bytes], label: str, max_pixels: int) -> Image.Image:
    """Identify the image from its header and apply the pixel limit before anything is decoded."""
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own MAX_IMAGE_PIXELS; our max_pixels is the limit that counts.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp)
    except Image.DecompressionBombError as e:
        # Pillow refuses images over 2 * MAX_IMAGE_PIXELS inside Image.open, before we see the size.
        size = _header_size(fp)
        if size is not None and size[0] * size[1] > max_pixels:
            raise DataError(label, _too_big(size, max_pixels)) from None
        # Under our limit but over Pillow's global one: say which knob to turn.
        pixels = re.search(r"\((\d+) pixels\)", str(e))
        what = f"{size[0]}x{size[1]}" if size else (f"{_mpx(int(pixels.group(1)))}" if pixels else "too large")
        raise DataError(
            label,
            f"image is {what}, over Pillow's decompression-bomb limit of "
            f"{_mpx(2 * (Image.MAX_IMAGE_PIXELS or 0))} (raise PIL.Image.MAX_IMAGE_PIXELS to allow it)",
        ) from None
    except UnidentifiedImageError:
        raise DataError(label, "not an image (format not recognised)") from None
    except _DECODE_ERRORS as e:
        raise DataError(label, f"corrupt image header ({_short(e)})") from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise DataError(label, _too_big((w, h), max_pixels))
    return im


def _header_size(fp: IO[bytes]) -> tuple[int, int] | None:
    """Size from the header, bypassing Pillow's bomb check; only used to word the error message.

    Mirrors the identify loop of ``Image.open`` (plugin factories in ``Image.OPEN``), which parses
    the header only. Returns ``None`` where that fails, and the caller falls back to Pillow's text.
    """
    try:
        Image.init()
        fp.seek(0)
        prefix = fp.read(16)
        for fmt in Image.ID:
            factory, accept = Image.OPEN[fmt]
            accepted = accept(prefix) if accept is not None else True
            if not accepted or isinstance(accepted, str):  # a str is Pillow's "looks like it, but" note
                continue
            fp.seek(0)
            try:
                return factory(fp, "").size  # type: ignore[no-any-return]
            except Exception:
                continue
    except Exception:
        return None
    return None


def _too_big(size: tuple[int, int], max_pixels: int) -> str:
    w, h = size
    return f"image is {w}x{h} = {_mpx(w * h)}, over the {_mpx(max_pixels)} limit (max_pixels)"


def _mpx(pixels: int) -> str:
    mpx = pixels / 1e6
    return f"{mpx:.0f} Mpx" if mpx >= 10 else f"{mpx:.2g} Mpx"


def _to_rgb(im: Image.Image, bg: tuple[int, int, int], label: str) -> Image.Image:
    """Convert any decoded mode to RGB: composite transparency, rescale high bit depths."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        # Composite: out = alpha * pixel + (1 - alpha) * background (Porter & Duff "over", 1984).
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*bg, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(im)
    try:
        return im.convert("RGB")  # P, L, 1, CMYK, YCbCr, HSV, ...
    except ValueError:
        raise DataError(label, f"colour mode {mode} cannot be converted to RGB") from None


def _high_depth_to_rgb(im: Image.Image) -> Image.Image:
    """Map 16-bit (I;16*), 32-bit int (I) and float (F) grayscale to 8 bits without clipping."""
    a = np.asarray(im)  # (H, W), uint16 / int32 / float32
    if im.mode.startswith("I;16") or (a.size and a.min() >= 0 and a.max() <= 65535 and im.mode == "I"):
        # Full 16-bit range onto 8 bits: 65535 / 257 = 255 exactly, so black and white stay put.
        a8 = np.rint(a.astype(np.float64) / 257.0)
    elif im.mode == "F" and a.size and a.min() >= 0.0 and a.max() <= 1.0:
        a8 = np.rint(a.astype(np.float64) * 255.0)  # float image in [0, 1]
    else:
        # Unknown scale (signed ints, HDR floats): stretch the observed range onto 0..255.
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        a8 = np.zeros(a.shape) if hi <= lo else np.rint((a - lo) * (255.0 / (hi - lo)))
    return Image.fromarray(np.clip(a8, 0, 255).astype(np.uint8)).convert("RGB")


def _short(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:120]
