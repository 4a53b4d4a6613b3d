"""``shapes``: a generated scene set of coloured shapes, with captions, VQA, sounds and moving clips.

Everything is drawn from a seed, offline, in a few seconds for thousands of scenes: a scene is one to
``max_shapes`` shapes of distinct kinds (circle, square, triangle, star, cross), each in its own cell
of a ``grid x grid`` layout, in one of five colours. Three kinds of records come out of
:func:`load_shapes`:

- ``"scenes"``: the image, a caption ("a red circle left of a blue square"), and a sound: every shape
  kind has its own tone (pitch and timbre, :data:`KIND_TONES`), the shapes' tones are mixed, each
  entering 0.2 s after the previous one in caption order.
- ``"vqa"``: the image, a question (``text``) and the answer's index in the fixed vocabulary
  :data:`ANSWERS` (``label``). Question types, chosen uniformly: ``colour`` ("what colour is the
  circle?"), ``shape`` ("what shape is the red one?"), ``count`` ("how many shapes are there?"),
  ``exists`` ("is there a star?"), ``relation`` ("what is left of the square?") and ``relation_yes_no``
  ("is the circle above the star?"). Answers are balanced so the question alone says little: yes/no is
  drawn 50/50 first and the question built to match it, counts are uniform, colours and kinds are
  uniform by symmetry, so a model that sees only the question gets about a third right (the test
  suite measures it).
- ``"clips"``: ``clip_frames`` frames of the shapes all moving in one direction (``label`` indexes
  :data:`DIRECTIONS`), as a :class:`~polymodal.data.video.Video` whose audio track (also in
  ``Record.audio``) is the shapes' tones.

Splits: record ``i`` of split ``s`` is drawn from the random stream ``SeedSequence([seed, s, kind,
i])`` of NumPy, so train, val and test come from disjoint seeds and never share a scene stream, and
asking for more records only appends to a split.

Every record's ``extra["scene"]`` is the full scene spec (kinds, colours, cells, centres, radii), so
answers and captions can be re-derived and checked.

Licence: the generator is part of polymodal (Apache-2.0); the generated images, sounds and texts are
made by this code from a seed and are dedicated to the public domain (CC0 1.0). No third-party data.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

from polymodal.data.record import Record
from polymodal.errors import ConfigError

__all__ = [
    "ANSWERS",
    "COLOURS",
    "DIRECTIONS",
    "KIND_TONES",
    "QUESTION_TYPES",
    "SHAPES_SPLITS",
    "SHAPE_KINDS",
    "Question",
    "Scene",
    "Shape",
    "ShapesConfig",
    "load_shapes",
    "make_question",
    "make_scene",
    "render_scene",
    "scene_sound",
]

SHAPE_KINDS: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 70),
    "blue": (50, 90, 235),
    "yellow": (240, 210, 40),
    "purple": (160, 60, 210),
}
DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
MAX_SHAPES = len(SHAPE_KINDS)  # kinds are distinct within a scene, so "the circle" is unambiguous
ANSWERS: tuple[str, ...] = (
    ("yes", "no") + tuple(COLOURS) + SHAPE_KINDS + tuple(str(n) for n in range(1, MAX_SHAPES + 1))
)
QUESTION_TYPES: tuple[str, ...] = ("colour", "shape", "count", "exists", "relation", "relation_yes_no")
SHAPES_SPLITS: tuple[str, ...] = ("train", "val", "test")
SHAPES_KINDS: tuple[str, ...] = ("scenes", "vqa", "clips")

# A tone per kind: (fundamental Hz, [(partial ratio, amplitude), ...], decay per second).
# Pitches are C4 E4 G4 C5 E5; timbres are a sine, a square (odd harmonics, 1/k), a triangle (odd, 1/k^2),
# a bell (inharmonic partials of a free bar, fast decay) and a sawtooth (all harmonics, 1/k).
KIND_TONES: dict[str, tuple[float, tuple[tuple[float, float], ...], float]] = {
    "circle": (261.63, ((1.0, 1.0),), 0.5),
    "square": (329.63, tuple((k, 1.0 / k) for k in (1, 3, 5, 7, 9)), 0.5),
    "triangle": (392.00, tuple((k, 1.0 / k**2) for k in (1, 3, 5, 7)), 0.5),
    "star": (523.25, ((1.0, 1.0), (2.756, 0.5), (5.404, 0.25)), 3.0),
    "cross": (659.25, tuple((k, 1.0 / k) for k in range(1, 9)), 0.5),
}
_ONSET_STEP = 0.2  # seconds between the entries of successive shapes' tones in a scene's sound


@dataclass(frozen=True)
class ShapesConfig:
    """How scenes are drawn and rendered.

    Args:
        image_size: side of the square images in pixels.
        grid: cells per side; each shape sits in its own cell, relations compare cells.
        min_shapes: fewest shapes in a scene.
        max_shapes: most shapes in a scene (at most 5, the number of kinds, and ``grid**2``).
        sample_rate: audio sample rate.
        audio_seconds: length of a scene's sound.
        clip_frames: frames in a clip.
        clip_fps: frame rate of a clip; its sound lasts ``clip_frames / clip_fps`` seconds.
        supersample: draw at this factor and downsample (box filter) for anti-aliased edges.
        background: RGB background colour.
        question_weights: relative frequency of each of :data:`QUESTION_TYPES` (in that order) in VQA
            records; ``None`` draws them uniformly (the same records as before the option existed).
    """

    image_size: int = 64
    grid: int = 3
    min_shapes: int = 1
    max_shapes: int = 3
    sample_rate: int = 16_000
    audio_seconds: float = 1.0
    clip_frames: int = 8
    clip_fps: float = 8.0
    supersample: int = 2
    background: tuple[int, int, int] = (24, 24, 24)
    question_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in (
            "image_size",
            "grid",
            "min_shapes",
            "max_shapes",
            "sample_rate",
            "clip_frames",
            "supersample",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"ShapesConfig.{name} must be a positive int, got {value!r}")
        if self.image_size < 8 * self.grid:
            raise ConfigError(
                f"ShapesConfig.image_size={self.image_size} is too small for a {self.grid}x{self.grid} grid"
            )
        if not self.min_shapes <= self.max_shapes <= min(MAX_SHAPES, self.grid**2):
            raise ConfigError(
                f"ShapesConfig needs 1 <= min_shapes <= max_shapes <= {min(MAX_SHAPES, self.grid**2)}, "
                f"got {self.min_shapes}, {self.max_shapes}"
            )
        if self.clip_frames < 2:
            raise ConfigError(
                f"ShapesConfig.clip_frames must be >= 2 (motion needs two frames), got {self.clip_frames}"
            )
        for name in ("audio_seconds", "clip_fps"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"ShapesConfig.{name} must be a positive number, got {value!r}")
        if len(self.background) != 3 or not all(0 <= int(c) <= 255 for c in self.background):
            raise ConfigError(
                f"ShapesConfig.background must be three ints in 0..255, got {self.background!r}"
            )
        if self.question_weights is not None:
            w = tuple(self.question_weights)
            ok = len(w) == len(QUESTION_TYPES) and all(
                isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x >= 0 for x in w
            )
            if not ok or sum(w) <= 0:
                raise ConfigError(
                    f"ShapesConfig.question_weights must be {len(QUESTION_TYPES)} numbers >= 0, not all 0, "
                    f"one per question type {QUESTION_TYPES}; got {self.question_weights!r}"
                )
            object.__setattr__(self, "question_weights", tuple(float(x) for x in w))


# ---------------------------------------------------------------------------------------------------
# Scene spec
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """One shape: kind, colour, grid cell ``(row, col)``, centre ``(x, y)`` in pixels, radius, angle."""

    kind: str
    colour: str
    cell: tuple[int, int]
    centre: tuple[float, float]
    radius: float
    angle: float  # degrees, counter-clockwise; circles ignore it

    @property
    def name(self) -> str:
        """``"red circle"``."""
        return f"{self.colour} {self.kind}"


@dataclass(frozen=True)
class Scene:
    """Shapes on a square canvas; relations are read off the grid cells."""

    shapes: tuple[Shape, ...]
    size: int
    grid: int

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (for ``Record.extra`` and JSON)."""
        shapes = [
            {
                "kind": s.kind,
                "colour": s.colour,
                "cell": s.cell,
                "centre": s.centre,
                "radius": s.radius,
                "angle": s.angle,
            }
            for s in self.shapes
        ]
        return {"size": self.size, "grid": self.grid, "shapes": shapes}

    def caption(self) -> str:
        """ "a red circle at the top left", or a chain of relations between successive shapes."""
        s = self.shapes
        if len(s) == 1:
            return f"{_article(s[0].name)} {s[0].name} {_place(s[0].cell, self.grid)}"
        parts = [
            f"{_article(s[0].name)} {s[0].name} {relation(s[0], s[1])} {_article(s[1].name)} {s[1].name}"
        ]
        for prev, cur in zip(s[1:], s[2:], strict=False):
            parts.append(f"{_article(cur.name)} {cur.name} {relation(cur, prev)} the {prev.name}")
        return ", and ".join(parts)


def holds(a: Shape, rel: str, b: Shape) -> bool:
    """Whether ``a rel b`` is true: "left of" compares grid columns, "above" compares rows."""
    (ra, ca), (rb, cb) = a.cell, b.cell
    return {"left of": ca < cb, "right of": ca > cb, "above": ra < rb, "below": ra > rb}[rel]


def relation(a: Shape, b: Shape) -> str:
    """The relation a caption states between two shapes: horizontal when their columns differ."""
    if a.cell[1] != b.cell[1]:
        return "left of" if a.cell[1] < b.cell[1] else "right of"
    return "above" if a.cell[0] < b.cell[0] else "below"


def _article(name: str) -> str:
    return "an" if name[0] in "aeiou" else "a"


def _place(cell: tuple[int, int], grid: int) -> str:
    mid = (grid - 1) / 2
    row, col = cell
    vertical = "top" if row < mid else "bottom" if row > mid else ""
    horizontal = "left" if col < mid else "right" if col > mid else ""
    if vertical and horizontal:
        return f"at the {vertical} {horizontal}"
    if vertical:
        return f"at the {vertical}"
    if horizontal:
        return f"on the {horizontal}"
    return "in the centre"


def make_scene(rng: np.random.Generator, config: ShapesConfig, *, num_shapes: int | None = None) -> Scene:
    """Draw a scene: distinct kinds in distinct cells, any colours, jittered size and position.

    Args:
        rng: the random stream (consumed).
        config: canvas and grid.
        num_shapes: how many shapes; ``None`` draws uniformly from ``min_shapes..max_shapes``.
    """
    n = int(rng.integers(config.min_shapes, config.max_shapes + 1)) if num_shapes is None else num_shapes
    kinds = rng.choice(len(SHAPE_KINDS), size=n, replace=False)
    colours = rng.choice(len(COLOURS), size=n, replace=True)
    cells = rng.choice(config.grid**2, size=n, replace=False)
    cell_px = config.image_size / config.grid
    names = tuple(COLOURS)
    shapes = []
    for kind, colour, cell in zip(kinds.tolist(), colours.tolist(), cells.tolist(), strict=True):
        row, col = divmod(cell, config.grid)
        radius = cell_px * rng.uniform(0.28, 0.42)
        slack = cell_px / 2 - radius  # keeps the shape inside its cell
        x = (col + 0.5) * cell_px + rng.uniform(-0.8, 0.8) * slack
        y = (row + 0.5) * cell_px + rng.uniform(-0.8, 0.8) * slack
        angle = rng.uniform(-20.0, 20.0)
        shapes.append(
            Shape(
                SHAPE_KINDS[kind],
                names[colour],
                (row, col),
                (float(x), float(y)),
                float(radius),
                float(angle),
            )
        )
    return Scene(tuple(shapes), config.image_size, config.grid)


# ---------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------


def _polygon(kind: str, x: float, y: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a kind's outline, centred on (x, y) with circumradius about r, rotated by angle."""
    if kind == "square":
        pts = [(math.cos(a), math.sin(a)) for a in np.radians([45, 135, 225, 315])]
        scale = 0.9 * r
    elif kind == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in np.radians([-90, 30, 150])]
        scale = r
    elif kind == "star":
        pts = []
        for i in range(10):
            a = math.radians(-90 + 36 * i)
            k = 1.0 if i % 2 == 0 else 0.45  # outer and inner points of a five-pointed star
            pts.append((k * math.cos(a), k * math.sin(a)))
        scale = r
    elif kind == "cross":
        w = 0.32  # half the width of an arm, relative to its length
        pts = [
            (w, -1),
            (w, -w),
            (1, -w),
            (1, w),
            (w, w),
            (w, 1),
            (-w, 1),
            (-w, w),
            (-1, w),
            (-1, -w),
            (-w, -w),
            (-w, -1),
        ]
        scale = 0.9 * r
    else:
        raise ConfigError(f"unknown shape kind {kind!r}")
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    # image y points down, so a counter-clockwise turn is (x c + y s, -x s + y c)
    return [(x + scale * (px * c + py * s), y + scale * (-px * s + py * c)) for px, py in pts]


def render_scene(
    scene: Scene, config: ShapesConfig, *, centres: list[tuple[float, float]] | None = None
) -> Image.Image:
    """Draw a scene as an RGB image of ``scene.size`` pixels.

    Args:
        scene: the spec.
        config: background and supersampling.
        centres: override the shapes' centres (clips move them); ``None`` uses the spec.
    """
    k = config.supersample
    big = Image.new("RGB", (scene.size * k, scene.size * k), tuple(int(c) for c in config.background))
    draw = ImageDraw.Draw(big)
    for i, shape in enumerate(scene.shapes):
        x, y = shape.centre if centres is None else centres[i]
        x, y, r = x * k, y * k, shape.radius * k
        fill = COLOURS[shape.colour]
        if shape.kind == "circle":
            draw.ellipse((x - 0.9 * r, y - 0.9 * r, x + 0.9 * r, y + 0.9 * r), fill=fill)
        else:
            draw.polygon(_polygon(shape.kind, x, y, r, shape.angle), fill=fill)
    if k == 1:
        return big
    return big.resize((scene.size, scene.size), Image.Resampling.BOX)


# ---------------------------------------------------------------------------------------------------
# Sound
# ---------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _tones(sample_rate: int, seconds: float) -> dict[str, np.ndarray]:
    """Each kind's tone, ``seconds`` long, peak 1, with a 10 ms attack and 30 ms release (no clicks)."""
    n = max(1, round(sample_rate * seconds))
    t = np.arange(n) / sample_rate
    ramp = np.minimum(1.0, np.minimum(t / 0.01, (seconds - t) / 0.03).clip(min=0.0))
    tones = {}
    for kind, (f0, partials, decay) in KIND_TONES.items():
        wave = sum(
            a * np.sin(2 * np.pi * f0 * ratio * t) for ratio, a in partials if f0 * ratio < sample_rate / 2
        )
        wave = np.asarray(wave) * np.exp(-decay * t) * ramp
        tones[kind] = (wave / max(np.abs(wave).max(), 1e-9)).astype(np.float32)
    return tones


@functools.lru_cache(maxsize=1)
def _noise_table() -> np.ndarray:
    """2^16 samples of white noise at -50 dB (std 0.003), drawn once from a fixed seed."""
    return (0.003 * np.random.default_rng(20_240_601).standard_normal(1 << 16)).astype(np.float32)


def scene_sound(
    scene: Scene, config: ShapesConfig, rng: np.random.Generator, *, seconds: float | None = None
) -> np.ndarray:
    """The scene's sound: the shapes' tones mixed, entering 0.2 s apart in caption order.

    Args:
        scene: the spec.
        config: sample rate.
        rng: stream for a faint noise floor (-50 dB), so no two sounds are bit-identical.
        seconds: length; ``None`` means ``config.audio_seconds``.

    Returns:
        float32 samples ``(T,)``, peak at most 0.9.
    """
    seconds = config.audio_seconds if seconds is None else seconds
    tones = _tones(config.sample_rate, float(seconds))
    n = len(next(iter(tones.values())))
    mix = np.zeros(n, np.float32)
    for i, shape in enumerate(scene.shapes):
        start = min(n, round(i * _ONSET_STEP * config.sample_rate))
        mix[start:] += 0.3 * tones[shape.kind][: n - start]
    noise = _noise_table()
    offset = int(rng.integers(len(noise)))  # a random window of a fixed noise table: cheap
    if offset + n > len(noise):
        noise = np.tile(noise, -(-(offset + n) // len(noise)))
    mix += noise[offset : offset + n]
    peak = float(np.abs(mix).max())
    if peak > 0.9:
        mix *= 0.9 / peak
    return mix


# ---------------------------------------------------------------------------------------------------
# Questions
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """A question about a scene, its answer (a word of :data:`ANSWERS`) and its type."""

    text: str
    answer: str
    type: str


def make_question(scene: Scene, qtype: str, rng: np.random.Generator) -> Question | None:
    """A question of type ``qtype`` about ``scene``, or ``None`` if the scene cannot support one.

    Args:
        scene: the spec.
        qtype: one of :data:`QUESTION_TYPES`.
        rng: the random stream (consumed).
    """
    shapes = scene.shapes
    if qtype == "colour":
        s = shapes[rng.integers(len(shapes))]
        return Question(f"what colour is the {s.kind}?", s.colour, qtype)
    if qtype == "shape":
        colours = [s.colour for s in shapes]
        unique = [s for s in shapes if colours.count(s.colour) == 1]
        if not unique:
            return None
        s = unique[rng.integers(len(unique))]
        return Question(f"what shape is the {s.colour} one?", s.kind, qtype)
    if qtype == "count":
        return Question("how many shapes are there?", str(len(shapes)), qtype)
    if qtype == "exists":
        present = [s.kind for s in shapes]
        absent = [k for k in SHAPE_KINDS if k not in present]
        # draw the answer first, so "yes" and "no" are equally likely whatever the kind asked about
        # (a scene holding all five kinds can only answer "yes": only with max_shapes = 5)
        yes = rng.random() < 0.5 or not absent
        pool = present if yes else absent
        return Question(f"is there a {pool[rng.integers(len(pool))]}?", "yes" if yes else "no", qtype)
    if qtype == "relation":
        options = []
        for b in shapes:
            for rel in RELATIONS:
                hits = [a for a in shapes if a is not b and holds(a, rel, b)]
                if len(hits) == 1:  # only ask where the answer is unique
                    options.append((hits[0], rel, b))
        if not options:
            return None
        a, rel, b = options[rng.integers(len(options))]
        return Question(f"what is {rel} the {b.kind}?", a.kind, qtype)
    if qtype == "relation_yes_no":
        if len(shapes) < 2:
            return None
        want = bool(rng.random() < 0.5)
        triples = [
            (a, rel, b)
            for a in shapes
            for b in shapes
            if a is not b
            for rel in RELATIONS
            if holds(a, rel, b) == want
        ]
        a, rel, b = triples[rng.integers(len(triples))]
        return Question(f"is the {a.kind} {rel} the {b.kind}?", "yes" if want else "no", qtype)
    raise ConfigError(f"question type must be one of {QUESTION_TYPES}, got {qtype!r}")


# ---------------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------------


def load_shapes(
    split: str,
    *,
    n: int = 1000,
    seed: int = 0,
    kind: Literal["scenes", "vqa", "clips"] = "scenes",
    config: ShapesConfig | None = None,
) -> list[Record]:
    """Generate ``n`` records of one split.

    Args:
        split: "train", "val" or "test".
        n: number of records.
        seed: the dataset seed; splits use disjoint streams under it.
        kind: "scenes" (image, caption, sound), "vqa" (image, question, answer index) or "clips"
            (video with sound, caption, direction index).
        config: rendering settings; the default draws 64x64 images on a 3x3 grid with 1-3 shapes.

    Returns:
        The records; ``extra["scene"]`` holds each scene's spec (for clips, the first frame's), see the
        module docstring for the other fields.

    Raises:
        ConfigError: unknown split or kind, bad ``n`` or ``seed``.
    """
    config = config or ShapesConfig()
    if split not in SHAPES_SPLITS:
        raise ConfigError(f"split must be one of {SHAPES_SPLITS}, got {split!r}")
    if kind not in SHAPES_KINDS:
        raise ConfigError(f"kind must be one of {SHAPES_KINDS}, got {kind!r}")
    for name, value in (("n", n), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be an int >= 0, got {value!r}")
    if kind == "clips" and config.max_shapes > config.grid:
        # clips move shapes along distinct rows (or columns): one shape per lane
        raise ConfigError(
            f"kind='clips' needs ShapesConfig.max_shapes <= grid, got {config.max_shapes} > {config.grid}"
        )
    make = {"scenes": _scene_record, "vqa": _vqa_record, "clips": _clip_record}[kind]
    stream = [seed, SHAPES_SPLITS.index(split), SHAPES_KINDS.index(kind)]
    return [
        make(
            np.random.default_rng([*stream, i]),
            config,
            key=f"shapes-{seed}-{split}-{kind}-{i}",
            source=f"shapes(seed={seed}, split={split}, kind={kind}, index={i})",
        )
        for i in range(n)
    ]


def _scene_record(rng: np.random.Generator, config: ShapesConfig, *, key: str, source: str) -> Record:
    from polymodal.data.audio import Audio

    scene = make_scene(rng, config)
    return Record(
        image=render_scene(scene, config),
        text=scene.caption(),
        audio=Audio(scene_sound(scene, config, rng), config.sample_rate),
        key=key,
        source=source,
        extra={"scene": scene.to_dict(), "kinds": [s.kind for s in scene.shapes]},
    )


def _vqa_record(rng: np.random.Generator, config: ShapesConfig, *, key: str, source: str) -> Record:
    # Type first, then a scene that supports it, so the mix of types is what was asked for whatever the scene.
    if config.question_weights is None:  # uniform: the draw every saved split was made with
        qtype = QUESTION_TYPES[int(rng.integers(len(QUESTION_TYPES)))]
    else:
        p = np.asarray(config.question_weights) / sum(config.question_weights)
        qtype = QUESTION_TYPES[int(rng.choice(len(QUESTION_TYPES), p=p))]
    lowest = max(2, config.min_shapes) if qtype.startswith("relation") else config.min_shapes
    if lowest > config.max_shapes:  # a config with one shape per scene cannot ask about relations
        qtype, lowest = "colour", config.min_shapes
    for _ in range(100):
        scene = make_scene(rng, config, num_shapes=int(rng.integers(lowest, config.max_shapes + 1)))
        question = make_question(scene, qtype, rng)
        if question is not None:
            break
    else:  # pragma: no cover - a supporting scene turns up within a few draws
        raise ConfigError(f"no scene supports a {qtype!r} question under {config}")
    return Record(
        image=render_scene(scene, config),
        text=question.text,
        label=ANSWERS.index(question.answer),
        key=key,
        source=source,
        extra={
            "answer": question.answer,
            "question_type": qtype,
            "scene": scene.to_dict(),
            "caption": scene.caption(),
        },
    )


def _clip_record(rng: np.random.Generator, config: ShapesConfig, *, key: str, source: str) -> Record:
    from polymodal.data.audio import Audio
    from polymodal.data.video import Video

    direction = DIRECTIONS[int(rng.integers(len(DIRECTIONS)))]
    horizontal = direction in ("left", "right")
    scene = make_scene(rng, config)
    size, cell_px = config.image_size, config.image_size / config.grid
    # One shape per row (horizontal motion) or column (vertical), so moving shapes never collide.
    lanes = rng.choice(config.grid, size=len(scene.shapes), replace=False)
    shapes, paths = [], []
    sign = 1.0 if direction in ("right", "down") else -1.0
    for shape, lane in zip(scene.shapes, lanes.tolist(), strict=True):
        r = shape.radius
        travel = rng.uniform(0.3, 0.45) * size  # pixels covered over the clip
        across = (lane + 0.5) * cell_px + rng.uniform(-0.5, 0.5) * (cell_px / 2 - r)
        lo, hi = r + 1, size - r - 1 - travel  # the start that keeps the whole path inside the canvas
        start = rng.uniform(lo, hi)
        along = start + travel * np.linspace(0.0, 1.0, config.clip_frames)  # (T,)
        if sign < 0:
            along = size - along
        path = [(a, across) if horizontal else (across, a) for a in along.tolist()]
        row, col = (
            (lane, _cell_of(path[0][0], cell_px, config.grid))
            if horizontal
            else (_cell_of(path[0][1], cell_px, config.grid), lane)
        )
        shapes.append(Shape(shape.kind, shape.colour, (row, col), path[0], r, shape.angle))
        paths.append(path)
    scene = Scene(tuple(shapes), size, config.grid)
    frames = np.stack(
        [
            np.asarray(render_scene(scene, config, centres=[p[t] for p in paths]))
            for t in range(config.clip_frames)
        ]
    )  # (T, H, W, 3)
    seconds = config.clip_frames / config.clip_fps
    audio = Audio(scene_sound(scene, config, rng, seconds=seconds), config.sample_rate)
    video = Video(
        frames=frames,
        fps=float(config.clip_fps),
        times=np.arange(config.clip_frames, dtype=np.float64) / config.clip_fps,
        indices=np.arange(config.clip_frames, dtype=np.int64),
        num_source_frames=config.clip_frames,
        audio=audio,
    )
    names = [s.name for s in shapes]
    phrases = [f"{_article(x)} {x}" for x in names]
    listed = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + f" and {phrases[-1]}"
    return Record(
        video=video,
        audio=audio,
        text=f"{listed} moving {direction}",
        label=DIRECTIONS.index(direction),
        key=key,
        source=source,
        extra={
            "direction": direction,
            "scene": scene.to_dict(),
            "paths": [[list(p) for p in path] for path in paths],
        },
    )


def _cell_of(coordinate: float, cell_px: float, grid: int) -> int:
    return min(grid - 1, max(0, int(coordinate // cell_px)))
