"""The FLAVA kinds' folder format, read and written through ``polymodal.load`` / ``polymodal.save``.

``config.json`` holds ``kind`` (``"flava"`` for the pretraining model, ``"flava-vqa"`` with a VQA head), the
:class:`~polymodal.flava.config.FlavaConfig` under ``model``, the tokenizer's words under ``tokenizer`` (so
the folder is self-contained) and, for VQA, the answer texts under ``answers``; the weights are
``model.safetensors``, written atomically. :func:`write_folder` and :func:`read_folder` are the two rows'
writer and reader in :data:`polymodal.models.build.KINDS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polymodal.core.checkpoint import load_weights, save_weights
from polymodal.errors import CheckpointError, ConfigError
from polymodal.flava.config import FlavaConfig
from polymodal.flava.model import FlavaModel
from polymodal.flava.vqa_model import FlavaForVqa
from polymodal.text import WordTokenizer

__all__ = ["KIND", "VQA_KIND", "read_folder", "write_folder"]

KIND = "flava"
VQA_KIND = "flava-vqa"


def write_folder(model: FlavaModel | FlavaForVqa, path: Path) -> dict[str, Any]:
    """Write ``path/model.safetensors``; return the ``config.json`` entries of the model.

    Args:
        model: a pretraining model or a VQA model; it must carry its tokenizer (and, for VQA, its answers).
        path: an existing folder.

    Raises:
        ConfigError: no tokenizer, or no answer texts for a VQA model.
    """
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise ConfigError(f"cannot save this {type(model).__name__}: it has no tokenizer (set_tokenizer first)")
    answers = model.answers if isinstance(model, FlavaForVqa) else None
    if isinstance(model, FlavaForVqa) and len(model.answers) != model.num_answers:
        raise ConfigError(f"cannot save this FlavaForVqa: {len(model.answers)} answer texts for a head of "
                          f"{model.num_answers} (pass answers=...)")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_weights(path / "model.safetensors", state, metadata={"format": "polymodal"})
    entries: dict[str, Any] = {"model": model.config.to_dict(), "tokenizer": tokenizer.to_dict()}
    if answers is not None:
        entries["answers"] = list(answers)
    return entries


def read_folder(path: Path, cfg: dict[str, Any]) -> FlavaModel | FlavaForVqa:
    """The model of a folder :func:`write_folder` wrote, given its parsed ``config.json``.

    Args:
        path: the folder.
        cfg: its ``config.json``; ``kind`` is ``"flava"`` or ``"flava-vqa"``.

    Raises:
        CheckpointError: a config that does not parse, or weights that do not fit it.
    """
    cfg_path = path / "config.json"
    try:
        config = FlavaConfig.from_dict(cfg["model"])
        tokenizer = WordTokenizer.from_dict(cfg["tokenizer"])
        flava = FlavaModel(config, tokenizer=tokenizer)
        model: FlavaModel | FlavaForVqa = (
            FlavaForVqa(flava, answers=[str(a) for a in cfg.get("answers", [])]) if cfg["kind"] == VQA_KIND else flava
        )
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"{cfg_path}: {e}") from None
    weights_path = path / "model.safetensors"
    try:
        model.load_state_dict(load_weights(weights_path), strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{weights_path}: weights do not fit the config ({str(e).splitlines()[0]})") from None
    return model
