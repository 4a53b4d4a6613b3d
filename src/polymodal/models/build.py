"""The kind table: every model kind polymodal saves, in one visible mapping (no import-time registry).

A saved model is a folder whose ``config.json`` names its ``kind``; :data:`KINDS` maps that name to the
config class, the model class and the pair of functions that write and read the kind's folder. The
classes live in their own modules and are imported only when a row is used, so reading this table (or a
folder's kind, :func:`folder_kind`) costs no torch import. ``polymodal.load`` / ``polymodal.save`` /
``polymodal.create`` (:mod:`polymodal.models.io`) go through it, and so does the one check that a model
suits a command, :func:`require_kind`.

Adding a kind: write its config and model classes (the model with a class attribute ``kind``), a
``write_folder(model, path) -> config.json entries`` and a ``read_folder(path, cfg) -> model``, and add a row.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polymodal.errors import CheckpointError, ConfigError


def _resolve(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class ModelKind:
    """One row of the kind table.

    Args:
        name: the ``kind`` of ``config.json`` and the model classes' ``kind`` attribute.
        noun: the kind in a sentence, with its article ("a classifier").
        family: what a command that takes this kind needs, in words ("image-text model"); kinds of one
            family can stand in for each other (:func:`require_kind`'s message names the family).
        config: ``"module:Class"`` of the config.
        model: ``"module:Class"`` of the model.
        write: ``"module:function"``: ``(model, folder) -> dict`` writes the weights (and other files) and
            returns the kind's ``config.json`` entries (``model``: the config, and e.g. ``tokenizer``); for a
            foreign kind it writes the whole folder.
        read: ``"module:function"``: ``(folder, config.json dict) -> model``, weights loaded.
        build: ``"module:function"`` ``(config, **parts) -> model`` where the model class is not built as
            ``Model(config, **parts)``.
        keys: ``config.json`` entries besides ``kind``, ``format_version`` and ``model`` that the writer
            owns; the others are the caller's ``extra`` (data, training record, metrics).
        foreign: the folder is another library's format (no polymodal ``kind``), recognised by
            :func:`folder_kind`.
    """

    name: str
    noun: str
    family: str
    config: str
    model: str
    write: str
    read: str
    build: str = ""
    keys: tuple[str, ...] = ()
    foreign: bool = False

    def config_class(self) -> type[Any]:
        return _resolve(self.config)  # type: ignore[no-any-return]

    def model_class(self) -> type[Any]:
        return _resolve(self.model)  # type: ignore[no-any-return]

    def writer(self) -> Callable[[Any, Path], Any]:
        return _resolve(self.write)  # type: ignore[no-any-return]

    def reader(self) -> Callable[[Path, dict[str, Any]], Any]:
        return _resolve(self.read)  # type: ignore[no-any-return]

    def builder(self) -> Callable[..., Any]:
        return _resolve(self.build) if self.build else self.model_class()  # type: ignore[no-any-return]


_IO = "polymodal.models.io"
_IMAGE_TEXT = "image-text model"

KINDS: dict[str, ModelKind] = {
    k.name: k
    for k in (
        ModelKind("aligner", "an aligner", _IMAGE_TEXT, "polymodal.models.aligner:AlignerConfig",
                  "polymodal.models.aligner:Aligner", f"{_IO}:write_aligner", f"{_IO}:read_trainable",
                  keys=("towers", "weights")),
        ModelKind("clip", "a CLIP model", _IMAGE_TEXT, "polymodal.models.clip:CLIPConfig",
                  "polymodal.models.clip:CLIP", f"{_IO}:write_trainable", f"{_IO}:read_trainable"),
        ModelKind("hf-clip", "a Hugging Face CLIP model", _IMAGE_TEXT, "polymodal.models.clip:CLIPConfig",
                  "polymodal.models.clip:CLIP", "polymodal.models.hf_clip:save_hf", f"{_IO}:read_hf_clip",
                  foreign=True),
        # fusion classifiers and the VQA classifiers (question + image) alike
        ModelKind("classifier", "a classifier", "classifier", "polymodal.models.classifier:ClassifierConfig",
                  "polymodal.models.classifier:MultimodalClassifier", f"{_IO}:write_trainable",
                  f"{_IO}:read_trainable"),
        ModelKind("captioner", "a captioner", "captioner", "polymodal.caption.model:CaptionConfig",
                  "polymodal.caption.model:Captioner", "polymodal.caption.model:write_folder",
                  "polymodal.caption.model:read_folder", keys=("tokenizer",)),
        ModelKind("text2image", "a text-to-image generator", "text-to-image generator",
                  "polymodal.generate.model:GeneratorConfig", "polymodal.generate.model:FlowUNet",
                  "polymodal.generate.model:write_folder", "polymodal.generate.model:read_folder"),
        ModelKind("flava", "a FLAVA model", "FLAVA model", "polymodal.flava.config:FlavaConfig",
                  "polymodal.flava.model:FlavaModel", "polymodal.flava.io:write_folder",
                  "polymodal.flava.io:read_folder", keys=("tokenizer",)),
        ModelKind("flava-vqa", "a FLAVA VQA model", "FLAVA VQA model", "polymodal.flava.config:FlavaConfig",
                  "polymodal.flava.vqa_model:FlavaForVqa", "polymodal.flava.io:write_folder",
                  "polymodal.flava.io:read_folder", build="polymodal.flava.vqa_model:build_vqa",
                  keys=("tokenizer", "answers")),
    )
}

#: kinds that take and give the same image-text calls (encode_image, encode_text, zeroshot, ...)
IMAGE_TEXT_KINDS = frozenset(k for k, row in KINDS.items() if row.family == _IMAGE_TEXT)


def _known() -> str:
    return ", ".join(KINDS)


def get_kind(name: Any) -> ModelKind:
    """The row of kind ``name``.

    Raises:
        ConfigError: no such kind (the message lists the known ones).
    """
    if name not in KINDS:
        raise ConfigError(f"unknown model kind {name!r}; known: {_known()}")
    return KINDS[name]


# ------------------------------------------------------------------------------------------ configs
def kind_of_config(config: Any) -> str:
    """The kind a config object builds: its ``kind`` field, else the one row of its class.

    A config class shared by two kinds (a FLAVA config builds "flava" and "flava-vqa") gives the first;
    pass the kind explicitly for the other.
    """
    kind = getattr(config, "kind", None)
    if isinstance(kind, str):
        return get_kind(kind).name
    for row in KINDS.values():
        if not row.foreign and type(config) is row.config_class():
            return row.name
    raise ConfigError(f"{type(config).__name__} is not the config of any model kind; known: {_known()}")


def config_from_dict(d: dict[str, Any], *, kind: str | None = None) -> Any:
    """The config object of a preset or of a saved ``config.json``'s ``model`` entry.

    Args:
        d: the fields (a ``kind`` field selects the row unless ``kind`` is given).
        kind: the kind; default ``d["kind"]``, else "aligner" (the presets before kinds were explicit).
    """
    kind = kind or d.get("kind", "aligner")
    cls = get_kind(kind).config_class()
    from_dict = getattr(cls, "from_dict", None)
    if from_dict is not None:
        return from_dict(d)
    fields = {f.name for f in dataclasses.fields(cls)}
    d = {k: v for k, v in d.items() if k != "kind" or "kind" in fields}
    unknown = sorted(set(d) - fields)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {unknown}")
    try:
        return cls(**d)
    except TypeError as e:  # a required field missing
        raise ConfigError(f"{cls.__name__}: {e}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """The JSON form of a config (its ``to_dict`` where it has one)."""
    to_dict = getattr(config, "to_dict", None)
    return to_dict() if to_dict is not None else dataclasses.asdict(config)


def build_model(config: Any, *, kind: str | None = None, **parts: Any) -> Any:
    """A freshly initialised model of ``config``.

    Args:
        config: a config object of some kind.
        kind: the kind, where the config's class serves two ("flava-vqa").
        **parts: what the model needs besides its config: ``tokenizer=`` (captioner, FLAVA, CLIP with
            CLIP's BPE), ``answers=`` (FLAVA VQA).
    """
    row = get_kind(kind or kind_of_config(config))
    if row.foreign:
        raise ConfigError(f"{row.name} models are loaded from their folders, not built; build a 'clip'")
    return row.builder()(config, **parts)


# ------------------------------------------------------------------------------------------ folders
def folder_kind(path: str | Path) -> tuple[str, dict[str, Any]]:
    """The kind of a saved model folder and its parsed ``config.json``, without loading any weights.

    Raises:
        CheckpointError: no folder, no or unreadable ``config.json``, or a kind not in :data:`KINDS`
            (the message names the file and the kind).
    """
    from polymodal.core.checkpoint import read_folder_config  # (torch-free callers, such as --help, skip it)

    path = Path(path)
    cfg = read_folder_config(path)
    if "kind" not in cfg and cfg.get("model_type") == "clip":  # a Hugging Face CLIP folder, read offline
        return "hf-clip", cfg
    kind = cfg.get("kind")
    if kind not in KINDS or KINDS[kind].foreign:
        raise CheckpointError(f"{path / 'config.json'}: unknown model kind {kind!r}; known: {_known()}")
    if not isinstance(cfg.get("model"), dict):
        raise CheckpointError(f"{path / 'config.json'}: no 'model' entry (the {kind} config)")
    return kind, cfg


def _with_article(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def require_kind(model_or_path: Any, kinds: Collection[str], *, what: str) -> str:
    """Check that a model, or a saved model folder, is of one of ``kinds``; return its kind.

    A folder is judged by its ``config.json`` alone (no weights are read), so a command can refuse a
    wrong model before loading anything.

    Args:
        model_or_path: a model (with a ``kind`` attribute), or a folder path.
        kinds: the kinds the caller accepts.
        what: the caller, for the message ("zeroshot", "polymodal caption run").

    Raises:
        ConfigError: another kind: "runs/fuse is a classifier; zeroshot needs an image-text model".
        CheckpointError: the path is not a model folder.
    """
    for k in kinds:
        get_kind(k)
    if isinstance(model_or_path, (str, Path)):
        name, kind = str(model_or_path), folder_kind(model_or_path)[0]
    else:
        source = getattr(model_or_path, "source", None)
        name = str(source) if source is not None else f"this {type(model_or_path).__name__}"
        found = getattr(model_or_path, "kind", None)
        if not isinstance(found, str) or found not in KINDS:
            raise ConfigError(f"{name} is not a polymodal model; {what} needs {_needs(kinds)}")
        kind = found
    # a Hugging Face CLIP loads as a CLIP: the two kinds stand for each other
    if kind in kinds or (kind == "clip" and "hf-clip" in kinds) or (kind == "hf-clip" and "clip" in kinds):
        return kind
    raise ConfigError(f"{name} is {KINDS[kind].noun}; {what} needs {_needs(kinds)}")


def _needs(kinds: Collection[str]) -> str:
    families = list(dict.fromkeys(KINDS[k].family for k in KINDS if k in kinds))  # table order
    return " or ".join(_with_article(f) for f in families)


# ------------------------------------------------------------------------------------------ presets
PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name_or_path: str) -> Any:
    """A model config from a preset name (``src/polymodal/presets/NAME.json``) or a JSON file path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.json"
    if not path.is_file():
        raise ConfigError(f"no preset {name_or_path!r}; available: {', '.join(preset_names())}")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(d).__name__}")
    d.pop("description", None)
    try:
        return config_from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


__all__ = [
    "IMAGE_TEXT_KINDS",
    "KINDS",
    "PRESET_DIR",
    "ModelKind",
    "build_model",
    "config_from_dict",
    "config_to_dict",
    "folder_kind",
    "get_kind",
    "kind_of_config",
    "load_preset",
    "preset_names",
    "require_kind",
]
