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
    """A record that was skipped: which file, which row, and why."""

    source: str
    problem: str
    row: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "row": self.row, "problem": self.problem}

    def __str__(self) -> str:
        where = self.source if self.row is None else f"{self.source} (row {self.row})"
        return f"{where}: {self.problem}"
