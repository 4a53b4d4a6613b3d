"""Errors that polymodal raises on purpose.

Every error a user can cause (a bad file, a wrong column, a checkpoint from elsewhere) is one of these,
with a message that names the file and the problem. The CLI prints such errors as one line and exits
with status 2; anything else is a bug.
"""

from __future__ import annotations

from pathlib import Path


class PolymodalError(Exception):
    """Base class of the errors polymodal raises for bad input or configuration."""


class ConfigError(PolymodalError, ValueError):
    """A configuration, preset or argument that cannot work."""


class DataError(PolymodalError):
    """A record or file that cannot be read. ``path`` names the file, ``problem`` says what is wrong."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")


class CheckpointError(PolymodalError):
    """A checkpoint directory that is incomplete, from another model, or has unknown keys."""


class ShapeError(PolymodalError, ValueError):
    """Tensors whose shapes or dtypes do not fit together; the message names the argument."""
