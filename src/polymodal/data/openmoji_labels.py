"""Label text for zero-shot classification of OpenMoji groups and subgroups.

Zero-shot means the class names are never training targets: training captions come from each emoji's
own annotation and tags (see ``polymodal.data.captions``). The label texts below were written once from
the Unicode/OpenMoji taxonomy (the group and subgroup names and what they cover), before any evaluation,
and are not tuned on the test split. CLIP's authors likewise wrote class-name text by hand per dataset.
"""

from __future__ import annotations

GROUP_TEXT: dict[str, str] = {
    "smileys-emotion": "a smiley face showing an emotion",
    "people-body": "a person, people, a hand gesture or a body part",
    "component": "a hair style or a skin tone swatch",
    "animals-nature": "an animal, a plant or a flower",
    "food-drink": "food or a drink",
    "travel-places": "a place, a building, a vehicle, the weather or a clock",
    "activities": "a sport, a game, a celebration or an award",
    "objects": "an everyday object such as clothing, a tool, a book, a phone or an instrument",
    "symbols": "a symbol or sign, an arrow, a letter or a number",
    "flags": "a flag",
    "extras-openmoji": "a brand logo, an app interface icon or another extra OpenMoji icon",
    "extras-unicode": "a regional indicator letter or another extra unicode symbol",
}

# Subgroup names whose words alone read poorly as a phrase; the rest become "word word".
_SUBGROUP_OVERRIDES: dict[str, str] = {
    "alphanum": "letters and numbers",
    "av-symbol": "audio and video symbol",
    "hand-prop": "hand holding an object",
    "hand-fingers-open": "hand with open fingers",
    "hand-fingers-closed": "hand with closed fingers",
    "hand-fingers-partial": "hand with some fingers raised",
    "hand-single-finger": "hand pointing one finger",
    "light-video": "light, film and video",
    "other-object": "object",
    "other-symbol": "symbol",
    "symbol-other": "symbol",
    "place-other": "place",
    "plant-other": "plant",
    "ui-element": "user interface element",
    "queer-symbols": "queer pride symbol",
    "regional-indicator": "regional indicator letter",
    "keycap": "number on a keycap",
    "face-neutral-skeptical": "neutral or skeptical face",
    "face-hand": "face with hand",
    "face-hat": "face with hat",
    "face-glasses": "face with glasses",
    "face-tongue": "face with tongue",
    "transport-sign": "transport sign",
    "person-symbol": "person silhouette symbol",
    "skin-tone": "skin tone swatch",
}


def subgroup_text(name: str) -> str:
    """Readable label text for a subgroup name: ``face-smiling`` -> ``face smiling``."""
    return _SUBGROUP_OVERRIDES.get(name, name.replace("-", " "))


def group_text(name: str) -> str:
    return GROUP_TEXT.get(name, name.replace("-", " "))


def subclass_texts(kind: str, name: str) -> list[str]:
    """Subclass label texts of a class, for hierarchical zero-shot (CHiLS).

    An OpenMoji group's subclasses are its subgroups, from the Unicode emoji taxonomy (the class
    hierarchy, not any image's label); other classes have none.

    Args:
        kind: The label kind, ``"group"`` or ``"subgroup"``.
        name: The class name.
    """
    from polymodal.data.openmoji import OPENMOJI_GROUPS, openmoji_subgroups

    if kind != "group" or name not in OPENMOJI_GROUPS:
        return []
    return [subgroup_text(s) for s in openmoji_subgroups(name)]
