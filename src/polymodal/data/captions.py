"""Training captions for image-text pairs.

Captions are built only from an item's own description (OpenMoji's annotation and tags), never from the
group or subgroup an evaluation asks about: zero-shot means the class names were never training targets.
Tags that spell a group or subgroup name are dropped for that reason.

"Prompt-aware" captions put some descriptions into the same sentence frames that zero-shot prompts use
("an emoji of …"), so the joint space learns to read label text phrased that way (as CLIP's prompt
engineering observed, the frame matters as much as the word).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence, Set

# Sentence frames shared with the zero-shot templates in polymodal.models.prompts.
FRAMES: tuple[str, ...] = ("an emoji of {}.", "an icon of {}.")


def clean_tags(tags: Iterable[str], *, banned: Set[str]) -> list[str]:
    """Strip, drop empties, duplicates and any tag that spells a banned (class) name."""
    seen: set[str] = set()
    out = []
    for t in tags:
        t = t.strip()
        norm = t.lower().replace("-", " ")
        if t and norm not in seen and norm not in banned:
            seen.add(norm)
            out.append(t)
    return out


def caption_variants(
    annotation: str, tags: Sequence[str], *, banned: Set[str] = frozenset(), n_tag_variants: int = 2, seed: int = 0
) -> list[str]:
    """The plain annotation first (used for retrieval evaluation), then framed and tagged variants."""
    rng = random.Random(f"{seed}:{annotation}")
    tags = clean_tags(tags, banned=banned)
    out = [annotation]
    out += [frame.format(annotation) for frame in FRAMES]
    for _ in range(n_tag_variants if tags else 0):
        k = rng.randint(1, min(4, len(tags)))
        out.append(f"{annotation}: {', '.join(rng.sample(tags, k))}")
    return out
