"""Saving and loading FLAVA-style models: a folder with ``config.json`` and ``model.safetensors``.

As the captioner's folders (:mod:`polymodal.caption.model`): ``config.json`` holds ``kind`` (``"flava"`` for
the pretraining model, ``"flava-vqa"`` with a VQA head), the :class:`~polymodal.flava.config.FlavaConfig`,
the tokenizer's words (so the folder is self-contained) and, for VQA, the answer list; the weights are
written with safetensors, atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polymodal.core.checkpoint import atomic_write_json, load_weights, read_folder_config, save_weights
from polymodal.errors import CheckpointError, ConfigError
from polymodal.flava.config import FlavaConfig
from polymodal.flava.model import FlavaModel
from polymodal.flava.vqa import FlavaForVqa
from polymodal.text import WordTokenizer

KIND = "flava"
VQA_KIND = "flava-vqa"


@dataclass
class FlavaCheckpoint:
    """What :func:`load_flava` returns.

    Attributes:
        model: the model, in eval mode (a :class:`FlavaForVqa` for a ``flava-vqa`` folder).
        tokenizer: its vocabulary.
        answers: the VQA answer texts in label order (empty for a pretraining model).
        extra: the other keys of ``config.json`` (metrics, recipes) as saved.
    """

    model: FlavaModel | FlavaForVqa
    tokenizer: WordTokenizer
    answers: list[str]
    extra: dict[str, Any]


def save_flava(
    model: FlavaModel | FlavaForVqa,
    path: str | Path,
    *,
    tokenizer: WordTokenizer,
    answers: Sequence[str] = (),
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``path/config.json`` and ``path/model.safetensors``.

    Args:
        model: a pretraining model or a VQA model.
        path: folder (created).
        tokenizer: the model's vocabulary.
        answers: answer texts for a VQA model (``len == num_answers``).
        extra: more JSON keys (metrics, training recipe).
    """
    if model.config.vocab_size != tokenizer.vocab_size:
        raise ConfigError(
            f"save_flava: model vocab_size {model.config.vocab_size} != tokenizer's {tokenizer.vocab_size}"
        )
    is_vqa = isinstance(model, FlavaForVqa)
    if is_vqa and len(answers) != model.num_answers:  # type: ignore[union-attr]
        raise ConfigError(f"save_flava: {len(answers)} answers given for a head of {model.num_answers}")  # type: ignore[union-attr]
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_weights(path / "model.safetensors", state, metadata={"format": "polymodal"})
    config: dict[str, Any] = {
        "kind": VQA_KIND if is_vqa else KIND,
        "model": model.config.to_dict(),
        "tokenizer": tokenizer.to_dict(),
        **({"answers": list(answers)} if is_vqa else {}),
        **(extra or {}),
    }
    atomic_write_json(path / "config.json", config)
    return path


def load_flava(path: str | Path) -> FlavaCheckpoint:
    """Read a folder written by :func:`save_flava`.

    Args:
        path: the folder.

    Raises:
        CheckpointError: not such a folder, or weights that do not fit the config.
    """
    path = Path(path)
    cfg_path = path / "config.json"
    cfg = read_folder_config(path, what="FLAVA model", kinds=[KIND, VQA_KIND])
    kind = cfg["kind"]
    try:
        config = FlavaConfig.from_dict(cfg["model"])
        tokenizer = WordTokenizer.from_dict(cfg["tokenizer"])
        answers = [str(a) for a in cfg.get("answers", [])]
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"{cfg_path}: {e}") from None
    flava = FlavaModel(config)
    model: FlavaModel | FlavaForVqa = (
        FlavaForVqa(flava, num_answers=len(answers)) if kind == VQA_KIND else flava
    )
    weights_path = path / "model.safetensors"
    if not weights_path.is_file():
        raise CheckpointError(f"{path}: missing model.safetensors")
    try:
        model.load_state_dict(load_weights(weights_path), strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{weights_path}: weights do not fit the config ({str(e).splitlines()[0]})"
        ) from None
    model.eval()
    extra = {k: v for k, v in cfg.items() if k not in ("kind", "model", "tokenizer", "answers")}
    return FlavaCheckpoint(model=model, tokenizer=tokenizer, answers=answers, extra=extra)
