"""One record type for a multimodal example, and the account of records that could not be read.

A :class:`Record` holds any subset of the modalities (``image``, ``text``, ``audio``, ``video``) plus an
optional ``label`` and free ``extra`` fields. A modality is ``None`` where it is missing in that row; batches
built from records carry a presence mask per modality (see ``polymodal.data.collate``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MODALITIES: tuple[str, ...] = ("image", "text", "audio", "video")


@dataclass
class Record:
    """A multimodal example. Each modality holds decoded data or a path to it; ``None`` means missing."""

    image: Any = None
    text: str | None = None
    audio: Any = None
    video: Any = None
    label: Any = None
    key: str = ""  # a stable id for the record (hexcode, manifest row, shard key)
    source: str = ""  # the file or manifest row it came from, for error messages
    extra: dict[str, Any] = field(default_factory=dict)

    def present(self) -> dict[str, bool]:
        """Which modalities this record carries."""
        return {m: getattr(self, m) is not None for m in MODALITIES}


@dataclass(frozen=True)
class BadRecord:
    """A record that was skipped: which file, which row, and why.

    ``row`` counts data records from 0 (the key a manifest row gets); ``line`` is the physical line
    (from 1, header and blank lines included) where the record starts in a CSV or JSONL manifest,
    the number a person looks for in an editor.
    """

    source: str
    problem: str
    row: int | None = None
    line: int | None = None

    @property
    def position(self) -> str | None:
        """``"line N"`` where the manifest has lines, else ``"row N"``; ``None`` for a file on its own."""
        if self.line is not None:
            return f"line {self.line}"
        return None if self.row is None else f"row {self.row}"

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "row": self.row, "line": self.line, "problem": self.problem}

    def __str__(self) -> str:
        # A manifest row is already named "manifest:line"; an image file gets the manifest line beside it.
        if self.position is None or (self.line is not None and self.source.endswith(f":{self.line}")):
            return f"{self.source}: {self.problem}"
        return f"{self.source} ({self.position}): {self.problem}"
