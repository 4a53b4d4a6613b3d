"""Label text to classifier weights: the prompt templates and the zero-shot classifier they build.

A class is represented by the text tower's embedding of prompts that name it. With several prompts
(templates) per class, CLIP (Radford et al., 2021, sec. 3.1.4) averages their L2-normalised embeddings
and re-normalises the mean ("prompt ensembling"), as CLIP_benchmark (LAION) does.

CLIP also found that embedding the class name inside a sentence that says what kind of picture it is
("a photo of a {c}.") beats the bare name. Photos are the wrong frame for emoji and icons, so the emoji
templates name the drawing style instead. ``{c}`` is replaced by the class text (:func:`fill_template`).
Keep template lists short: each template costs one text-tower pass per class, and the gain of
ensembling flattens after a handful of prompts.

This module sits in the models layer, because every image-text model's ``zeroshot`` uses it; the
metrics of zero-shot evaluation are in :mod:`polymodal.eval.zeroshot`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from polymodal.errors import ConfigError, ShapeError

CLASS_PLACEHOLDER = "{c}"  # where a template takes the class text, as in CLIP_benchmark's templates


def fill_template(template: str, classname: str) -> str:
    """Put ``classname`` where ``template`` says ``{c}``.

    Plain replacement rather than ``str.format``, so that other braces in a template stay as written.

    Args:
        template: A prompt such as ``"an emoji of {c}."``.
        classname: The class text to insert.
    """
    return template.replace(CLASS_PLACEHOLDER, classname)


def _class_prompts(
    classnames: Sequence[str], templates: Sequence[str] | Mapping[str, Sequence[str]]
) -> list[list[str]]:
    """The list of prompt texts of each class, in ``classnames`` order."""
    if isinstance(templates, dict):
        missing = [c for c in classnames if c not in templates]
        if missing:
            raise ConfigError(f"templates: no prompts for class(es) {missing[:5]}")
        prompts = [[fill_template(t, c) for t in templates[c]] for c in classnames]
        empty = [c for c, p in zip(classnames, prompts, strict=True) if not p]
        if empty:
            raise ConfigError(f"templates: empty prompt list for class(es) {empty[:5]}")
        return prompts
    if isinstance(templates, str) or not templates:
        raise ConfigError("templates: expected a non-empty list of strings or a dict classname -> prompts")
    # Shared templates must each name the class, or every class would get the same embedding.
    unnamed = [t for t in templates if CLASS_PLACEHOLDER not in t]
    if unnamed:
        raise ConfigError(f"templates: {unnamed[0]!r} has no '{CLASS_PLACEHOLDER}' placeholder for the class")
    return [[fill_template(t, c) for t in templates] for c in classnames]


@torch.no_grad()
def build_zeroshot_classifier(
    encode_text: Callable[[list[str]], torch.Tensor],
    classnames: list[str],
    templates: list[str] | dict[str, list[str]],
) -> torch.Tensor:
    """Build the zero-shot classifier: one unit-norm prompt-ensemble embedding per class.

    For class ``c`` with prompts ``p_1..p_m``: ``w_c = normalize(mean_j normalize(f(p_j)))`` where ``f`` is
    the text tower (CLIP, sec. 3.1.4).

    Args:
        encode_text: Maps a list of texts to their embeddings, shape (len(texts), D).
        classnames: The class texts, in label order (label ``i`` is ``classnames[i]``).
        templates: Either prompts shared by all classes, each with a ``{c}`` placeholder, or a dict from
            class name to its own list of prompts (``{c}`` optional), so label text can be designed.

    Returns:
        The classifier matrix, shape (D, C), columns L2-normalised.
    """
    if not classnames:
        raise ConfigError("classnames: expected at least one class")
    if len(set(classnames)) != len(classnames):
        raise ConfigError("classnames: contains duplicates")
    return _ensemble_columns(encode_text, _class_prompts(classnames, templates))


def _ensemble_columns(encode_text: Callable[[list[str]], torch.Tensor], prompts: list[list[str]]) -> torch.Tensor:
    """One unit-norm column per prompt list: the normalised mean of its normalised prompt embeddings."""
    flat = [p for class_prompts in prompts for p in class_prompts]
    # One call for every prompt: a text tower batches far better than with one small call per class.
    emb = torch.as_tensor(encode_text(flat)).detach().float().cpu()
    if emb.ndim != 2 or emb.shape[0] != len(flat):
        raise ShapeError(f"encode_text: expected shape ({len(flat)}, D) for {len(flat)} prompts, got {tuple(emb.shape)}")
    columns = []
    for rows in torch.split(F.normalize(emb, dim=-1), [len(p) for p in prompts]):
        columns.append(F.normalize(rows.mean(dim=0), dim=0))  # (D,)
    return torch.stack(columns, dim=1)  # (D, C)

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
    """Per-class prompt lists for :func:`build_zeroshot_classifier`.

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
