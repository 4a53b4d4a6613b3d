"""Label text for zero-shot classification of OpenMoji groups and subgroups.

Zero-shot means the class names are never training targets: training captions come from each emoji's
own annotation and tags (see ``polymodal.data.captions``). The label texts below were written once from
the Unicode/OpenMoji taxonomy (the group and subgroup names and what they cover), before any evaluation,
and are not tuned on the test split. CLIP's authors likewise wrote class-name text by hand per dataset.
The subgroup texts were revised once from the names' word order ("face smiling") to natural phrases
("smiling face"); that change was measured on the validation split only (demo model: group top-1
0.518 -> 0.543, subgroup 0.294 -> 0.314).
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

# Every subgroup as a natural English phrase ("face-smiling" reads as "smiling face"). Written from the
# taxonomy's names, without looking at any emoji of the evaluation splits.
SUBGROUP_TEXT: dict[str, str] = {
    "face-smiling": "smiling face",
    "face-affection": "face showing love or affection",
    "face-tongue": "face sticking out its tongue",
    "face-hand": "face with a hand",
    "face-neutral-skeptical": "neutral or skeptical face",
    "face-sleepy": "sleepy face",
    "face-unwell": "sick or unwell face",
    "face-hat": "face wearing a hat",
    "face-glasses": "face wearing glasses",
    "face-concerned": "worried or sad face",
    "face-negative": "angry face",
    "face-costume": "costume or monster face",
    "cat-face": "cat face",
    "monkey-face": "monkey face",
    "heart": "heart",
    "emotion": "emotion symbol",
    "hand-fingers-open": "hand with open fingers",
    "hand-fingers-partial": "hand with some fingers raised",
    "hand-single-finger": "hand pointing one finger",
    "hand-fingers-closed": "hand with closed fingers",
    "hands": "two hands",
    "hand-prop": "hand holding an object",
    "body-parts": "body part",
    "person": "person",
    "person-gesture": "person making a gesture",
    "person-role": "person in a job or role",
    "person-fantasy": "fantasy character",
    "person-activity": "person doing an activity",
    "person-sport": "person playing a sport",
    "person-resting": "person resting",
    "family": "family or couple",
    "person-symbol": "person silhouette symbol",
    "skin-tone": "skin tone swatch",
    "hair-style": "hair style",
    "animal-mammal": "mammal",
    "animal-bird": "bird",
    "animal-amphibian": "amphibian",
    "animal-reptile": "reptile",
    "animal-marine": "sea animal",
    "animal-bug": "bug or insect",
    "plant-flower": "flower",
    "plant-other": "plant",
    "food-fruit": "fruit",
    "food-vegetable": "vegetable",
    "food-prepared": "prepared food or meal",
    "food-asian": "asian food",
    "food-sweet": "sweet dessert",
    "drink": "drink",
    "dishware": "dishware",
    "place-map": "map",
    "place-geographic": "geographic place or landscape",
    "place-building": "building",
    "place-religious": "religious building",
    "place-other": "place",
    "transport-ground": "ground vehicle",
    "transport-water": "boat or ship",
    "transport-air": "aircraft",
    "hotel": "hotel",
    "time": "clock or time",
    "sky-weather": "sky and weather",
    "event": "celebration event",
    "award-medal": "award or medal",
    "sport": "sport equipment",
    "game": "game",
    "arts-crafts": "arts and crafts",
    "clothing": "clothing",
    "sound": "sound",
    "music": "music",
    "musical-instrument": "musical instrument",
    "phone": "phone",
    "computer": "computer",
    "light-video": "light, film and video",
    "book-paper": "book or paper",
    "money": "money",
    "mail": "mail",
    "writing": "writing tool",
    "office": "office supply",
    "lock": "lock or key",
    "tool": "tool",
    "science": "science equipment",
    "medical": "medical item",
    "household": "household item",
    "other-object": "object",
    "transport-sign": "transport sign",
    "warning": "warning sign",
    "arrow": "arrow",
    "religion": "religious symbol",
    "zodiac": "zodiac sign",
    "av-symbol": "audio and video symbol",
    "gender": "gender symbol",
    "math": "math symbol",
    "punctuation": "punctuation mark",
    "currency": "currency symbol",
    "other-symbol": "symbol",
    "keycap": "number on a keycap",
    "alphanum": "letters and numbers",
    "geometric": "geometric shape",
    "flag": "flag",
    "country-flag": "country flag",
    "subdivision-flag": "regional flag",
    "animals-nature": "animal or nature",
    "brand": "brand logo",
    "climate-environment": "climate and environment",
    "emergency": "emergency",
    "flags": "flag",
    "food-drink": "food or drink",
    "gardening": "gardening",
    "healthcare": "healthcare",
    "interaction": "interaction",
    "objects": "object",
    "people": "people",
    "queer-symbols": "queer pride symbol",
    "smileys-emotion": "smiley face",
    "symbol-other": "symbol",
    "symbols": "symbol",
    "technology": "technology",
    "travel-places": "travel and places",
    "ui-element": "user interface element",
    "regional-indicator": "regional indicator letter",
}


def subgroup_text(name: str) -> str:
    """Readable label text for a subgroup name: ``face-smiling`` -> ``smiling face``; unknown names as words."""
    return SUBGROUP_TEXT.get(name, name.replace("-", " "))


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
