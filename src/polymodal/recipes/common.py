"""What every recipe shares: the progress-line type and the check that a model folder is the kind a
command needs, made before the model (or any data) is loaded."""

from __future__ import annotations

from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from polymodal.errors import CheckpointError

Log = Callable[[str], None]
"""Receives one progress line (the command line prints it on stderr); ``None`` where progress is off."""

# The kinds of model folder polymodal saves (config.json "kind"), as messages name them.
MODEL_KINDS: dict[str, str] = {
    "aligner": "an image-text model (aligner)",
    "clip": "an image-text model (CLIP)",
    "classifier": "a classifier",
    "captioner": "a captioner",
    "text2image": "a text-to-image generator",
    "flava": "a FLAVA model",
    "flava-vqa": "a FLAVA VQA model",
}
IMAGE_TEXT_KINDS: tuple[str, ...] = ("aligner", "clip")  # and Hugging Face CLIP folders, which have no kind


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


def require_model(
    path: str | Path, *, command: str, needs: str = "an image-text model", kinds: Collection[str] = IMAGE_TEXT_KINDS
) -> dict[str, Any]:
    """The folder's ``config.json``, or one line saying why ``command`` cannot use the model in it.

    A ``config.json`` without ``kind`` (a Hugging Face CLIP folder) passes where image-text models do; the
    loader then reads it.

    Raises:
        CheckpointError: "runs/fuse is a classifier; zeroshot needs an image-text model" (also: no such
            folder, no or unreadable config.json).
    """
    from polymodal.core.checkpoint import read_folder_config

    cfg = read_folder_config(Path(path))
    kind = cfg.get("kind")
    if kind is None and set(IMAGE_TEXT_KINDS) & set(kinds) or kind in kinds:
        return cfg
    what = MODEL_KINDS.get(kind, f"a model of unknown kind {kind!r}") if kind is not None else "not a polymodal model"
    raise CheckpointError(f"{path} is {what}; {command} needs {needs}")
