"""Captions of pretraining scenes, tokenized once into tables indexed by (pair or shape, template, size, place)."""
from __future__ import annotations

import clip
import torch

from .render import IMAGE_SIZE
from .vocab import (ALL_PAIRS, CAPTION_TEMPLATES, COLOUR_NAMES, SHAPE_CAPTION_TEMPLATES, SHAPES, SIZE_WORDS,
                    WHERE_PHRASES)

LARGE_FROM = 8.5  # object half-size (pixels) from which a caption says "large"
MIDDLE_WITHIN = 3.0  # centre offset (pixels) below which a caption says "in the middle"


def caption(pair, template, size, where):
    """Caption of a named pair (colour and shape words)."""
    colour, shape = pair
    return CAPTION_TEMPLATES[template].format(c=COLOUR_NAMES[colour], s=SHAPES[shape], size=SIZE_WORDS[size],
                                              where=WHERE_PHRASES[where])


def shape_caption(shape, template, size, where):
    """Caption naming the shape only (objects of an unnamed colour)."""
    return SHAPE_CAPTION_TEMPLATES[template].format(s=SHAPES[shape], size=SIZE_WORDS[size],
                                                    where=WHERE_PHRASES[where])


def _table(describe, n_subjects, n_templates, context_length):
    shape = (n_subjects, n_templates, len(SIZE_WORDS), len(WHERE_PHRASES))
    texts = [describe(i, t, s, w) for i in range(shape[0]) for t in range(shape[1]) for s in range(shape[2])
             for w in range(shape[3])]
    unique = sorted(set(texts))
    tokens = clip.tokenize(unique, context_length=context_length)  # raises if a caption does not fit
    row = {text: i for i, text in enumerate(unique)}
    return tokens[torch.tensor([row[text] for text in texts])].long().reshape(*shape, context_length)


def caption_table(context_length):
    """Token ids [100 pairs (as ALL_PAIRS), templates, sizes, places, context_length] of the pair captions."""
    return _table(lambda i, t, s, w: caption(ALL_PAIRS[i], t, s, w), len(ALL_PAIRS), len(CAPTION_TEMPLATES),
                  context_length)


def shape_caption_table(context_length):
    """Token ids [10 shapes, templates, sizes, places, context_length] of the shape-only captions."""
    return _table(shape_caption, len(SHAPES), len(SHAPE_CAPTION_TEMPLATES), context_length)


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
