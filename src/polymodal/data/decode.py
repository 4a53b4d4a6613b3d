"""Which modality a file holds (from its suffix), and decoding one file of any modality.

Folder sources (``label/file.ext``), manifests and tar shards all end in the same step: bytes or a path,
a modality, and a name for error messages go in; a decoded value (``PIL.Image``, :class:`Audio`, a video,
a ``str``) or a :class:`~polymodal.errors.DataError` naming the file comes out. The decoders themselves
live with their modality (:mod:`polymodal.data.images`, :mod:`polymodal.data.audio`,
:mod:`polymodal.data.video`); this module only routes to them.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Any

from polymodal.errors import ConfigError, DataError

# Suffixes (lower case, with the dot) by modality. The sets are disjoint, so one suffix names one
# modality, and a tar shard member's extension says how to decode it.
SUFFIXES: dict[str, tuple[str, ...]] = {
    "image": (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"),
    "audio": (".wav", ".flac", ".ogg"),
    "video": (".mp4", ".webm", ".mkv", ".avi", ".mov"),
    "text": (".txt",),
}
FILE_MODALITIES: tuple[str, ...] = ("image", "audio", "video")  # modalities a manifest names by path


def modality_of(suffix: str) -> str | None:
    """The modality of a file suffix (``".PNG"`` or ``"png"``), or ``None`` for an unknown suffix."""
    s = suffix.lower()
    s = s if s.startswith(".") else f".{s}"
    for modality, suffixes in SUFFIXES.items():
        if s in suffixes:
            return modality
    return None


def decode_text(data: bytes, *, name: str) -> str:
    """Decode a text file: UTF-8 (a leading byte-order mark is dropped); anything else is a bad record.

    Args:
        data: the file's bytes.
        name: the file, for the error message.

    Raises:
        DataError: the bytes are not UTF-8 (the message gives the offset of the first bad byte).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(name, f"text is not valid UTF-8 (bad byte at offset {e.start})") from None
    return text[1:] if text.startswith(codecs.BOM_UTF8.decode("utf-8")) else text


def decode(modality: str, source: str | Path | bytes, *, name: str | None = None) -> Any:
    """Decode one file of ``modality`` from a path or its bytes.

    Args:
        modality: ``"image"``, ``"audio"``, ``"video"`` or ``"text"``.
        source: a file path or the file's bytes.
        name: what to call the file in errors (e.g. ``"shard-000001.tar:00000012.png"``); for a path,
            defaults to the path.

    Returns:
        An RGB ``PIL.Image.Image`` (:func:`~polymodal.data.images.load_image`), a mono
        :class:`~polymodal.data.audio.Audio` at the file's rate (:func:`~polymodal.data.audio.load_audio`),
        whatever :func:`polymodal.data.video.load_video` returns, or a ``str``.

    Raises:
        DataError: the file is missing or cannot be decoded; ``error.path`` names it.
        ConfigError: an unknown modality.
    """
    label = name if name is not None else str(source) if not isinstance(source, bytes) else "<bytes>"
    if modality == "image":
        from polymodal.data.images import load_image

        return load_image(source, name=label) if isinstance(source, bytes) else load_image(source)
    if modality == "audio":
        from polymodal.data.audio import load_audio

        return load_audio(source, name=label)
    if modality == "video":
        try:
            from polymodal.data.video import load_video
        except ImportError as e:  # the module or PyAV is missing: the record cannot be used here
            raise DataError(label, f"cannot decode video: {e}") from None
        return load_video(source, name=label)
    if modality == "text":
        return decode_text(source if isinstance(source, bytes) else read_bytes(source), name=label)
    raise ConfigError(f"unknown modality {modality!r}; expected image, audio, video or text")


def read_bytes(path: str | Path) -> bytes:
    """A file's bytes, with a :class:`DataError` naming it when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "is a directory, not a file") from None
    except OSError as e:
        raise DataError(path, f"cannot read file ({e.strerror or e})") from None
    except ValueError:  # a NUL byte in the path
        raise DataError(repr(str(path)), "not a valid file path (NUL byte)") from None
