"""OpenMoji's emoji drawn in other styles: Twemoji and Noto, for training across styles and evaluating on them.

The 64x64 PNGs live in ``polymodal/data/assets/emoji_styles/`` (its README.md has sources and licences:
Twemoji graphics CC BY 4.0, Noto Emoji Apache-2.0), one zip per style with entries named by the
OpenMoji hexcode; ``scripts/vendor_emoji_styles.py`` builds them. 1,911 of OpenMoji's 2,464 emoji
are drawn in each style (OpenMoji's own extras and some flags are not).

An emoji keeps its OpenMoji annotation, tags, group, subgroup and split (the hash of its hexcode), so
an emoji in the test split is in it in every style: training on the Twemoji/Noto drawings of training
emoji never shows a model an evaluated emoji.
"""

from __future__ import annotations

import io
import zipfile
from importlib import resources

from polymodal.data.images import load_image
from polymodal.data.openmoji import load_openmoji
from polymodal.data.record import Record
from polymodal.errors import ConfigError

EMOJI_STYLES: tuple[str, ...] = ("twemoji", "noto")


def load_emoji_style(style: str, split: str | None = None) -> list[Record]:
    """The emoji of one style as records, optionally one split only, in OpenMoji catalogue order.

    Each record is OpenMoji's record for the same emoji (text, label, key, ``extra``) with the image
    (RGB, transparency on white) and ``source`` of the other style.

    Args:
        style: ``"twemoji"`` or ``"noto"``.
        split: ``None`` for all, or ``"train"``, ``"val"``, ``"test"`` (OpenMoji's split of the hexcode).

    Raises:
        ConfigError: an unknown style or split.
    """
    if style not in EMOJI_STYLES:
        raise ConfigError(f"unknown emoji style {style!r}; styles: {', '.join(EMOJI_STYLES)}")
    name = f"{style}64.zip"
    data = resources.files("polymodal.data").joinpath("assets", "emoji_styles", name).read_bytes()
    out = []
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        drawn = set(z.namelist())
        for r in load_openmoji(split, decode=False):
            entry = f"{r.key}.png"
            if entry in drawn:
                r.image = load_image(z.read(entry), name=f"{name}:{entry}")
                r.source = f"{name}:{entry}"
                out.append(r)
    return out
