"""Captions of pretraining scenes, tokenized once: a table indexed by (pair, template, size word, place)."""
from __future__ import annotations

import clip
import torch

from .render import IMAGE_SIZE
from .vocab import ALL_PAIRS, CAPTION_TEMPLATES, COLOUR_NAMES, SHAPES, SIZE_WORDS, WHERE_PHRASES

LARGE_FROM = 8.5  # object half-size (pixels) from which a caption says "large"
MIDDLE_WITHIN = 3.0  # centre offset (pixels) below which a caption says "in the middle"


def caption(pair, template, size, where):
    colour, shape = pair
    return CAPTION_TEMPLATES[template].format(c=COLOUR_NAMES[colour], s=SHAPES[shape], size=SIZE_WORDS[size],
                                              where=WHERE_PHRASES[where])


def caption_table(context_length):
    """Token ids [100 pairs, templates, sizes, places, context_length] of every caption (pairs as ALL_PAIRS)."""
    shape = (len(ALL_PAIRS), len(CAPTION_TEMPLATES), len(SIZE_WORDS), len(WHERE_PHRASES))
    texts = [caption(pair, t, s, w) for pair in ALL_PAIRS for t in range(shape[1]) for s in range(shape[2])
             for w in range(shape[3])]
    unique = sorted(set(texts))
    tokens = clip.tokenize(unique, context_length=context_length)  # raises if a caption does not fit
    row = {text: i for i, text in enumerate(unique)}
    index = torch.tensor([row[text] for text in texts])
    return tokens[index].long().reshape(*shape, context_length)


def size_words(radius):
    """Index into SIZE_WORDS (0 small, 1 large) of objects of half-size ``radius`` [n]."""
    return (radius >= LARGE_FROM).long()


def where_phrases(centres):
    """Index into WHERE_PHRASES of objects centred at ``centres`` [n, 2] (x, y in pixels)."""
    dx, dy = (centres - IMAGE_SIZE / 2).unbind(dim=1)
    horizontal = torch.where(dx < 0, 1, 2)  # left, right
    vertical = torch.where(dy < 0, 3, 4)  # top, bottom
    side = torch.where(dx.abs() >= dy.abs(), horizontal, vertical)
    return torch.where(torch.maximum(dx.abs(), dy.abs()) < MIDDLE_WITHIN, 0, side)
