"""What every recipe shares: the progress-line type and the check that a model folder is the kind a
command needs, made before the model (or any data) is loaded."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

Log = Callable[[str], None]
"""Receives one progress line (the command line prints it on stderr); ``None`` where progress is off."""

def say(log: Log | None, line: str) -> None:
    """Pass ``line`` to ``log`` when progress is on."""
    if log is not None:
        log(line)


def history_line(log: Log | None, total: int) -> Callable[[dict[str, float]], None] | None:
    """A trainer's ``on_history`` hook printing one progress line per history entry through ``log``:
    ``epoch 3/60: loss 2.314, val_acc 0.41 (41 s)`` (``step 150/500`` for step-counted trainers)."""
    if log is None:
        return None
    out = log

    def line(entry: dict[str, float]) -> None:
        where = " ".join(f"{k} {int(v)}/{total}" for k, v in entry.items() if k in ("epoch", "step"))
        rest = ", ".join(f"{k} {v:.4g}" for k, v in entry.items() if k not in ("epoch", "step", "seconds"))
        out(f"{where}: {rest}" + (f" ({entry['seconds']:.0f} s)" if "seconds" in entry else ""))

    return line


def require_model(path: str | Path, *, command: str, kinds: Collection[str] | None = None) -> dict[str, Any]:
    """The folder's ``config.json``, or one line saying why ``command`` cannot use the model in it.

    The kind is read from ``config.json`` alone, before any weight or data is loaded, and judged by the
    one kind table (:func:`polymodal.models.build.require_kind`).

    Args:
        path: a saved model folder.
        command: the command, for the message.
        kinds: the kinds it accepts; default the image-text models (aligner, CLIP, Hugging Face CLIP).

    Raises:
        ConfigError: "runs/fuse is a classifier; zeroshot needs an image-text model".
        CheckpointError: no such folder, no or unreadable config.json, or an unknown kind.
    """
    from polymodal.models.build import IMAGE_TEXT_KINDS, folder_kind, require_kind

    require_kind(path, IMAGE_TEXT_KINDS if kinds is None else kinds, what=command)
    return folder_kind(path)[1]
