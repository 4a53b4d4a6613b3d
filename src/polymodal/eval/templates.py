"""Prompt templates for zero-shot classification of emoji and icons.

CLIP (Radford et al., 2021, sec. 3.1.4) found that embedding the class name inside a sentence that says
what kind of picture it is ("a photo of a {c}.") beats the bare name, and that averaging several such
prompts ("prompt ensembling") adds a little more. Photos are the wrong frame for emoji and icons, so
these templates name the drawing style instead. ``{c}`` is replaced by the class text (see
:func:`polymodal.eval.zeroshot.fill_template`).

Keep the list short: each template costs one text-tower pass per class, and the gain of ensembling
flattens after a handful of prompts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from polymodal.eval.zeroshot import CLASS_PLACEHOLDER

EMOJI_TEMPLATES: tuple[str, ...] = (
    "{c}",  # the bare label, which is also how emoji names appear in most captions
    "an emoji of {c}.",
    "an icon of {c}.",
    "a picture of {c}.",
    "a cartoon drawing of {c}.",
    "a small flat illustration of {c}.",
    "a symbol for {c}.",
)
"""Generic emoji/icon templates, each with the ``{c}`` placeholder."""

PHOTO_TEMPLATES: tuple[str, ...] = (
    "a photo of a {c}.",  # CLIP's own default prompt (sec. 3.1.4)
    "a photo of the {c}.",
    "a close-up photo of a {c}.",
)
"""Photograph templates, for images the model meets outside emoji and icon sets."""

DEFAULT_TEMPLATES: tuple[str, ...] = EMOJI_TEMPLATES
"""The templates zero-shot uses when none are given."""

ICON_TEMPLATES: tuple[str, ...] = (
    "an icon of {c}.",
    "a simple icon of {c}.",
    "a pictogram of {c}.",
    "a flat vector icon of {c}.",
)
"""Templates for line or flat icon sets, where "emoji" would be the wrong word."""


def class_prompts(
    classnames: Sequence[str],
    templates: Sequence[str] = EMOJI_TEMPLATES,
    *,
    aliases: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, list[str]]:
    """Per-class prompt lists for :func:`~polymodal.eval.zeroshot.build_zeroshot_classifier`.

    Each class gets every template filled with its name and with each of its aliases, so label text can
    be designed (e.g. ``"face with tears of joy"`` also as ``"laughing face"``) without changing labels.

    Args:
        classnames: The class names, in label order.
        templates: Templates with a ``{c}`` placeholder.
        aliases: Extra texts per class name, used in the templates like the name itself.

    Returns:
        ``{classname: [prompt, ...]}`` with every class of ``classnames``, duplicates removed in order.
    """
    out: dict[str, list[str]] = {}
    for name in classnames:
        texts = [name, *((aliases or {}).get(name, ()))]
        prompts = [t.replace(CLASS_PLACEHOLDER, text) for text in texts for t in templates]
        out[name] = list(dict.fromkeys(prompts))
    return out
