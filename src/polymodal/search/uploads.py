"""Checks on an uploaded image before any pixel is decoded: size, type (by content), pixel count.

The declared content type and file name of an upload are the client's claims; the type is taken from the
first bytes instead (the "magic numbers" of each format). The pixel count is read from the header, so a
small file that expands into a gigantic canvas (a decompression bomb) is refused before decoding.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image

from polymodal.data.images import load_image
from polymodal.errors import ConfigError, DataError

# (prefix, offset, format): enough of each header to tell the formats the server accepts.
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"BM", 0, "bmp"),
)


@dataclass
class UploadLimits:
    """What an uploaded image may be.

    Args:
        max_bytes: largest accepted file, in bytes.
        max_pixels: largest accepted width * height, read from the header.
        formats: accepted formats, detected from the content.
        max_decodes: uploads decoded (and embedded) at once by a server; with ``max_pixels`` it bounds the
            memory decoded images take, about ``max_decodes * max_pixels * 4`` bytes.
    """

    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    formats: tuple[str, ...] = ("png", "jpeg", "gif", "webp", "bmp")
    max_decodes: int = 2

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.max_pixels < 1 or self.max_decodes < 1:
            raise ConfigError(f"UploadLimits: sizes must be positive, got {self.max_bytes}, {self.max_pixels}, "
                              f"{self.max_decodes}")


class UploadError(Exception):
    """An upload refused with an HTTP status: 413 too large, 415 not an accepted image type, 400 corrupt."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def sniff_format(data: bytes) -> str | None:
    """The image format from the first bytes, or None if it is none of the accepted ones."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, offset, fmt in _MAGIC:
        if data[offset : offset + len(magic)] == magic:
            return fmt
    return None


def check_upload(data: bytes, limits: UploadLimits, *, name: str = "upload",
                 min_size: tuple[int, int] | None = None) -> Image.Image:
    """Validate and decode an uploaded image.

    Args:
        data: the uploaded bytes.
        limits: size, pixel and type limits.
        name: what to call the file in messages.
        min_size: the model's :func:`~polymodal.embed.decode_size`: a JPEG is decoded reduced to it, as
            ``index build`` decodes files (the pixel limit still applies to the size in the header).

    Returns:
        The decoded, upright RGB image.

    Raises:
        UploadError: 413 (too many bytes or pixels), 415 (not an accepted image type), 400 (empty or corrupt).
    """
    if not data:
        raise UploadError(400, f"{name}: empty upload")
    if len(data) > limits.max_bytes:
        raise UploadError(413, f"{name}: {len(data)} bytes, over the limit of {limits.max_bytes} bytes")
    fmt = sniff_format(data)
    if fmt is None or fmt not in limits.formats:
        raise UploadError(415, f"{name}: not an accepted image type (accepted: {', '.join(limits.formats)})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
    except Image.DecompressionBombError:
        raise UploadError(413, f"{name}: image has more pixels than the limit of {limits.max_pixels}") from None
    except Exception:
        raise UploadError(400, f"{name}: corrupt {fmt} header") from None
    if w * h > limits.max_pixels:
        raise UploadError(413, f"{name}: image is {w}x{h} = {w * h} pixels, over the limit of {limits.max_pixels}")
    try:
        return load_image(data, max_pixels=limits.max_pixels, name=name, min_size=min_size)
    except DataError as e:
        raise UploadError(400, e.problem if e.path is None else str(e)) from None
