"""The words of the toy world: 10 colours x 10 shapes, which pairs pretraining never shows, the 50 classes
of the downstream dataset (base and new share no word) and the captions of the pretraining domain.

Every colour and shape name is one BPE token of CLIP's tokenizer. A pair is (colour index, shape index);
its class name is "<colour> <shape>", e.g. "red circle".
"""
from __future__ import annotations

from dataclasses import dataclass

# name, RGB in [0, 1]; the first five colours are base words, the other five new words
COLOURS = (
    ("red", (0.86, 0.10, 0.10)),
    ("green", (0.10, 0.62, 0.16)),
    ("blue", (0.12, 0.28, 0.92)),
    ("yellow", (0.96, 0.88, 0.10)),
    ("purple", (0.52, 0.16, 0.72)),
    ("orange", (1.00, 0.52, 0.02)),
    ("pink", (1.00, 0.56, 0.78)),
    ("brown", (0.48, 0.27, 0.08)),
    ("black", (0.04, 0.04, 0.04)),
    ("white", (0.97, 0.97, 0.97)),
)
COLOUR_NAMES = tuple(name for name, _ in COLOURS)
# the first five shapes are base words, the other five new words (see render.py for how each is drawn)
SHAPES = ("circle", "square", "triangle", "cross", "star", "ring", "diamond", "heart", "line", "moon")
N_WORDS = 10  # colours, and shapes
N_BASE_WORDS = 5  # base classes use the first 5 colours and shapes, new classes the others

# 30 pairs never shown in pretraining: shape index - colour index = 3, 6 or 9 (mod 10), so every colour
# misses exactly 3 shapes and every shape 3 colours (each word still appears in 7 pretraining pairs)
UNSEEN_OFFSETS = (3, 6, 9)


def pair_name(pair) -> str:
    """Class name of a (colour, shape) pair, e.g. (0, 0) -> 'red circle'."""
    colour, shape = pair
    return f"{COLOUR_NAMES[colour]} {SHAPES[shape]}"


def is_unseen(pair) -> bool:
    """True for the 30 pairs that pretraining never shows."""
    colour, shape = pair
    return (shape - colour) % N_WORDS in UNSEEN_OFFSETS


ALL_PAIRS = tuple((c, s) for c in range(N_WORDS) for s in range(N_WORDS))  # 100-way zero-shot order
SEEN_PAIRS = tuple(p for p in ALL_PAIRS if not is_unseen(p))  # 70 pairs of the pretraining domain
UNSEEN_PAIRS = tuple(p for p in ALL_PAIRS if is_unseen(p))  # 30 pairs held out of pretraining

# Downstream classes, in label order: base (labels 0..24) = base colours x base shapes, new (25..49) = new
# colours x new shapes. Held-out pairs are kept as classes (7 base, 7 new): prompt learning must then also
# serve compositions the backbone never saw, as real CLIP meets rare concepts.
BASE_CLASSES = tuple((c, s) for c in range(N_BASE_WORDS) for s in range(N_BASE_WORDS))
NEW_CLASSES = tuple((c, s) for c in range(N_BASE_WORDS, N_WORDS) for s in range(N_BASE_WORDS, N_WORDS))
CLASSES = BASE_CLASSES + NEW_CLASSES
CLASS_NAMES = tuple(pair_name(p) for p in CLASSES)


@dataclass(frozen=True)
class Variant:
    """One downstream dataset of the world: its classes in label order (base first) and where it lives.

    ``colour_halves`` / ``shape_halves``: per half (base, new), the words its classes draw on, i.e. where a
    scene's distractor comes from (another colour and another shape of the same half)."""

    name: str  # config stem and folder
    dassl_name: str
    base: tuple
    new: tuple
    colour_halves: tuple
    shape_halves: tuple

    @property
    def classes(self) -> tuple:
        return self.base + self.new

    @property
    def class_names(self) -> tuple:
        return tuple(pair_name(p) for p in self.classes)

    @property
    def split_file(self) -> str:
        return f"split_zhou_{self.dassl_name}.json"


BASE_WORDS, NEW_WORDS = tuple(range(N_BASE_WORDS)), tuple(range(N_BASE_WORDS, N_WORDS))
# the default: 25 base and 25 new classes that share no word
TOYWORLD = Variant("toyworld", "ToyWorld", BASE_CLASSES, NEW_CLASSES, (BASE_WORDS, NEW_WORDS), (BASE_WORDS, NEW_WORDS))
# all 100 pairs: 50 base classes (the first 5 colours x every shape) and 50 new ones (the other colours): twice
# the base classes, each with 9 same-colour and 4 same-shape neighbours, so that mining negatives has more to find.
# New classes share shape words with the base classes, not colour words.
ALL_WORDS = tuple(range(N_WORDS))
TOYWORLD_WIDE = Variant("toyworld_wide", "ToyWorldWide",
                        tuple((c, s) for c in BASE_WORDS for s in ALL_WORDS),
                        tuple((c, s) for c in NEW_WORDS for s in ALL_WORDS),
                        (BASE_WORDS, NEW_WORDS), (ALL_WORDS, ALL_WORDS))
VARIANTS = {v.name: v for v in (TOYWORLD, TOYWORLD_WIDE)}

# Pretraining captions; {c} colour, {s} shape, {size} small|large, {where} where the object is.
CAPTION_TEMPLATES = (
    "a photo of a {c} {s}.",
    "a {c} {s}.",
    "a picture of a {c} {s}.",
    "an image of a {c} {s}.",
    "a drawing of a {c} {s}.",
    "a {s} in {c}.",
    "the {s} is {c}.",
    "a {c} {s} on a gray background.",
    "a photo of a {size} {c} {s}.",
    "a {size} {s} in {c}.",
    "a {c} {s} {where}.",
    "a photo of a {c} {s} {where}.",
)

# Colours without a name in this world, away from the named ones. A share of pretraining scenes shows a
# shape in one of them, captioned by the shape alone: shape is then learnt apart from colour, which the
# unseen pairs need. They never appear in the downstream dataset, nor do the held-out pairs anywhere.
UNNAMED_COLOURS = (
    (0.00, 0.55, 0.55),  # teal
    (0.35, 0.90, 0.95),  # cyan
    (0.55, 0.60, 0.05),  # olive
    (0.65, 1.00, 0.35),  # lime
    (0.95, 0.10, 0.95),  # magenta
    (0.05, 0.08, 0.40),  # navy
    (0.72, 0.72, 1.00),  # lavender
    (0.85, 0.78, 0.55),  # beige
    (0.40, 0.00, 0.12),  # maroon
    (0.60, 1.00, 0.80),  # mint
)
UNNAMED_SHARE = 0.25  # of pretraining scenes
SHAPE_CAPTION_TEMPLATES = (
    "a photo of a {s}.",
    "a {s}.",
    "a picture of a {s}.",
    "a {size} {s}.",
    "a {s} {where}.",
    "a {s} on a gray background.",
)
SIZE_WORDS = ("small", "large")  # radius below / from 8.5 px (see render.PRETRAIN_RADIUS)
# the object's centre: within 3 px of the image centre, else the side of its larger offset
WHERE_PHRASES = ("in the middle", "on the left", "on the right", "at the top", "at the bottom")
