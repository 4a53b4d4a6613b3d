"""From a config's explicit ``kind`` to the model class: one visible mapping, no import-time registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from polymodal.errors import ConfigError


def _aligner() -> tuple[Callable[[dict[str, Any]], Any], Callable[[Any], nn.Module]]:
    from polymodal.models.aligner import Aligner, AlignerConfig

    return AlignerConfig.from_dict, Aligner


def _clip() -> tuple[Callable[[dict[str, Any]], Any], Callable[[Any], nn.Module]]:
    from polymodal.models.clip import CLIP, CLIPConfig

    return CLIPConfig.from_dict, CLIP


def _classifier() -> tuple[Callable[[dict[str, Any]], Any], Callable[[Any], nn.Module]]:
    from polymodal.models.classifier import ClassifierConfig, MultimodalClassifier

    return ClassifierConfig.from_dict, MultimodalClassifier


# kind -> (config from dict, model from config). New model families add a line here.
KINDS: dict[str, Callable[[], tuple[Callable[[dict[str, Any]], Any], Callable[[Any], nn.Module]]]] = {
    "aligner": _aligner,
    "classifier": _classifier,
    "clip": _clip,
}


def config_from_dict(d: dict[str, Any]) -> Any:
    kind = d.get("kind", "aligner")
    if kind not in KINDS:
        raise ConfigError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    return KINDS[kind]()[0](d)


def build_model(config: Any) -> Any:
    kind = getattr(config, "kind", None)
    if kind not in KINDS:
        raise ConfigError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    return KINDS[kind]()[1](config)


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
    d.pop("description", None)
    return config_from_dict(d)
